"""The trial function every engine calls: sample a configuration, train it, record it. How the trial ended becomes a
`TrialOutcome` in one place (`domain.records.outcome_of`); the store records it through its table, the engine
through its own; only what stops the sweep (an interrupt, a full disk, the failure cap) is raised past it."""

from __future__ import annotations

from collections.abc import Callable

from sweeper.domain.errors import SweepError, TrialAbandoned, TrialPruned, disk_full
from sweeper.domain.events import SweepListener
from sweeper.domain.records import TrialOutcome, outcome_of
from sweeper.domain.space import Suggester
from sweeper.engines import ShouldPrune, TrialPlan
from sweeper.ml.data import Dataset
from sweeper.runtime import interrupts
from sweeper.runtime.heap import release_freed_memory
from sweeper.store import SweepRecorder, TrialRun, describe_store
from sweeper.usecases.plan import SweepPlan

REAPED_NOTE = "its worker stopped (killed, or paused past the grace period)"


class TrialRunner:
    """Sample, train, record one trial for the engine; count failures in a row against the plan's cap."""

    def __init__(self, plan: SweepPlan, dataset: Dataset, recorder: SweepRecorder, listener: SweepListener,
                 top_values: Callable[[int], list[float]], take_reaped: Callable[[], list[int]] = lambda: [],
                 out_of_time: Callable[[], bool] = lambda: False):
        self.plan, self.space, self.dataset = plan, plan.space, dataset
        self.recorder, self.listener, self.top_values = recorder, listener, top_values
        self.take_reaped = take_reaped  # trials other workers' heartbeats timed out: end their MLflow runs
        self.out_of_time = out_of_time  # the time budget: stop training, keep the best epoch so far
        self.failures_in_a_row = 0

    def __call__(self, suggester: Suggester, number: int, should_prune: ShouldPrune,
                 plan: TrialPlan = TrialPlan()) -> TrialOutcome:
        try:
            self.recorder.reap_dead_runs()
            self.recorder.end_trial_runs(self.take_reaped(), REAPED_NOTE)
            params = self.space.sample(suggester)
            self.listener.trial_started(number, params)
        except (TrialAbandoned, KeyboardInterrupt) as exc:  # taken away, or stopped, before it had a run
            return self._ended(number, outcome_of(exc), exc)
        tags = {"continues_trial": plan.continues, "initial_epoch": plan.initial_epoch} \
            if plan.continues is not None else {}
        run, error, value, cost = None, None, None, None
        try:
            with interrupts.deferred():  # a signal while the run is created is raised once `run` holds it
                run = self.recorder.start_trial(number, params, tags)
            value, cost, seconds = self._train(number, params, should_prune, plan, run)
            should_prune(plan.max_epochs or self.space.max_epochs, None)  # taken away after its last epoch?
        except BaseException as exc:  # every end of a trial is turned into its outcome below
            if run is None and not isinstance(exc, KeyboardInterrupt):
                raise  # the store refused to create the run: the engine ends the trial as for any store error
            error, seconds = _what_ended(exc), None
        outcome = outcome_of(error, value=value, cost=cost, seconds=seconds, store=describe_store(self.recorder.uri))
        try:
            if run is not None:  # None: a signal came before the run was asked for
                run.end(outcome)
        except Exception:
            if outcome.state != "interrupted":  # a full disk may refuse this write: the next sweep reaps the run
                raise
        try:
            return self._ended(number, outcome, error)
        finally:
            # the exception's traceback holds every frame of the training (the model, Keras' copies of the data)
            # in a cycle through this frame: broken here, they are freed now rather than by a full collection
            del error
            release_freed_memory()  # what the trial freed, now that nothing holds its model

    def _ended(self, number: int, outcome: TrialOutcome, error: BaseException | None) -> TrialOutcome:
        """Tell the listener; raise what stops the sweep (an interrupt, a full disk, the failure cap)."""
        shown = "failed" if outcome.state == "abandoned" else outcome.state
        if outcome.state != "interrupted":
            self.listener.trial_ended(number, shown, outcome.value, outcome.reason)
        if outcome.state == "interrupted":
            if isinstance(error, KeyboardInterrupt):
                raise error
            raise disk_full(error, describe_store(self.recorder.uri)) from error
        if outcome.state == "failed":
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= self.plan.max_failures:
                raise SweepError(f"{self.failures_in_a_row} trials in a row failed, so the sweep stopped "
                                 f"(--max-failures {self.plan.max_failures}); the last one: {outcome.reason}")
        elif outcome.state in ("complete", "pruned"):
            self.failures_in_a_row = 0
        return outcome

    def _keeps_model(self, value: float) -> bool:
        """Whether a complete trial keeps its model: when it ranks among the best `plan.space.ensemble` so far (the
        final model may average them); with two objectives any trial may end on the Pareto front, so every one."""
        if self.space.cost:
            return True
        top = self.top_values(self.space.ensemble)
        return len(top) < self.space.ensemble or self.space.objective.better(value, top[-1])

    def _train(self, number, params, should_prune, plan: TrialPlan, run: TrialRun):
        """Train and record one configuration: its objective, its cost (two objectives) and its time in fit."""
        import keras

        from sweeper.ml.train import model_costs, train_trial

        space, metric = self.space, self.space.objective.metric
        max_epochs = plan.max_epochs or space.max_epochs

        def prune_hook(epoch, logs):
            # Reported at every epoch; never pruned after the last, which would save no training and lose the
            # trial (a 218 s trial at val 0.9124 was, in a 15-minute sweep of Fashion-MNIST).
            if metric in logs and should_prune(epoch, float(logs[metric])) and epoch < max_epochs:
                raise TrialPruned(f"pruned after epoch {epoch} ({metric}={logs[metric]:.4f})")

        try:
            result = train_trial(
                params, self.dataset, space.objective, max_epochs=max_epochs,
                patience=space.patience, seed=self.plan.seed * 100_003 + number, initial_epoch=plan.initial_epoch,
                weights_in=plan.weights_in, weights_out=plan.weights_out, builder=space.model,
                epoch_hooks=[run.log_epoch, lambda e, logs: self.listener.epoch_ended(number, e, logs), prune_hook],
                stop_when=self.out_of_time)
            costs = model_costs(result.model, self.dataset,
                                latency=space.cost is not None and space.cost.metric == "latency_ms")
            run.log_result(result.metrics, objective=result.objective, best_epoch=result.best_epoch,
                           epochs=result.epochs, seconds=result.seconds,
                           epoch_cap=max_epochs, **costs)  # the cap: a cosine schedule's length
            if self._keeps_model(result.objective):
                run.log_model(result.model)
        finally:
            keras.backend.clear_session()
        return result.objective, costs[space.cost.metric] if space.cost else None, result.seconds


def _what_ended(exc: BaseException) -> BaseException:
    """The trial's end as `outcome_of` should see it: any error once the process was interrupted is the interrupt
    (the trial runs again on resume), not a failure of its configuration; a prune or a trial taken away stays so."""
    if isinstance(exc, (TrialPruned, TrialAbandoned)):
        return exc
    return interrupts.behind(exc) or exc
