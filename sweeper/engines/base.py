"""The seam every search engine adapts to.

An engine owns the study (its storage, algorithm and budget) and calls the trial function with a Suggester of its
own; it never sees Keras or MLflow. The trial function returns the trial's `TrialOutcome` (complete, pruned,
failed, abandoned), which the engine records through its own table of states; only what stops the sweep (an
interrupt, a full disk, the failure cap) is raised past it, and `outcome_of` tells the engine how the trial it was
running ended.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sweeper.domain.budget import TimeBudget
from sweeper.domain.records import TrialOutcome
from sweeper.domain.space import SearchSpace, Suggester

#: Reports (epoch, objective value); True means "stop this trial now". Called once more with value None when
#: training has ended: an engine whose trials other workers may take away raises TrialAbandoned if this one was.
ShouldPrune = Callable[[int, float | None], bool]

#: Asked as each trial of an `optimize` call begins, with the trials the call ran before it; True makes that trial
#: the call's last (a worker process about to be replaced).
LastTrial = Callable[[int], bool]


@dataclass(frozen=True)
class TrialPlan:
    """How to train a trial when not from scratch up to the space's epoch cap.

    Keras Tuner's Hyperband trains a configuration in rounds: each round is a trial that continues
    an earlier trial's weights (`weights_in`) from `initial_epoch` up to `max_epochs`, and keeps its
    own best weights (`weights_out`) for the next round.
    """

    max_epochs: int | None = None
    initial_epoch: int = 0
    continues: int | None = None  # the trial number whose weights this one starts from
    weights_in: str | None = None
    weights_out: str | None = None


class TrialFunction(Protocol):
    def __call__(self, suggester: Suggester, number: int, should_prune: ShouldPrune,
                 plan: TrialPlan = TrialPlan()) -> TrialOutcome: ...


@dataclass(frozen=True)
class EngineOptions:
    study: str
    space: SearchSpace
    algorithm: str | None = None
    pruner: str | None = None
    storage: str | None = None
    seed: int = 0
    worker: int = 0  # index of this worker among those a `--jobs N` sweep started
    grace_period: int = 60  # RDB storages: seconds without a heartbeat before other workers fail a trial
    warm_start: tuple = ()  # (params, objective value) of trials to add to a new study as complete (refine)


class Engine(ABC):
    name: str
    algorithms: tuple[str, ...]
    pruners: tuple[str, ...] = ("none",)

    def __init__(self, options: EngineOptions):
        self.options = options

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self) -> None:  # noqa: B027 - a hook: most engines hold nothing to let go of
        """Let go of what the study holds in this process (an engine is used as a context manager)."""

    @abstractmethod
    def optimize(self, run_trial: TrialFunction, *, trials: int, budget: TimeBudget | None = None,
                 last_trial: LastTrial | None = None) -> int:
        """Run trials until the study holds `trials` finished (complete or pruned) ones, the time `budget` has
        no room for another trial (`budget.may_start_trial()`; run them through `budget.timed`), or the trial
        `last_trial` called True as it began has ended; returns how many it ran. No budget: no time limit."""

    def study_lock(self):
        """Held by a worker while it decides something every worker of the study must agree on (which trial
        to run next, which parent run to join, who finishes the sweep): a context manager."""
        return contextlib.nullcontext()

    def running_elsewhere(self) -> int:
        """Trials of the study that other processes are running now (one engine process at a time: 0)."""
        return 0

    def reap(self) -> list[int]:
        """Fail the running trials whose worker died; returns their numbers."""
        return []

    def take_reaped(self) -> list[int]:
        """Numbers of the trials this process reaped since the last call (their MLflow runs are to be ended)."""
        return []

    def finished_trials(self) -> int:
        """Complete and pruned trials that ran in this study (not added from elsewhere, as `sweeper refine`'s
        warm start does): each has its MLflow run."""
        counts = self.counts()
        return counts["complete"] + counts["pruned"]

    @classmethod
    @abstractmethod
    def study_exists(cls, options: EngineOptions) -> bool:
        """Whether the study is in its storage, found without creating anything."""

    @classmethod
    @abstractmethod
    def describe_storage(cls, options: EngineOptions) -> str:
        """Where the study lives, for messages: e.g. "the Optuna storage mlruns/optuna/journal.log"."""

    @abstractmethod
    def delete_study(self) -> None:
        """Delete the study from its storage (`--start-over` when its MLflow runs are gone)."""

    @abstractmethod
    def top_values(self, k: int) -> list[float]:
        """The `k` best objective values of the study's complete trials so far, best first (fewer before `k`
        trials completed; for two objectives, of the first)."""

    def best_value(self) -> float | None:
        """The best objective value of the study so far (None before any complete trial)."""
        top = self.top_values(1)
        return top[0] if top else None

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Trials of the study by state (`domain.records.empty_counts`'s keys: the words every table uses)."""
