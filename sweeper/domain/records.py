"""The records every layer shares: a trial's outcome as the runner decides it, a trial and a study as the store
reads them back (the same for every engine), and the vocabulary they are told in."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sweeper.domain.errors import SweepError, TrialAbandoned, TrialFailed, TrialPruned, disk_full

#: A trial's state, in the words every summary, table and MLflow `state` tag uses.
TRIAL_STATES = ("complete", "pruned", "failed", "interrupted", "running")
#: What a trial's run may end as: a state, or `abandoned` (other workers failed it while its worker was paused;
#: its result is dropped and it counts as the failed trial those workers recorded).
OUTCOMES = ("complete", "pruned", "failed", "interrupted", "abandoned")


def empty_counts() -> dict[str, int]:
    """Trials by state, all zero: what every engine's `counts` starts from."""
    return dict.fromkeys(TRIAL_STATES, 0)


@dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended, decided in one place (`usecases.runner.outcome_of`) and recorded from it by the store
    and by each engine through their own tables."""

    state: str  # one of OUTCOMES
    value: float | None = None  # the objective of a complete trial
    cost: float | None = None  # its second objective, in a two-objective study
    reason: str = ""  # why it was pruned, failed, abandoned or interrupted, for the person watching
    seconds: float | None = None  # time spent in training
    error: str = ""  # the type of what ended it: a failed trial's error; DiskFull or KeyboardInterrupt

    def __post_init__(self):
        if self.state not in OUTCOMES:
            raise ValueError(f"a trial's outcome is one of {', '.join(OUTCOMES)}, but got {self.state!r}")

    @property
    def recorded_reason(self) -> str:
        """What the store keeps as the trial's `state_reason`: the reason, led by the error's type."""
        if self.state == "failed" and self.error and not self.reason.startswith(f"{self.error}:"):
            return f"{self.error}: {self.reason}"
        return self.reason


def outcome_of(exc: BaseException | None, *, value: float | None = None, cost: float | None = None,
               seconds: float | None = None, store: str | None = None) -> TrialOutcome:
    """How a trial ended, from what its training raised (None: it completed with `value`): the one place a
    trial's exception becomes its state. A full disk or an interrupt is `interrupted` (run again on resume);
    any other error fails the trial only. `store`: where a full disk was being written, for the reason."""
    if exc is None:
        return TrialOutcome("complete", value, cost, seconds=seconds)
    if isinstance(exc, TrialPruned):
        return TrialOutcome("pruned", reason=str(exc), seconds=exc.train_seconds)
    if isinstance(exc, TrialAbandoned):
        return TrialOutcome("abandoned", reason=str(exc))
    if isinstance(exc, KeyboardInterrupt):
        return TrialOutcome("interrupted", reason="interrupted by the user", error="KeyboardInterrupt")
    full = disk_full(exc, store)
    if full is not None:
        return TrialOutcome("interrupted", reason=str(full), error="DiskFull")
    if isinstance(exc, (TrialFailed, SweepError)):  # sweeper's own words
        return TrialOutcome("failed", reason=str(exc), error=type(exc).__name__)
    return TrialOutcome("failed", reason=f"{type(exc).__name__}: {exc}", error=type(exc).__name__)


@dataclass
class TrialRecord:
    """One trial as the store holds it, for every reader (the summary, `trials`, `report`, `export`, `refine`)."""

    number: int
    state: str
    value: float | None  # the objective, for complete trials
    seconds: float | None  # wall time of the trial's run
    epochs: int | None
    params: dict  # sampled values, typed (numbers and flags, not MLflow's text)
    run_id: str
    search_run_id: str
    cost: float | None = None  # the second objective of a two-objective study (e.g. param_count)
    metrics: dict = field(default_factory=dict)  # every final metric the run logged (objective, best_epoch, ...)
    has_model: bool = False  # its trained model is kept (it beat the study's best, or two objectives)
    trained_on: str = "tensorflow"  # Keras' backend in its worker (runs from before the tag: TensorFlow)

    @property
    def best_epoch(self) -> int:
        """The epoch (1-based) whose weights the trial's model holds; 0 when it recorded none."""
        return int(self.metrics.get("best_epoch", 0))

    def row(self) -> dict:
        """One flat row for --json/--csv: the columns of the table, then every parameter."""
        return {"number": self.number, "state": self.state, "objective": self.value,
                "seconds": None if self.seconds is None else round(self.seconds, 2), "epochs": self.epochs,
                **dict(sorted(self.params.items())), "run_id": self.run_id}


@dataclass
class StudyRecord:
    """A study: what its experiment records (engine, dataset, objective) and, when read, its trials."""

    name: str
    experiment_id: str
    backend: str
    dataset: str
    metric: str
    direction: str
    trials: list[TrialRecord] = field(default_factory=list)
    cost_metric: str = ""  # a two-objective study's second objective, minimised
    task: str = ""
    target: str | None = None  # csv:PATH datasets: the column predicted
    impute: str | None = None  # csv:PATH datasets: how missing feature values are filled

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def better(self, a: float, b: float | None) -> bool:
        """Whether objective value `a` beats `b` (None or NaN: nothing to beat)."""
        if b is None or math.isnan(b):
            return True
        return a > b if self.maximize else a < b

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)

    def counts(self) -> dict[str, int]:
        counts = empty_counts()
        for trial in self.trials:
            if trial.state in counts:
                counts[trial.state] += 1
        return counts

    def completed(self) -> list[TrialRecord]:
        """Complete trials, best first."""
        done = [t for t in self.trials if t.state == "complete" and t.value is not None]
        return sorted(done, key=lambda t: t.value, reverse=self.maximize)

    def sorted_trials(self, by: str) -> list[TrialRecord]:
        """By trial number, or by objective (best first; trials without one last, by number)."""
        if by == "number":
            return list(self.trials)
        return self.completed() + [t for t in self.trials if t.state != "complete" or t.value is None]

    def best(self) -> TrialRecord | None:
        completed = self.completed()
        return completed[0] if completed else None

    def row(self) -> dict:
        """One flat row for `sweeper studies --json/--csv`."""
        best = self.best()
        return {"study": self.name, "engine": self.backend, "dataset": self.dataset, "metric": self.metric,
                "direction": self.direction, **{s: self.count(s) for s in TRIAL_STATES[:4]},
                "best": best and best.value, "best_trial": best and best.number}


@dataclass
class SearchRecord:
    """One sweep run of a study (its parent run in MLflow): how it ended, what it measured, its settings."""

    run_id: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED
    metrics: dict
    tags: dict
    settings: dict  # the sweep's settings, typed (trials, max_epochs, subset, ...)


def numbers_in(tags: dict, tag: str) -> list[int]:
    """The numbers a run's tag lists, comma-separated (e.g. `ensemble_of`, `refit_seeds`; [] when it has none)."""
    return [int(n) for n in tags.get(tag, "").split(",") if n]


class FinalModel(NamedTuple):
    """A final model made from a trial, as `Store.refit_of` finds it."""
    model: Any  # keras.Model
    epochs: int  # retrained on train + val for this many epochs (0: not retrained)
    run_id: str  # the run holding it
    averaged: list[int]  # the trials it averages, best first ([]: not an average of trials)
    seeds: list[int]  # the seeds of the retrainings it averages ([]: one retraining or none)
    shifted: bool = False  # with test-time shifts (`sweeper.ml.ensemble.with_shifted_views`)
