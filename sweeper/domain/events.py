"""What a sweep tells whoever watches it, and what it hands back: the same for the command line, a notebook or a
worker process that forwards its events to its parent."""

from __future__ import annotations

from dataclasses import dataclass, field

from sweeper.domain.records import TrialRecord


class SweepListener:
    """What a sweep tells whoever watches it (the live display); every method may be left out."""

    def search_started(self, study: str, trials: int, counts: dict, best: float | None) -> None: ...

    def trials_reaped(self, numbers: list[int]) -> None: ...

    def sweep_joined(self, parent_run_id: str) -> None: ...

    def data_loaded(self, splits: str) -> None: ...

    def trial_started(self, number: int, params: dict) -> None: ...

    def epoch_ended(self, number: int, epoch: int, logs: dict) -> None: ...

    def trial_ended(self, number: int, state: str, value: float | None, note: str = "") -> None: ...

    def refit_started(self, trial_number: int, epochs: int, member: int = 1) -> None:
        """The best configuration's retraining on train + val began (`member` > 1: a further one, from another
        seed, to average with the first)."""

    def refit_epoch_ended(self, epoch: int, logs: dict) -> None: ...

    def final_step(self, what: str) -> None:
        """The final model's making moved on to `what`, e.g. "evaluating the final model on the test split"."""

    def worker(self, index: int) -> SweepListener:
        """The listener for the events of worker `index` of several (`--jobs N`): by default this one."""
        return self


@dataclass
class SweepResult:
    """A sweep's end: its counts, its best trial and final model, where MLflow holds them."""

    study: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    objective_metric: str
    best: TrialRecord | None
    test_metrics: dict
    counts: dict
    top: list[TrialRecord] = field(default_factory=list)  # the best complete trials, best first
    model_version: str | None = None
    refit_epochs: int | None = None  # the final model was retrained on train + val for this many epochs
    trial_test_metrics: dict = field(default_factory=dict)  # the best trial's own model, when refit
    finished_elsewhere: bool = False  # another worker of the study is still at work and will finish it
    cost_metric: str | None = None  # the second objective of a two-objective study
    pareto: list[TrialRecord] = field(default_factory=list)  # complete trials on the Pareto front, cheapest first
    already_complete: bool = False  # the budget was spent and the final model made by an earlier sweep
    baseline: str | None = None  # what the baseline was (e.g. logistic regression), fitted on the final model's data
    baseline_metrics: dict = field(default_factory=dict)  # its test metrics, named as test_metrics
    ensemble_of: list[int] = field(default_factory=list)  # the final model averages these trials (best first)
    single_test_metrics: dict = field(default_factory=dict)  # then: the best trial's final model alone
    ensemble_candidates: list[int] = field(default_factory=list)  # the trials it might have averaged with the best
    ensemble_skipped: bool = False  # an average was asked for, but the best was retrained longer than its trial
    refit_seeds: list[int] = field(default_factory=list)  # the final model averages retrainings from these seeds
    shifts_validation: tuple[float, float] | None = None  # test-time shifts judged: validation objective without, with
    unshifted_test_metrics: dict = field(default_factory=dict)  # the shifts used: the final model's without them

    @property
    def alone_test_metrics(self) -> dict:
        """The test metrics of the best trial's final model alone: before any average and test-time shifts."""
        return self.single_test_metrics or self.unshifted_test_metrics or self.test_metrics
