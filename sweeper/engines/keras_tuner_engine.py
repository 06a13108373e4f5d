"""Keras Tuner: its oracles (RandomSearch, BayesianOptimization, Hyperband) drive the sweep.

Keras Tuner's `HyperParameters` become the Suggester, so `SearchSpace.sample` alone still knows the
space: it declares the space to the oracle (conditional parameters in `conditional_scope`s) and
samples every trial. The tuner's loop, its trial files and its resume (`overwrite=False`) are
Keras Tuner's own; only `run_trial` is ours, and it hands the trial to the shared trial function.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

from sweeper.domain.budget import TimeBudget
from sweeper.domain.choices import ENGINES
from sweeper.domain.errors import SweepError
from sweeper.domain.places import KERAS_TUNER_DIR
from sweeper.domain.records import empty_counts, outcome_of
from sweeper.engines.base import Engine, EngineOptions, LastTrial, TrialFunction, TrialPlan
from sweeper.runtime import interrupts
from sweeper.runtime.workers import hold_lock

logger = logging.getLogger(__name__)
_STATES = {"COMPLETED": "complete", "FAILED": "failed", "INVALID": "failed", "RUNNING": "running"}
_CHECKPOINT = "checkpoint.weights.h5"


class HyperParametersSuggester:
    """Keras Tuner's `HyperParameters` behind the Suggester protocol (plus its `conditional_scope`)."""

    def __init__(self, hp):
        self.hp = hp

    def suggest_int(self, name, low, high, *, step=1, log=False):
        # In Keras Tuner a step on a log scale is a factor, so a log range takes no step.
        value = self.hp.Int(name, low, high, step=None if log else step, sampling="log" if log else "linear")
        if value is not None and not low <= value <= high:
            # keras-tuner 1.4.8's Bayesian oracle can map probability 1.0 to high + 1: keep the space's bound,
            # in the trial's record too.
            value = self.hp.values[name] = min(max(value, low), high)
        return value

    def suggest_float(self, name, low, high, *, step=None, log=False):
        return self.hp.Float(name, low, high, step=step, sampling="log" if log else "linear")

    def suggest_categorical(self, name, choices):
        value = self.hp.Choice(name, list(choices), ordered=False)
        # Keras Tuner stores booleans as 0 and 1: hand back the choice itself.
        return next((choice for choice in choices if choice == value), value)

    def conditional_scope(self, parent, values):
        return self.hp.conditional_scope(parent, values)


class _Stop(Exception):
    """The budget or the time is spent: leave Keras Tuner's loop between two trials."""


def _tuner_class():
    import keras_tuner as kt
    from keras_tuner.src import config as kt_config

    kt_config.DEBUG = False  # else Keras Tuner prints the traceback of every failed trial (its state says it)

    class SpaceHyperModel(kt.HyperModel):
        """Declares the space: `build` draws a configuration, which registers every parameter with `hp`.

        Keras Tuner calls it only to discover the space (trials are trained by the trial function).
        """

        def __init__(self, space):
            super().__init__(name="sweeper")
            self.space = space

        def build(self, hp):
            return self.space.sample(HyperParametersSuggester(hp))

    class SweeperTuner(kt.engine.base_tuner.BaseTuner):
        def __init__(self, oracle, space, run_trial, should_stop, **kwargs):
            self.run_trial_function, self.should_stop, self.metric = run_trial, should_stop, space.objective.metric
            super().__init__(oracle, SpaceHyperModel(space), **kwargs)

        def pre_create_trial(self):
            interrupts.check()  # no new trial once an interrupt arrived, wherever it landed
            if self.should_stop():
                raise _Stop

        def run_trial(self, trial, *args, **kwargs):
            try:
                outcome = self.run_trial_function(HyperParametersSuggester(trial.hyperparameters),
                                                  int(trial.trial_id), lambda epoch, value: False, self._plan(trial))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # a full disk or the failure cap: the sweep stops
                if outcome_of(exc).state != "interrupted":  # the failure cap: this trial failed
                    trial.status, trial.message = "FAILED", str(exc)
                    self.oracle.end_trial(trial)
                    self.save()
                # else the trial stays running in the oracle: Keras Tuner runs it again on resume
                raise kt.errors.FatalError(str(exc)) from exc  # Keras Tuner would record any other error and go on
            if outcome.state != "complete":  # Keras Tuner prunes nothing: the trial failed
                raise kt.errors.FailedTrialError(outcome.reason)
            return {self.metric: outcome.value}

        def _plan(self, trial) -> TrialPlan:
            """A Hyperband round trains epochs initial_epoch+1 .. tuner/epochs from its promoted trial's weights."""
            values = trial.hyperparameters.values
            if "tuner/epochs" not in values:
                return TrialPlan()
            earlier = values.get("tuner/trial_id")
            return TrialPlan(max_epochs=values["tuner/epochs"], initial_epoch=values["tuner/initial_epoch"],
                             continues=None if earlier is None else int(earlier),
                             weights_in=None if earlier is None else self._checkpoint(earlier),
                             weights_out=self._checkpoint(trial.trial_id))

        def _checkpoint(self, trial_id):
            return os.path.join(self.get_trial_dir(trial_id), _CHECKPOINT)

    return SweeperTuner


