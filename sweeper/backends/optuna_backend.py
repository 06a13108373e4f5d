"""Optuna: samplers, pruners and storages are Optuna's own; an `optuna.Trial` is the Suggester."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import SweeperError, TrialFailed, TrialPruned, UsageError
from . import CHOICES
from .base import Backend, BackendOptions, TrialFunction

JOURNAL_PATH = Path("mlruns") / "optuna" / "journal.log"


def make_storage(url: str | None):
    """Optuna storage for a URL: an RDB URL (sqlite://, postgresql://, ...) or a journal file path.

    Default: a journal file under ./mlruns, which several local processes share safely.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if url and "://" in url:
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds for a bad URL
            raise SweeperError(f"cannot open the Optuna storage {_redact(url)}: {exc}") from None
    path = (Path(url) if url else JOURNAL_PATH).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url


class OptunaBackend(Backend):
    name = "optuna"
    algorithms, pruners = CHOICES["optuna"]

    def __init__(self, options: BackendOptions):
        import optuna

        super().__init__(options)
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        space = options.space
        self.study = optuna.create_study(study_name=options.study, storage=make_storage(options.storage),
                                         direction=space.objective.direction, load_if_exists=True)
        if self.study.direction.name.lower() != space.objective.direction:
            raise UsageError(f"study '{options.study}' was created to {self.study.direction.name.lower()} "
                             f"its objective, but the search space asks to {space.objective.direction}; "
                             f"use another --study")
        # Offset the seed by the trials already run, so a resumed study does not replay its first draws.
        self.study.sampler = self._sampler(options.algorithm or "tpe", options.seed + len(self.study.trials))
        self.study.pruner = self._pruner(options.pruner or "median")

    def _sampler(self, name, seed):
        import optuna

        space = self.options.space
        if name == "tpe":
            startup = max(3, min(10, space.trials // 3))
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "grid":
            return optuna.samplers.GridSampler(space.grid(), seed=seed)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        raise UsageError(f"unknown algorithm '{name}' for optuna; expected one of {', '.join(self.algorithms)}")

    def _pruner(self, name):
        import optuna

        if name == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
        if name == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=self.options.space.max_epochs)
        if name == "none":
            return optuna.pruners.NopPruner()
        raise UsageError(f"unknown pruner '{name}'; expected one of {', '.join(self.pruners)}")

    def optimize(self, run_trial: TrialFunction, *, trials: int, timeout: float | None) -> None:
        import optuna
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState

        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        if len(self.study.get_trials(deepcopy=False, states=finished)) >= trials:
            return

        def objective(trial):
            def should_prune(epoch, value):
                trial.report(value, epoch)
                return trial.should_prune()

            try:
                return run_trial(trial, trial.number, should_prune)
            except TrialPruned as exc:
                raise optuna.TrialPruned(str(exc)) from None

        self.study.optimize(objective, timeout=timeout, catch=(TrialFailed,), gc_after_trial=True,
                            callbacks=[MaxTrialsCallback(trials, states=finished)])

    def best_value(self) -> float | None:
        try:
            return self.study.best_value
        except ValueError:
            return None

    def counts(self) -> dict[str, int]:
        from optuna.trial import TrialState

        counts = {"complete": 0, "pruned": 0, "failed": 0, "running": 0}
        names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
                 TrialState.RUNNING: "running"}
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state in names:
                counts[names[trial.state]] += 1
        return counts
