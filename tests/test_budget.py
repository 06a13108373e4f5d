"""The time budget (--timeout): the final model is inside it, so a trial starts only while the time left covers
the final model and half the longest complete trial before it, and a running trial stops training when only the
final model's time is left. A fake clock: no waiting, no timing."""

from sweeper.domain.budget import (
    FINAL_MODEL_TRIALS,
    FINISH_SECONDS,
    LEAST_TRIAL_SHARE,
    LONGER_RETRAINING_TRIALS,
    RETRAINING_MARGIN,
    TimeBudget,
    another_retraining_fits,
    refit_epochs,
)
from sweeper.domain.records import TrialOutcome
from sweeper.domain.space import Objective

ACCURACY = Objective("val_accuracy", "maximize")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _trial(clock, seconds, state="complete", value=None):
    def run_trial(*args):
        clock.now += seconds
        return TrialOutcome(state, value)
    return run_trial


def test_no_limit_always_has_room():
    budget = TimeBudget(None)
    assert budget.may_start_trial() and budget.time_left() is None


def test_the_first_trial_starts_and_later_ones_leave_room_for_half_a_trial_and_the_final_model():
    clock = Clock()
    budget = TimeBudget(900, clock)
    assert budget.may_start_trial()  # nothing measured yet
    budget.timed(_trial(clock, 100))()
    assert budget.longest_trial() == 100 and budget.time_left() == 800
    budget.timed(_trial(clock, 100))()
    budget.timed(_trial(clock, 100))()
    budget.timed(_trial(clock, 100))()  # 500 s left: a trial (100) and the final model (125 + 30) fit
    assert budget.may_start_trial()
    budget.timed(_trial(clock, 100))()
    budget.timed(_trial(clock, 100))()  # 300 s left: still room
    assert budget.may_start_trial()
    clock.now += 90  # 210 s left: half a trial (50) and the final model (125 + 30) fit
    assert budget.may_start_trial()
    clock.now += 10  # 200 s left: less than 100 * (0.5 + 1.25) + 30
    assert 200 < 100 * (LEAST_TRIAL_SHARE + FINAL_MODEL_TRIALS) + FINISH_SECONDS and not budget.may_start_trial()


def test_only_complete_trials_count_and_the_longest_one_sets_the_room_kept():
    clock = Clock()
    budget = TimeBudget(1000, clock)
    budget.timed(_trial(clock, 5, "pruned"))()
    budget.timed(_trial(clock, 5, "failed"))()
    assert budget.longest_trial() == 0 and budget.may_start_trial()
    budget.timed(_trial(clock, 60))()
    budget.timed(_trial(clock, 200))()
    budget.timed(_trial(clock, 100))()
    assert budget.longest_trial() == 200  # a trial that is not pruned may run as long as the longest did
    clock.now = budget.deadline - 340  # room for half a 100 s trial and its final model (205), not a 200 s one's (380)
    assert not budget.may_start_trial()
    clock.now = budget.deadline
    assert budget.time_left() == 0 and not budget.may_start_trial()


def test_a_running_trial_stops_training_before_an_epoch_that_would_eat_into_the_final_models_time():
    clock = Clock()
    budget = TimeBudget(900, clock)
    assert not budget.out_of_time()  # no trial running
    seen = []

    def first_trial(*args):  # nothing measured before it: sized on itself
        for _ in range(10):
            clock.now += 50
            seen.append((budget.time_left(), budget.out_of_time()))
        return TrialOutcome("complete")

    budget.timed(first_trial)()
    # after 300 s, another 50 s epoch leaves 550 >= 1.25 x 350 + 30; after 350 s it would leave 500 < 1.25 x 400 + 30
    assert seen[5] == (600, False) and seen[6] == (550, True)
    assert not budget.out_of_time()  # between trials, may_start_trial decides

    clock.now = budget.deadline - 300  # a shorter trial next, sized on the longest one (500 s)
    budget.timed(lambda *a: seen.append(budget.out_of_time()) or TrialOutcome("complete"))()
    assert seen[-1] is True  # 300 left < 1.25 x 500 + 30


def test_a_long_epoch_stops_a_trial_sooner_than_short_ones():
    def first_stop(epoch_seconds):
        clock = Clock()
        budget = TimeBudget(900, clock)
        stopped = []

        def trial(*args):
            while not stopped:
                clock.now += epoch_seconds
                if budget.out_of_time():
                    stopped.append(budget.time_left())
            return TrialOutcome("complete")

        budget.timed(trial)()
        return stopped[0]

    # 10 s epochs: after 380 s, another would leave 510 < 1.25 x 390 + 30; 100 s epochs: after 300 s, another
    # would leave 500 < 1.25 x 400 + 30 (and after 200 s, 600 >= 405)
    assert (first_stop(10), first_stop(100)) == (520, 600)