def _directory(options: EngineOptions) -> Path:
    return Path(options.storage or KERAS_TUNER_DIR).resolve()


def _lock_study(path: Path, study: str):
    """Keras Tuner's files serve one process at a time: hold a lock on the study while this process lives."""
    held = hold_lock(path)
    if isinstance(held, str):
        raise SweepError(f"the Keras Tuner study '{study}' is being run by another process (pid {held}); Keras "
                         f"Tuner keeps one process per study, so wait for it, or use --backend optuna to run "
                         f"several workers")
    return held


class KerasTunerEngine(Engine):
    name = "keras-tuner"
    algorithms, pruners = ENGINES["keras-tuner"]

    def __init__(self, options: EngineOptions):
        super().__init__(options)
        self.directory = _directory(options)
        self._lock = _lock_study(self.directory / f"{options.study}.lock", options.study)
        self.oracle = self._oracle(options.algorithm or "random")
        self.tuner = None
        self._left_running_taken = False

    def _oracle(self, algorithm):
        import keras_tuner as kt

        space, seed = self.options.space, self.options.seed
        objective = kt.Objective(space.objective.metric, "max" if space.objective.direction == "maximize" else "min")
        # The budget counts finished trials and is kept by `optimize`; failures are capped by the trial function.
        common = dict(objective=objective, seed=seed, max_consecutive_failed_trials=None)
        if algorithm == "random":
            return kt.oracles.RandomSearchOracle(max_trials=None, **common)
        if algorithm == "bayesian":
            startup = max(3, min(10, space.trials // 3))
            return kt.oracles.BayesianOptimizationOracle(max_trials=None, num_initial_points=startup, **common)
        if algorithm == "hyperband":
            return kt.oracles.HyperbandOracle(max_epochs=space.max_epochs, factor=3, hyperband_iterations=1000,
                                              **common)
        raise ValueError(f"unknown algorithm {algorithm!r} for keras-tuner (the plan checks the choices)")

    def _open(self, run_trial=None, should_stop=lambda: False):
        """The tuner on this study's folder: Keras Tuner reloads it when it exists (overwrite=False)."""
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # "Reloading Tuner from ..."
            warnings.simplefilter("ignore")
            return _tuner_class()(self.oracle, self.options.space, run_trial, should_stop,
                                  directory=str(self.directory), project_name=self.options.study, overwrite=False)

    def _ensure_open(self):
        if self.tuner is None:
            self.tuner = self._open()
        return self.tuner

    def optimize(self, run_trial: TrialFunction, *, trials: int, budget: TimeBudget | None = None,
                 last_trial: LastTrial | None = None) -> int:
        import keras_tuner as kt

        budget, before = budget or TimeBudget(None), sum(self.counts().values())
        last, ran = False, 0

        def run_one(*args, **kwargs):
            nonlocal last, ran
            last, ran = last_trial is not None and last_trial(ran), ran + 1
            return run_trial(*args, **kwargs)

        def should_stop():
            return last or not budget.may_start_trial() or self.counts()["complete"] >= trials

        tuner = self._ensure_open()
        tuner.run_trial_function, tuner.should_stop = budget.timed(run_one), should_stop
        try:
            tuner.search(verbose=0)
        except _Stop:
            pass
        except kt.errors.FatalError as exc:
            if isinstance(exc.__cause__, SweepError):
                raise exc.__cause__ from None
            raise
        return sum(self.counts().values()) - before

    def close(self) -> None:
        self._lock.close()  # closing the file releases its lock

    @classmethod
    def study_exists(cls, options: EngineOptions) -> bool:
        return (_directory(options) / options.study / "oracle.json").is_file()

    @classmethod
    def describe_storage(cls, options: EngineOptions) -> str:
        where = _directory(options) / options.study
        return f"the Keras Tuner folder {where.relative_to(Path.cwd()) if where.is_relative_to(Path.cwd()) else where}"

    def delete_study(self) -> None:
        import shutil

        shutil.rmtree(self.directory / self.options.study, ignore_errors=True)
        self.tuner = None
        logger.warning(f"deleted the Keras Tuner study '{self.options.study}' "
                       f"({self.describe_storage(self.options)[4:]})")

    def top_values(self, k: int) -> list[float]:
        return [trial.score for trial in self._ensure_open().oracle.get_best_trials(k)]

    def take_reaped(self) -> list[int]:
        """The trials a stopped process left running in Keras Tuner's oracle, once, before this process runs any
        (one process holds a study): Keras Tuner runs each again under its number, so the MLflow run each had is
        to be ended, even one a kill left complete, having landed before Keras Tuner recorded the trial's end."""
        if self._left_running_taken:
            return []
        self._left_running_taken = True
        return [int(trial.trial_id) for trial in self._ensure_open().oracle.trials.values()
                if _STATES.get(str(trial.status)) == "running"]

    def counts(self) -> dict[str, int]:
        counts = empty_counts()
        for trial in self._ensure_open().oracle.trials.values():
            state = _STATES.get(str(trial.status))
            if state:
                counts[state] += 1
        return counts
