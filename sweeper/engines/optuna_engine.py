"""Optuna: samplers, pruners and storages are Optuna's own; an `optuna.Trial` is the Suggester."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import time
import warnings
from pathlib import Path

from sweeper.domain.budget import TimeBudget
from sweeper.domain.choices import ENGINES
from sweeper.domain.errors import SweeperError, TrialAbandoned, UsageError
from sweeper.domain.places import OPTUNA_JOURNAL
from sweeper.domain.records import TrialOutcome, empty_counts, outcome_of
from sweeper.domain.space import signature_changes
from sweeper.domain.urls import mask, scrub
from sweeper.engines.base import Engine, EngineOptions, LastTrial, TrialFunction
from sweeper.runtime import interrupts
from sweeper.runtime.workers import file_lock, is_dead, this_worker

logger = logging.getLogger(__name__)
SPACE_ATTR = "search_space"  # study user attr: the space's signature, which joining workers must match
_POLL_SECONDS = 2.0


def _retry_once(study, trial):
    """Optuna's retry of a trial whose worker died: the same parameters once more (system attr failed_trial)."""
    import optuna

    with _quiet_warnings():
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, trial)



@contextlib.contextmanager
def _quiet_warnings():
    """Optuna's warnings about what sweeper does on purpose, kept to the block: features marked experimental
    (multivariate TPE, the retry callback), and heartbeats outside Study.optimize (sweeper runs the heartbeat
    thread around each trial itself: ask and tell keep the budget exact)."""
    import optuna

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


def _optuna_state(state: str):
    """A trial's outcome (other than complete) -> Optuna's TrialState."""
    from optuna.trial import TrialState

    return {"pruned": TrialState.PRUNED, "failed": TrialState.FAIL, "interrupted": TrialState.FAIL}[state]


def journal_path(url: str | None) -> Path | None:
    """The journal file a storage URL names (None for an RDB URL such as sqlite:// or postgresql://)."""
    if url and "://" in url:
        return None
    return (Path(url) if url else OPTUNA_JOURNAL).resolve()


