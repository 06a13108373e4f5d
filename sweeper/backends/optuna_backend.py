"""Optuna: samplers, pruners and storages are Optuna's own; an `optuna.Trial` is the Suggester."""

from __future__ import annotations

import contextlib
import gc
import time
import warnings
from pathlib import Path

from ..errors import SweeperError, TrialFailed, TrialPruned, UsageError
from . import CHOICES
from ..workers import file_lock, is_dead, this_worker
from .base import Backend, BackendOptions, TrialFunction

JOURNAL_PATH = Path("mlruns") / "optuna" / "journal.log"
_POLL_SECONDS = 2.0


def journal_path(url: str | None) -> Path | None:
    """The journal file a storage URL names (None for an RDB URL such as sqlite:// or postgresql://)."""
    if url and "://" in url:
        return None
    return (Path(url) if url else JOURNAL_PATH).resolve()


def make_storage(url: str | None):
    """Optuna storage for a URL: an RDB URL (sqlite://, postgresql://, ...) or a journal file path.

    Default: a journal file under ./mlruns, which several local processes share safely.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend

    path = journal_path(url)
    if path is None:
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds for a bad URL
            raise SweeperError(f"cannot open the Optuna storage {_redact(url)}: {exc}") from None
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
        self.journal_path = journal_path(options.storage)
        with self._slot_lock():  # workers starting together on a new store create the study once
            self.study = optuna.create_study(study_name=options.study, storage=make_storage(options.storage),
                                             direction=space.objective.direction, load_if_exists=True)
            if not self.study.trials:  # a new study tries the space's `start` configurations first
                for config in space.start:
                    self.study.enqueue_trial(dict(config), skip_if_exists=True)
        if self.study.direction.name.lower() != space.objective.direction:
            raise UsageError(f"study '{options.study}' was created to {self.study.direction.name.lower()} "
                             f"its objective, but the search space asks to {space.objective.direction}; "
                             f"use another --study")
        # Offset the seed by the trials already run, so a resumed study does not replay its first draws,
        # and by the worker's index, so that workers started together do not draw the same trials.
        seed = options.seed + len(self.study.trials) + 7919 * options.worker
        self.study.sampler = self._sampler(options.algorithm or "tpe", seed)
        self.study.pruner = self._pruner(options.pruner or "median")
        self._reseeded = False

    def _sampler(self, name, seed):
        import optuna

        space = self.options.space
        if name == "tpe":
            startup = max(3, min(10, space.trials // 3))
            # Multivariate TPE models the parameters jointly; group splits the conditional space (units_i,
            # momentum) into the subspaces that occur together.
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True)
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

    def optimize(self, run_trial: TrialFunction, *, trials: int, timeout: float | None,
                 max_runs: int | None = None) -> int:
        """Ask, train, tell until the study holds `trials` finished trials, counted across every worker.

        A trial is asked only while finished + running trials are under the budget (under a lock that
        the workers of this machine share), so N workers end with exactly `trials` finished ones.
        """
        started, ran = time.monotonic(), 0
        self.reap()
        while (timeout is None or time.monotonic() - started < timeout) and (max_runs is None or ran < max_runs):
            with self._slot_lock():
                finished, running = self._count_finished_and_running()
                trial = self._ask(running) if finished + running < trials else None
            if trial is not None:
                self._run(trial, run_trial)
                ran += 1
            elif finished >= trials:
                break
            else:  # the budget is taken by running trials; one of them may still fail and free a slot
                time.sleep(_POLL_SECONDS)
                self.reap()
        return ran

    def _ask(self, running: int):
        if running and not self._reseeded:
            # Another worker is at work on this study: a run is no longer reproducible, and a worker started
            # by hand with the same seed would otherwise draw the same trials as this one.
            self.study.sampler.reseed_rng()
            self._reseeded = True
        trial = self.study.ask()
        trial.set_user_attr("worker", this_worker())
        return trial

    def _run(self, trial, run_trial) -> None:
        from optuna.trial import TrialState

        def should_prune(epoch, value):
            trial.report(value, epoch)
            return trial.should_prune()

        try:
            value = run_trial(trial, trial.number, should_prune)
        except TrialPruned:
            self.study.tell(trial, state=TrialState.PRUNED)
        except TrialFailed:
            self.study.tell(trial, state=TrialState.FAIL)
        except BaseException:  # Ctrl-C, SIGTERM or the failure cap: this trial failed, the sweep stops
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        else:
            self.study.tell(trial, value)
        gc.collect()

    def _slot_lock(self):
        if self.journal_path is None:
            return contextlib.nullcontext()  # an RDB storage: no lock across hosts
        # not journal.log.lock: that name is Optuna's own lock
        return file_lock(self.journal_path.with_name(self.journal_path.name + ".slots"))

    def _count_finished_and_running(self) -> tuple[int, int]:
        counts = self.counts()
        return counts["complete"] + counts["pruned"], counts["running"]

    def reap(self) -> list[int]:
        """Fail the running trials whose worker process died; retry each one's parameters once."""
        from optuna.trial import TrialState

        reaped = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if is_dead(trial.user_attrs.get("worker")):
                try:
                    self.study.tell(trial.number, state=TrialState.FAIL)
                except (RuntimeError, ValueError):
                    continue  # another worker reaped it first
                self.study.set_user_attr(f"reaped_{trial.number}", trial.user_attrs["worker"])
                if "retry_of" not in trial.user_attrs:
                    self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
                reaped.append(trial.number)
        return reaped

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