def test_no_limit_never_stops_a_trial():
    clock = Clock()
    budget = TimeBudget(None, clock)
    seen = []
    budget.timed(lambda *a: seen.append(budget.out_of_time()) or TrialOutcome("complete"))()
    assert seen == [False]


def test_the_live_display_shows_what_is_left_of_the_budget():
    import io

    from rich.console import Console

    from sweeper.present.console import LiveProgress

    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    display = LiveProgress(console, "val_accuracy", "maximize", 20, budget=900)
    display.search_started("fashion", 60, {"complete": 0, "pruned": 0, "failed": 0, "interrupted": 0}, None)
    display.progress.start_task(display.trials)
    shown = Console(file=io.StringIO(), width=120, record=True)
    shown.print(display.progress.make_tasks_table(display.progress.tasks))
    text = shown.export_text()
    assert "14:59 left" in text or "15:00 left" in text
    without = LiveProgress(console, "val_accuracy", "maximize", 20)
    shown.print(without.progress.make_tasks_table(without.progress.tasks))
    assert shown.export_text().count(" left") == 0  # no budget, no countdown


def test_a_replacement_worker_starts_with_the_longest_trial_its_predecessors_ran():
    clock = Clock()
    blind, told = TimeBudget(80, clock), TimeBudget(80, clock, longest_known=50)
    assert blind.may_start_trial() and not told.may_start_trial()  # 50 x 1.75 + 30 = 117.5 s needed, 80 left
    assert told.longest_trial() == 50 and told.out_of_time() is False  # no trial running


def test_the_final_model_trains_for_the_best_trials_epochs_unless_its_cosine_ended_while_it_improved():
    assert refit_epochs(12, 20, cosine=False, seconds_per_epoch=5, time_left=None) == 12  # plateau: its best epochs
    assert refit_epochs(20, 20, cosine=False, seconds_per_epoch=5, time_left=None) == 20
    assert refit_epochs(15, 20, cosine=True, seconds_per_epoch=5, time_left=None) == 15  # it stopped improving
    assert refit_epochs(19, 20, cosine=True, seconds_per_epoch=5, time_left=None) == 40  # still improving: 2x
    assert refit_epochs(16, 20, cosine=True, seconds_per_epoch=5, time_left=None) == 40  # its last quarter
    assert refit_epochs(2, 2, cosine=True, seconds_per_epoch=5, time_left=None) == 4
    assert refit_epochs(20, 0, cosine=True, seconds_per_epoch=5, time_left=None) == 20  # its schedule's length unknown


def test_a_longer_final_model_takes_only_the_time_left():
    room = FINISH_SECONDS + 25 * 5  # 25 epochs of 5 s fit before the finish's own seconds
    assert refit_epochs(20, 20, cosine=True, seconds_per_epoch=5, time_left=room) == 25
    assert refit_epochs(20, 20, cosine=True, seconds_per_epoch=5, time_left=room + 1000) == 40
    assert refit_epochs(20, 20, cosine=True, seconds_per_epoch=5, time_left=10) == 20  # never fewer than the trial's
    assert refit_epochs(20, 20, cosine=True, seconds_per_epoch=5, time_left=0) == 20


def test_another_retraining_starts_only_while_the_time_left_covers_it_and_the_finish():
    assert another_retraining_fits(None, 1e9)  # no time limit
    assert another_retraining_fits(100 * RETRAINING_MARGIN + FINISH_SECONDS, 100)
    assert not another_retraining_fits(100 * RETRAINING_MARGIN + FINISH_SECONDS - 1, 100)


def test_a_final_model_that_may_average_retrainings_keeps_room_for_each():
    clock = Clock()
    single, averaging = TimeBudget(900, clock), TimeBudget(900, clock, retrainings=3)
    for budget in (single, averaging):
        budget.timed(_trial(clock, 100))()
    clock.now += 300  # 500 s left of each
    assert single.may_start_trial()  # a trial (50) and one retraining (125 + 30)
    assert not averaging.may_start_trial()  # a trial (50) and three longer retrainings (3 * 225 + 30) do not fit
    assert averaging.final_model_seconds(100, 3) == 3 * 100 * LONGER_RETRAINING_TRIALS + FINISH_SECONDS