def _existing_or_new_study(name: str, storage, directions: list[str]):
    """The study, read if it exists (Optuna's `load_if_exists` appends a creation to a journal first: a standby
    worker killed unused mid-append would tear it), else created."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True)


def make_storage(url: str | None, grace_period: int = 60):
    """Optuna storage for a URL: an RDB URL (sqlite://, postgresql://, ...) or a journal file path.

    Default: a journal file under ./mlruns, which several local processes share safely. On an RDB storage
    every running trial sends heartbeats; one silent for `grace_period` seconds (its worker was killed, on
    any host) is failed by the other workers and retried once with the same parameters.
    """
    import optuna

    path = journal_path(url)
    if path is None:
        try:
            return _storage_class()(
                url, heartbeat_interval=max(1, grace_period // 4), grace_period=grace_period,
                heartbeat_stale_trial_callback=_retry_once, engine_kwargs=_engine_kwargs(url, grace_period))
        except ImportError:
            raise SweeperError(f"the Optuna storage {mask(url)} needs a database driver that is not installed; "
                               f"for PostgreSQL: pip install 'sweeper[postgres]'") from None
        except Exception as exc:
            raise SweeperError(f"cannot open the Optuna storage {mask(url)}: {scrub(str(exc), url)}") from None
    from sweeper.engines.journal import SafeJournalFileBackend

    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(SafeJournalFileBackend(path))


@functools.cache
def _storage_class():
    import optuna

    class HeartbeatTolerantStorage(optuna.storages.RDBStorage):
        """A heartbeat that fails (the database ended a paused worker's session, a network blip) is skipped, not
        the end of the heartbeat thread with a traceback: the next beat tries again, and a worker silent for
        the whole grace period is failed by the others, as it should be."""

        def record_heartbeat(self, trial_id: int) -> None:
            try:
                super().record_heartbeat(trial_id)
            except optuna.exceptions.StorageInternalError:
                pass

    return HeartbeatTolerantStorage


def _engine_kwargs(url: str, grace_period: int) -> dict:
    """PostgreSQL ends a session left idle inside a transaction for half the grace period: a worker paused
    there (SIGSTOP, a laptop asleep) would otherwise hold its trial's row lock, and the workers failing that
    trial would wait for it."""
    if not url.startswith("postgresql"):
        return {}
    timeout_ms = max(2, grace_period // 2) * 1000
    return {"connect_args": {"options": f"-c idle_in_transaction_session_timeout={timeout_ms}"}}


@contextlib.contextmanager
def database_lock(url: str, study: str):
    """A lock that every worker of `study` takes in the database itself: PostgreSQL's advisory lock, or a
    file beside an SQLite database (one host). Other databases: none, so the budget may be passed by up
    to one trial per worker."""
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        with file_lock(Path(parsed.database).resolve().with_suffix(".slots")):
            yield
        return
    if parsed.get_backend_name() != "postgresql":
        yield
        return
    key = int.from_bytes(hashlib.sha256(f"sweeper:{study}".encode()).digest()[:8], "big", signed=True)
    engine = _lock_engine(url)
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()


@functools.lru_cache(maxsize=4)
def _lock_engine(url: str):
    import sqlalchemy

    return sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)


class _Replay:
    """A Suggester that answers with a known configuration and notes the distribution of each answer."""

    def __init__(self, params: dict):
        import optuna

        self.given, self.distributions, self._d = params, {}, optuna.distributions

    def _answer(self, name, distribution):
        self.distributions[name] = distribution
        return self.given[name]

    def suggest_int(self, name, low, high, *, step=1, log=False):
        return self._answer(name, self._d.IntDistribution(low, high, log=log, step=step))

    def suggest_float(self, name, low, high, *, step=None, log=False):
        return self._answer(name, self._d.FloatDistribution(low, high, log=log, step=step))

    def suggest_categorical(self, name, choices):
        return self._answer(name, self._d.CategoricalDistribution(choices))


def _complete_trial(space, params: dict, value: float):
    """A finished trial of `space` with these parameters and objective value, for `study.add_trial`."""
    import optuna

    replay = _Replay(params)
    space.sample(replay)  # fixed parameters are not Optuna's: only what was suggested is
    return optuna.trial.create_trial(params={name: params[name] for name in replay.distributions},
                                     distributions=replay.distributions, value=value, user_attrs={"warm_start": True})


class _OwnTrial:
    """The Suggester over an `optuna.Trial` that other workers may take away: any Optuna call on a trial that
    was failed meanwhile (UpdateFinishedTrialError, however the timing fell) abandons it."""

    def __init__(self, trial, abandoned, still_running):
        self.trial, self._abandoned, self._still_running = trial, abandoned, still_running

    @contextlib.contextmanager
    def _taken_away(self):
        from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError

        try:
            yield
        except UpdateFinishedTrialError:
            raise self._abandoned() from None
        except StorageInternalError:  # the database ended this paused worker's session: was the trial taken?
            if self._still_running():
                raise
            raise self._abandoned() from None

    def suggest_int(self, name, low, high, *, step=1, log=False):
        with self._taken_away():
            return self.trial.suggest_int(name, low, high, step=step, log=log)

    def suggest_float(self, name, low, high, *, step=None, log=False):
        with self._taken_away():
            return self.trial.suggest_float(name, low, high, step=step, log=log)

    def suggest_categorical(self, name, choices):
        with self._taken_away():
            return self.trial.suggest_categorical(name, choices)

    def report_and_ask(self, value: float, epoch: int) -> bool:
        """Report the epoch's objective; whether the pruner stops the trial here."""
        with self._taken_away():
            self.trial.report(value, epoch)
            return self.trial.should_prune()


class OptunaEngine(Engine):
    name = "optuna"
    algorithms, pruners = ENGINES["optuna"]

    def __init__(self, options: EngineOptions):
        super().__init__(options)
        space = options.space
        self.journal_path = journal_path(options.storage)
        import sqlalchemy

        try:
            with self.study_lock(), _quiet_warnings():  # workers starting together on a new store create it once
                self.study = _existing_or_new_study(options.study, make_storage(options.storage, options.grace_period),
                                                    [o.direction for o in space.objectives])
                self.is_new = not self.study.trials and SPACE_ATTR not in self.study.user_attrs
                if self.is_new:  # a new study tries the space's `start` configurations first
                    self.study.set_user_attr(SPACE_ATTR, space.signature())
                    for config in space.start:
                        self.study.enqueue_trial(dict(config), skip_if_exists=True)
                    for params, value in options.warm_start:
                        self.study.add_trial(_complete_trial(space, params, value))
        except sqlalchemy.exc.SQLAlchemyError as exc:  # the database refused us: say why, without a password
            reason = scrub(str(getattr(exc, "orig", None) or exc), options.storage).strip().splitlines()[0]
            raise SweeperError(f"cannot open the Optuna storage {mask(options.storage)}: {reason}") from None
        self._check_directions(space)
        changes = signature_changes(self.study.user_attrs.get(SPACE_ATTR, space.signature()), space.signature())
        if changes:
            raise UsageError(f"study '{options.study}' was created with another search space "
                             f"({'; '.join(changes)}); join it with the same space or use another --study")
        self._seed_sampler(len(self.study.trials))
        self.study.pruner = self._pruner(options.pruner or "median")
        self._reaped: list[int] = []

    def _seed_sampler(self, number: int) -> None:
        """A sampler seeded for the trial `number` asks next: a draw depends on the seed, the trial's number and
        the study's history only, so a sweep draws the same trials whether they ran in one process, a resumed one
        or a worker's replacement, a resumed study does not replay its first draws, and workers started together
        (offset by their index) do not draw the same trials."""
        with _quiet_warnings():
            self.study.sampler = self._sampler(self.options.algorithm or "tpe",
                                               self.options.seed + number + 7919 * self.options.worker)

    def _check_directions(self, space) -> None:
        created = [d.name.lower() for d in self.study.directions]
        asked = [o.direction for o in space.objectives]
        if len(created) != len(asked):
            raise UsageError(f"study '{self.options.study}' was created with {len(created)} objective(s), but "
                             f"the search space names {len(asked)}; use another --study")
        if created != asked:
            raise UsageError(f"study '{self.options.study}' was created to {' and '.join(created)} its "
                             f"objective, but the search space asks to {' and '.join(asked)}; use another --study")

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
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        raise ValueError(f"unknown algorithm {name!r} for optuna (the plan checks the choices)")

    def _pruner(self, name):
        import optuna

        if self.options.space.cost:  # Optuna prunes single-objective studies only
            return optuna.pruners.NopPruner()
        if name == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
        if name == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=self.options.space.max_epochs)
        if name == "none":
            return optuna.pruners.NopPruner()
        raise ValueError(f"unknown pruner {name!r} for optuna (the plan checks the choices)")

    def optimize(self, run_trial: TrialFunction, *, trials: int, budget: TimeBudget | None = None,
                 last_trial: LastTrial | None = None) -> int:
        """Ask, train, tell until the study holds `trials` finished trials, counted across every worker.

        A trial is asked only while finished + running trials are under the budget (under a lock that
        the workers of this machine share), so N workers end with exactly `trials` finished ones.
        """
        budget = budget or TimeBudget(None)
        ran, run_trial = 0, budget.timed(run_trial)
        last = False
        while not last and budget.may_start_trial():
            interrupts.check()  # no new trial once an interrupt arrived, wherever it landed
            self.reap()  # before each trial: a silent worker's trial is failed (and retried) as soon as can be
            with self.study_lock():
                finished, running = self._count_finished_and_running()
                trial = self._ask(running) if finished + running < trials else None
            if trial is not None:
                last = last_trial is not None and last_trial(ran)
                self._run(trial, run_trial)
                ran += 1
            elif finished >= trials:
                break
            else:  # the budget is taken by running trials; one of them may still fail and free a slot
                time.sleep(_POLL_SECONDS)
        return ran

    def _ask(self, running: int):
        if running:
            # Another worker is at work on this study: a run is no longer reproducible, and a worker started
            # by hand with the same seed would otherwise draw the same trials as this one.
            self.study.sampler.reseed_rng()
        else:
            self._seed_sampler(len(self.study.get_trials(deepcopy=False)))
        trial = self.study.ask()
        trial.set_user_attr("worker", this_worker())
        return trial

    def _run(self, trial, run_trial) -> None:
        from optuna.storages._heartbeat import get_heartbeat_thread  # what study.optimize runs around a trial

        heartbeats = self.journal_path is None
        own = _OwnTrial(trial, self._abandoned, lambda: self._still_running(trial.number))

        def should_prune(epoch, value):
            if heartbeats and not self._still_running(trial.number):
                raise self._abandoned()
            if value is None or self.options.space.cost:  # None: training ended, only the check above
                return False
            return own.report_and_ask(value, epoch)

        with get_heartbeat_thread(trial._trial_id, self.study._storage), _quiet_warnings():
            try:
                outcome = run_trial(own, trial.number, should_prune)
            except BaseException as exc:  # an interrupt, a full disk or the failure cap: the sweep stops
                self._end_stopped(trial, outcome_of(exc))
                raise
            self._tell(trial, outcome)

    def _tell(self, trial, outcome: TrialOutcome) -> None:
        """The trial's outcome in Optuna's words (skip_if_finished: another worker may have failed the trial
        meanwhile; Optuna then warns, not raises)."""
        if outcome.state == "abandoned":
            return  # already failed (and its retry queued) by the worker that found it silent
        if outcome.state == "complete":
            values = outcome.value if outcome.cost is None else [outcome.value, outcome.cost]
            self.study.tell(trial, values, skip_if_finished=True)
        else:
            self.study.tell(trial, state=_optuna_state(outcome.state), skip_if_finished=True)

    def _end_stopped(self, trial, outcome: TrialOutcome) -> None:
        """The trial running when the sweep stopped: failed; and when the stop was not the configuration's
        fault (an interrupt, a full disk), its parameters are queued to run again on resume."""
        from optuna.trial import TrialState

        interrupted = outcome.state == "interrupted"
        try:
            if interrupted:
                trial.set_user_attr("interrupted", "full disk" if outcome.error == "DiskFull" else "interrupt")
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            if interrupted:
                _retry_once(self.study, self.study.trials[trial.number])
        except Exception:
            pass

    def _abandoned(self) -> TrialAbandoned:
        return TrialAbandoned(f"failed by another worker after {self.options.grace_period} s without a heartbeat "
                              f"from this one (was this process paused?); its result is dropped")

    def _still_running(self, number: int) -> bool:
        from optuna.exceptions import StorageInternalError
        from optuna.trial import TrialState

        try:
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except StorageInternalError:  # a connection the database ended while this worker was paused: once more
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return any(t.number == number for t in running)

    def study_lock(self):
        """In the storage itself, so that workers on any host agree: never more trials than the budget, one
        parent run, one worker finishing the sweep."""
        if self.journal_path is not None:  # not journal.log.lock: that name is Optuna's own lock
            return file_lock(self.journal_path.with_name(self.journal_path.name + ".slots"))
        return database_lock(self.options.storage, self.options.study)

    def _count_finished_and_running(self) -> tuple[int, int]:
        counts = self.counts()
        return counts["complete"] + counts["pruned"], counts["running"]

    def reap(self) -> list[int]:
        """Fail the running trials whose worker process died (this host) or whose heartbeats stopped (an RDB
        storage, any host); retry each one's parameters once."""
        from optuna.trial import TrialState

        reaped = self._reap_silent() if self.journal_path is None else []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if is_dead(trial.user_attrs.get("worker")):
                try:
                    self.study.tell(trial.number, state=TrialState.FAIL)
                except (RuntimeError, ValueError):
                    continue  # another worker reaped it first
                self.study.set_user_attr(f"reaped_{trial.number}", trial.user_attrs["worker"])
                _retry_once(self.study, self.study.trials[trial.number])  # as the heartbeat check does
                reaped.append(trial.number)
        self._reaped += reaped
        return reaped

    def _reap_silent(self) -> list[int]:
        """Optuna's own check of the heartbeats; its callback queues the retry."""
        import optuna
        from optuna.trial import TrialState

        running = {t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        with _quiet_warnings():
            optuna.storages.fail_stale_trials(self.study)
        still = {t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        failed = {t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        return sorted((running - still) & failed)

    def running_elsewhere(self) -> int:
        """Running trials of the study, called when this process runs none: those of other workers."""
        return self.counts()["running"]

    def take_reaped(self) -> list[int]:
        taken, self._reaped = self._reaped, []
        return taken

    def finished_trials(self) -> int:
        from optuna.trial import TrialState

        return sum(not t.user_attrs.get("warm_start") for t in self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    @classmethod
    def study_exists(cls, options: EngineOptions) -> bool:
        path = journal_path(options.storage)
        if path is not None and not path.exists():
            return False
        storage = make_storage(options.storage, options.grace_period)
        return options.study in {study.study_name for study in storage.get_all_studies()}

    @classmethod
    def describe_storage(cls, options: EngineOptions) -> str:
        path = journal_path(options.storage)
        if path is None:
            return f"the Optuna storage {mask(options.storage)}"
        return f"the Optuna storage {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}"

    def delete_study(self) -> None:
        import optuna

        optuna.delete_study(study_name=self.options.study, storage=self.study._storage)
        where = self.describe_storage(self.options)[4:]
        logger.warning(f"deleted the Optuna study '{self.options.study}' from {where}")

    def top_values(self, k: int) -> list[float]:
        """The best first objectives (for two objectives too: the live display's "best") among the trials
        trained in this study (warm-start trials added by `sweeper refine` hold no model here)."""
        from optuna.trial import TrialState

        values = [t.values[0] for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if not t.user_attrs.get("warm_start")]
        return sorted(values, reverse=self.options.space.objective.direction == "maximize")[:k]

    def counts(self) -> dict[str, int]:
        from optuna.trial import TrialState

        counts = empty_counts()
        names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
                 TrialState.RUNNING: "running"}
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted"):
                counts["interrupted"] += 1
            elif trial.state in names:
                counts[names[trial.state]] += 1
        return counts
