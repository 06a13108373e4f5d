"""A sweep's wall-clock budget (`--timeout`), the final model included: a trial starts only while the time left
covers the final model (the best trial so far retrained on training + validation data for about its epochs, as many
times as it may average retrainings, then evaluated and registered) and, before it, half the longest complete trial
so far; a running trial stops training (keeping its best epoch) before an epoch that would reach into the time of a
final model sized on itself, when it ran longer than the best trial: only the running trial can become the best."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sweeper.domain.space import Objective

#: the final model against the longest complete trial: a retraining on ~10% more data for the best epoch count
#: (the best trial is most often one that ran every epoch), its test evaluation, the baseline and the registration.
#: The longest trial, not the median one: with the median a 15-minute sweep of Fashion-MNIST ended 184 s late
#: (a last trial that ran all its epochs, then a refit of the 172 s best trial; bench/RESULTS.md).
FINAL_MODEL_TRIALS = 1.25

#: the least training a new trial must have room for before the final model's time, against the longest complete
#: trial. Most trials are pruned long before the longest one's length, and one that is stopped keeps its best epoch;
#: with a whole longest trial required, a 15-minute sweep of Fashion-MNIST left 3 of its minutes unused.
LEAST_TRIAL_SHARE = 0.5

#: seconds kept after the final model's training, under a time budget: its test evaluation, the averaging with
#: other trials, the registration and the baseline (6-11 s measured in 15-minute sweeps). Without them in the
#: reserve, a 15-minute sweep of Fashion-MNIST ended 23 s late (its widest trial retrained in 1.10x the trial's time,
#: then 10 s of finish; bench/RESULTS.md).
FINISH_SECONDS = 30


#: a best trial whose cosine schedule ended while it still improved (its best epoch in the schedule's last quarter)
#: has its final model trained for up to this many times the schedule's epochs, the cosine stretched over them: the
#: hand recipe on Fashion-MNIST, retrained for 20, 30, 40 and 50 epochs, scored test 0.9081, 0.9105, 0.9117 and
#: 0.9113 (means over 3 seeds; bench/RESULTS.md)
LONGER_REFIT = 2.0

#: the end of a cosine schedule where a best epoch means the trial still improved: the rate is near 0 there, and which
#: of those epochs scored best is the validation score's noise (the hand recipe's best epoch was 18 of 20 on one seed,
#: and it was then retrained for 18 epochs where 40 gain about 0.004: bench/RESULTS.md)
STILL_IMPROVING_SHARE = 0.25


def refit_epochs(best_epoch: int, max_epochs: int, *, cosine: bool, seconds_per_epoch: float,
                 time_left: float | None) -> int:
    """The final model's epochs: the best trial's best epoch count, or, for a cosine schedule (over `max_epochs`;
    0: not known) still improving at its end, up to LONGER_REFIT times its epochs, as many as the time left allows
    (never fewer than the trial's)."""
    if not cosine or not max_epochs or best_epoch <= max_epochs * (1 - STILL_IMPROVING_SHARE):
        return best_epoch
    longer = math.ceil(LONGER_REFIT * max_epochs)
    if time_left is not None and seconds_per_epoch > 0:
        longer = min(longer, int((time_left - FINISH_SECONDS) / seconds_per_epoch))
    return max(best_epoch, longer)


#: a retraining longer than its trial (LONGER_REFIT times its epochs, on ~9% more data, without the validation
#: each trial epoch paid), against the trial's wall time: 1.86-2.17 measured (40-epoch retrainings of the hand
#: recipe's 20-epoch trial on JAX, 103-111 s against 51-55 s, in four 15-minute sweeps). Sized at 2.5
#: (FINAL_MODEL_TRIALS x LONGER_REFIT), four retrainings left 110-160 s of a 15-minute sweep unused
#: (bench/RESULTS.md).
LONGER_RETRAINING_TRIALS = 2.25

#: another retraining of the best configuration (from another seed, to average with the first) starts only while the
#: time left covers this many times the first one's training, and the finish after it
RETRAINING_MARGIN = 1.1


def another_retraining_fits(time_left: float | None, retraining_seconds: float) -> bool:
    """Whether the final model may train one more retraining as long as the one before (`time_left` None: no time
    limit)."""
    return time_left is None or time_left >= retraining_seconds * RETRAINING_MARGIN + FINISH_SECONDS


class TimeBudget:
    """`seconds` from `started` (default: now; None: no limit), spent by the trials this worker runs and the final
    model after them."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic,
                 started: float | None = None, longest_known: float = 0.0, retrainings: int = 1,
                 objective: Objective | None = None, best_known: tuple[float, float] | None = None):
        self.clock = clock
        self.retrainings = retrainings  # how many retrainings the final model may average (`SearchSpace.retrainings`)
        self.deadline = None if seconds is None else (clock() if started is None else started) + seconds
        # complete trials' wall times; `longest_known`: of the trials an earlier worker process of the sweep ran
        self.trial_seconds: list[float] = [longest_known] if longest_known else []
        # the best complete trial by `objective` (value, wall time), `best_known` that of an earlier worker's
        self.objective, self.best = objective, best_known
        self.running_since: float | None = None  # when the trial running now started
        self.epoch_ended: float | None = None  # when the running trial's last epoch ended (or it started)

    def time_left(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - self.clock())

    def longest_trial(self) -> float:
        """The longest complete trial's wall time so far (0 before one completed): what the next trial may take
        when it is not pruned."""
        return max(self.trial_seconds, default=0.0)

    def best_trial(self) -> float | None:
        """The best complete trial's wall time so far (None: not known), what a retraining of its configuration
        takes."""
        return self.best[1] if self.best else None

    @staticmethod
    def final_model_seconds(trial_seconds: float, retrainings: int = 1, best_seconds: float | None = None) -> float:
        """The time kept for a final model of `retrainings` retrainings, and its finish: the first sized on a trial of
        `trial_seconds` (the best so far, or the running one where that is longer: whichever trial ends best), the
        others on the best trial so far (`best_seconds`, default `trial_seconds`), whose configuration they retrain
        from other seeds. Several are made only of a best trial retrained longer than it ran, so each is sized so
        (sized as one, a 15-minute sweep of Fashion-MNIST kept 314 s, and its 40-epoch retraining left no room for a
        second; sized on the longest trial, a 92 s or 124 s wide trial on JAX kept room for retrainings of 200 s
        where the best trial's took 115 s, and sweeps ended 5 to 6 minutes early: bench/RESULTS.md)."""
        per_trial = LONGER_RETRAINING_TRIALS if retrainings > 1 else FINAL_MODEL_TRIALS
        others = (retrainings - 1) * (trial_seconds if best_seconds is None else best_seconds)
        return (trial_seconds + others) * per_trial + FINISH_SECONDS

    def may_start_trial(self) -> bool:
        left, longest = self.time_left(), self.longest_trial()
        if left is None:
            return True
        if not longest:  # nothing measured yet: the first trial sizes the rest
            return left > 0
        best = self.best_trial() or longest
        return left > longest * LEAST_TRIAL_SHARE + self.final_model_seconds(best, self.retrainings, best)

    def out_of_time(self) -> bool:
        """Called at each epoch's end: whether the running trial must stop training now, because after one more
        epoch (as long as the last one) the time left would no longer cover the final model, its first retraining
        sized on the longer of the best trial so far and this one with that epoch (a first trial of a short budget,
        a wider model than any before that ends best: either would otherwise push the final model past the
        deadline). Every retraining once a trial has completed (without it, a 254 s trial started before the room
        grew took a third retraining's time on Fashion-MNIST; bench/RESULTS.md); the first one only before: the
        first trial is never cut short for more."""
        left = self.time_left()
        if left is None or self.running_since is None:
            return False
        now = self.clock()
        epoch, self.epoch_ended = now - (self.epoch_ended or self.running_since), now
        running, retrainings = now - self.running_since, self.retrainings if self.trial_seconds else 1
        first = max(self.best_trial() or self.longest_trial(), running + epoch)
        return left - epoch < self.final_model_seconds(first, retrainings, self.best_trial())

    def timed(self, run_trial):
        """`run_trial`, its complete trials' wall times recorded."""

        def timed_trial(*args, **kwargs):
            started = self.running_since = self.clock()
            try:
                outcome = run_trial(*args, **kwargs)
            finally:
                self.running_since = self.epoch_ended = None
            if outcome.state == "complete":
                self._completed(outcome.value, self.clock() - started)
            return outcome

        return timed_trial

    def _completed(self, value: float | None, seconds: float) -> None:
        self.trial_seconds.append(seconds)
        if self.objective and value is not None and self.objective.better(value, self.best and self.best[0]):
            self.best = value, seconds