def test_the_retrainings_are_sized_on_the_best_trial_whose_configuration_they_retrain():
    clock = Clock()
    budget = TimeBudget(900, clock, retrainings=3, objective=ACCURACY)
    budget.timed(_trial(clock, 50, value=0.91))()  # the best trial
    budget.timed(_trial(clock, 100, value=0.85))()  # the longest, worse
    budget.timed(_trial(clock, 40, value=0.80))()
    assert budget.best_trial() == 50 and budget.longest_trial() == 100
    kept = 3 * 50 * LONGER_RETRAINING_TRIALS + FINISH_SECONDS  # 367.5 s, where the longest trial's is 705 s
    assert budget.final_model_seconds(50, 3, budget.best_trial()) == kept
    clock.now = budget.deadline - (kept + 100 * LEAST_TRIAL_SHARE + 1)  # and room for half the longest trial
    assert budget.may_start_trial()
    clock.now += 2
    assert not budget.may_start_trial()
    told = TimeBudget(900, clock, retrainings=3, objective=ACCURACY, longest_known=100, best_known=(0.91, 50))
    assert told.best_trial() == 50  # a replacement worker starts with its predecessors' best trial
    told.timed(_trial(clock, 30, value=0.95))()
    assert told.best_trial() == 30 and told.longest_trial() == 100


def test_a_trial_longer_than_the_best_is_stopped_before_it_eats_into_a_final_model_sized_on_itself():
    clock = Clock()
    budget = TimeBudget(900, clock, retrainings=3, objective=ACCURACY)
    budget.timed(_trial(clock, 50, value=0.91))()
    budget.timed(_trial(clock, 100, value=0.85))()
    clock.now = budget.deadline - 440  # room for a trial: 367.5 s for the final model, 50 s for half the longest
    assert budget.may_start_trial()
    # 10 s epochs: after 40 s another leaves 390 >= 3 x 112.5 + 30, sized on the best trial; after 50 s it would
    # leave 380 < (60 + 2 x 50) x 2.25 + 30 = 390, the first retraining sized on this trial, which may end best
    assert _stopped_at(budget, clock, 20, 10) == 5
    assert budget.time_left() == 390


def test_a_space_averages_retrainings_only_when_its_trials_may_run_a_cosine_schedule():
    from sweeper.domain.space import Choice, Fixed, FloatRange, Objective, SearchSpace

    def space(**params):
        return SearchSpace(params={"learning_rate": FloatRange(1e-3, 1e-2), **params},
                           objective=Objective("val_accuracy", "maximize"), ensemble=3)

    assert space(lr_schedule=Choice(("cosine", "plateau"))).retrainings == 3
    assert space(lr_schedule=Fixed("cosine")).retrainings == 3
    assert space(lr_schedule=Fixed("plateau")).retrainings == 1
    assert space().retrainings == 1  # the plateau drop by default


def _stopped_at(budget, clock, epochs, seconds_per_epoch):
    """The epoch at which a trial of `epochs` epochs run under `budget` is stopped (None: it ran them all)."""
    stopped = []

    def trial(*args):
        for epoch in range(1, epochs + 1):
            clock.now += seconds_per_epoch
            if budget.out_of_time():
                stopped.append(epoch)
                break
        return TrialOutcome("complete")

    budget.timed(trial)()
    return stopped[0] if stopped else None


def test_a_first_trial_is_stopped_for_the_first_retraining_only_later_ones_for_every_retraining():
    clocks = Clock(), Clock()
    single, averaging = TimeBudget(900, clocks[0]), TimeBudget(900, clocks[1], retrainings=3)
    # a 200 s first trial: one retraining of it (250 + 30) fits in the 700 s left, three (3 * 450 + 30) do not
    assert _stopped_at(single, clocks[0], 20, 10) is None and _stopped_at(averaging, clocks[1], 20, 10) is None
    assert not averaging.may_start_trial() and single.may_start_trial()
    clocks = Clock(), Clock()
    single, averaging = TimeBudget(900, clocks[0]), TimeBudget(900, clocks[1], retrainings=3)
    for budget, clock in zip((single, averaging), clocks, strict=True):
        budget.timed(_trial(clock, 40))()  # a first trial of 40 s: 860 s left, three retrainings (630) leave room
        assert budget.may_start_trial()
    # a second trial of 250 s: stopped once three retrainings of it would not fit, not for one
    assert _stopped_at(single, clocks[0], 25, 10) is None
    assert _stopped_at(averaging, clocks[1], 25, 10) == 10  # 860 - 100 - 10 < 3 * 2.25 * 110 + 30; at 9 not yet
