"""MLflow, and only MLflow: one experiment per study, a parent run per sweep, a nested run per trial.

The layout is a contract (see README, "What MLflow holds"):
- experiment = study name; experiment tags carry the dataset and the objective,
- parent run per sweep: started by `sweeper study create` or by the first `sweeper search`, joined by
  every worker (any host) that starts while it runs, ended by the last to finish; sweep settings as
  params, best trial as tags, test metrics, the best model as an MLflow model (signature + input
  example), registered under the study name,
- child run per trial: sampled params, per-epoch metrics with `step=epoch`, `final_*` metrics (the
  model the trial returns, i.e. its best epoch), tags backend, dataset, trial_number, state.
  complete -> FINISHED, pruned -> FINISHED (a normal outcome of a search, not a failure: the `state` tag tells),
  failed -> FAILED, interrupted -> KILLED; never RUNNING.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sweeper.domain.errors import StoreError, TrackingError, TrialAbandoned, TrialPruned, UsageError, disk_full
from sweeper.domain.space import signature_changes
from sweeper.domain.urls import mask, scrub
from sweeper.runtime.interrupts import deferred
from sweeper.runtime.workers import file_lock, is_dead, this_worker

STORE_DIR = Path("mlruns")
MODEL_ARTIFACT = "model/model.keras"  # a trial's model, on its trial run
FINAL_MODEL_ARTIFACT = "final_model/model.keras"  # the refit model, on the parent run
CHAMPION = "champion"
SPACE_TAG = "search_space"  # experiment tag: the space's signature as JSON
SPACE_ARTIFACT = "search_space.yaml"  # on each parent run: the space file it swept
SWEEP_TAG = "sweep_run_id"  # experiment tag: the parent run that every worker of the study's sweep joins
BUDGET_TAG = "budget"  # experiment tag (from `sweeper study create`): trials, max_epochs, patience as JSON
MLFLOW_PARENT_RUN_ID_TAG = "mlflow.parentRunId"
logger = logging.getLogger(__name__)
_STATUS = {"complete": "FINISHED", "pruned": "FINISHED", "failed": "FAILED", "interrupted": "KILLED",
           "abandoned": "KILLED"}


def default_tracking_uri() -> str:
    """The embedded store, ./mlruns/mlflow.db, as an absolute URI (MLflow caches engines by URI)."""
    return f"sqlite:///{(STORE_DIR / 'mlflow.db').resolve()}"


def _quiet_mlflow():
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # its "View run at" per run ended
    import mlflow  # noqa: F401 - configures its loggers on import; quiet them afterwards

    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # It logs every database error with its traceback before raising it; sweeper reports the error once.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def open_client(tracking_uri: str | None, *, create: bool = True):
    """An MlflowClient on the given store (default: the embedded one under ./mlruns).

    A new SQLite store is created whole or not at all (see `_create_sqlite_store`); with `create=False` (the
    commands that only read) a missing one is an error, and an existing one is opened without writing
    anything, so a read-only store can be read.
    """
    import mlflow

    _quiet_mlflow()
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        _check_server(uri)  # MLflow itself retries an unreachable server for minutes
    database = sqlite_path(uri)
    if database is not None:
        _check_sqlite_store(database, create)
    try:
        client = mlflow.MlflowClient(uri)
        client.search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingError(f"cannot open the MLflow store {mask(uri)}: {scrub(str(exc), uri)}") from None
    return client


@contextmanager
def fluent(uri: str):
    """MLflow's fluent API (start_run, log_model, models:/ URIs) on `uri` for the block only: the library sets
    no process-wide tracking URI, nor the MLFLOW_TRACKING_URI that MLflow exports with it."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    exported = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if exported is not None:
            os.environ["MLFLOW_TRACKING_URI"] = exported


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///PATH` store URI (None for a server or another database)."""
    if not uri.startswith("sqlite:///") or uri in ("sqlite://", "sqlite:///:memory:"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def describe_store(uri: str) -> str:
    """A store URI for messages: an SQLite file under this folder by its relative path, any other masked."""
    database = sqlite_path(uri)
    if database is not None and database.is_relative_to(Path.cwd()):
        return str(database.relative_to(Path.cwd()))
    return mask(uri)


def store_is_read_only(client) -> bool:
    """Whether this process cannot write to the client's store (a read-only mount, a file it may not change)."""
    database = sqlite_path(client.tracking_uri)
    return database is not None and _read_only(database)


def _read_only(database: Path) -> bool:
    return not (os.access(database, os.W_OK) and os.access(database.parent, os.W_OK))


def _check_sqlite_store(database: Path, create: bool) -> None:
    """Make a missing store (when asked), and set aside one that a first run left half-created."""
    broken = half_created(database) if database.exists() else None
    if database.exists() and broken is None:
        return
    if broken is not None and (not create or _read_only(database)):
        raise StoreError(f"the MLflow store {database} was left half-created by an interrupted first run ({broken}) "
                         f"and holds no runs; the next `sweeper search` here sets it aside and makes a fresh one "
                         f"(or: sweeper doctor --repair)")
    if not create:
        where = f"here ({STORE_DIR / 'mlflow.db'})" if database == (STORE_DIR / "mlflow.db").resolve() else \
            f"at {database}"
        raise TrackingError(f"no MLflow store {where}; run `sweeper search` in this folder first, or give "
                            f"--tracking-uri")
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(_lock_path(database)):  # processes starting together on a new store make it once
            if database.exists() and half_created(database) is not None:
                aside = set_aside(database, "half-created")
                logger.warning(f"the MLflow store {database} was left half-created by an interrupted first run and "
                               f"held no runs; set it aside as {aside.name} and made a fresh one")
            if not database.exists():
                _create_sqlite_store(database)
    except OSError as exc:
        raise disk_full(exc, str(database)) or TrackingError(
            f"cannot create the MLflow store {database}: {exc.strerror or exc}") from None


def _create_sqlite_store(database: Path) -> None:
    """MLflow's schema (dozens of migrations, seconds) is built in a file of its own, then renamed into place:
    a Ctrl-C or a kill -9 meanwhile leaves no store rather than a broken one. Call it under the store's lock."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for stale in database.parent.glob(f".{database.name}.new-*"):  # under the lock: left by a killed run
        stale.unlink(missing_ok=True)
    building = database.with_name(f".{database.name}.new-{os.getpid()}")
    uri = f"sqlite:///{building}"
    try:
        SqlAlchemyStore(uri, "./mlruns").engine.dispose()
        SqlAlchemyStore._engine_map.pop(uri, None)
        with deferred():
            os.replace(building, database)
    finally:
        building.unlink(missing_ok=True)
        building.with_name(building.name + "-journal").unlink(missing_ok=True)


def half_created(database: Path) -> str | None:
    """What is wrong with a store whose schema an interrupted run left unfinished and that holds no run (None
    when it is whole, or holds runs: those are never set aside)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as db:
            tables = {name for name, in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "runs" in tables and db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]:
                return None
            leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp"))
            if leftovers:
                return f"table {leftovers[0]} left over from a migration"
            version = None
            if "alembic_version" in tables:
                row = db.execute("SELECT version_num FROM alembic_version").fetchone()
                version = row and row[0]
    except sqlite3.DatabaseError as exc:
        return f"not an SQLite database: {exc}"
    head = _schema_head()
    if version != head:
        return f"schema version {version or 'none'}, expected {head}"
    return None


@functools.lru_cache(maxsize=1)
def _schema_head() -> str:
    """The schema version this MLflow's migrations end at."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    return ScriptDirectory.from_config(_get_alembic_config("sqlite://")).get_current_head()


def set_aside(path: Path, why: str) -> Path:
    """Rename a file that cannot be used as it is to PATH.WHY-TIMESTAMP beside it, with its SQLite journal files
    (a hot journal left beside a new database would be rolled back into it); returns the new path."""
    aside = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    for suffix in ("-journal", "-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.replace(companion, aside.with_name(aside.name + suffix))
    return aside


def _lock_path(database: Path) -> Path:
    return database.with_name(f".{database.name}.lock")


def store_lock(uri: str):
    """A lock between this machine's processes on an SQLite store (a server serialises on its own)."""
    database = sqlite_path(uri)
    if database is None:
        return contextlib.nullcontext()
    return file_lock(_lock_path(database))


def _check_server(uri: str) -> None:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"cannot reach the MLflow tracking server {mask(uri)}: {reason}; start it, or leave "
                            f"out --tracking-uri to use the embedded store") from None


@dataclass
class BestRun:
    run_id: str
    trial_number: int
    objective: float
    params: dict
    metrics: dict


class TrialRecorder:
    """What a running trial writes to its own child run."""

    def __init__(self, client, run_id):
        self.client, self.run_id = client, run_id

    def log_epoch(self, epoch: int, logs: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with deferred():  # a Ctrl-C in mid-write would leave the SQLite store locked for the trial's last words
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in logs.items()])

    def log_result(self, result) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        final = {f"final_{k}": v for k, v in result.metrics.items()}
        final.update(objective=result.objective, best_epoch=result.best_epoch, epochs=result.epochs,
                     train_seconds=result.seconds)
        with deferred():
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in final.items()])

    def log_metrics(self, metrics: dict) -> None:
        with deferred():
            log_metrics(self.client, self.run_id, metrics)

    def log_train_seconds(self, seconds: float | None) -> None:
        """Time in fit of a trial that ends without a result (pruned), so that sweeps can be costed."""
        if seconds is not None:
            self.client.log_metric(self.run_id, "train_seconds", float(seconds))

    def log_model(self, model) -> None:
        """Keep this trial's trained model (done for trials that beat the study's best)."""
        _log_keras(self.client, self.run_id, model, MODEL_ARTIFACT)
        self.client.set_tag(self.run_id, "has_model", "true")


def _log_keras(client, run_id: str, model, artifact: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact).name
        model.save(path)
        try:
            client.log_artifact(run_id, str(path), artifact_path=str(Path(artifact).parent))
        except OSError as exc:  # MLflow's copy names no file: say where the model was going
            full = disk_full(exc, _artifact_place(client, run_id, artifact))
            if full is None:
                raise
            raise full from exc


def _artifact_place(client, run_id: str, artifact: str) -> str:
    """Where a run's artifact lives, for messages (a path relative to this folder when it is under it)."""
    from urllib.parse import urlparse

    uri = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact}"
    if not uri.startswith("file:"):
        return uri
    place = Path(urlparse(uri).path)
    return str(place.relative_to(Path.cwd())) if place.is_relative_to(Path.cwd()) else str(place)


class Tracker:
    """One search's view of the store: its experiment, its parent run, its trials."""

    def __init__(self, study: str, tracking_uri: str | None = None):
        self.study = study
        self.client = open_client(tracking_uri)
        self.uri = tracking_uri or default_tracking_uri()
        self.experiment = self._existing_experiment()  # created by start_search: refusals write nothing
        self.experiment_id = self.experiment.experiment_id if self.experiment else None
        self.parent_id = None
        self.base_tags = {}
        self.joined = False  # True when this process attached to a sweep run that another one started

    def _existing_experiment(self):
        found = self.client.get_experiment_by_name(self.study)
        if found is not None and found.lifecycle_stage == "deleted":
            raise TrackingError(f"the MLflow experiment '{self.study}' was deleted; restore it "
                                f"(mlflow experiments restore) or choose another --study")
        return found

    def _create_experiment(self) -> str:
        location = None
        if self.uri == default_tracking_uri():
            location = (STORE_DIR / "artifacts").resolve().as_uri()
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.study)  # another worker may have just created it
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.study, artifact_location=location)
        except MlflowException:  # a worker on another host won the race (a server serialises, we cannot lock)
            found = self.client.get_experiment_by_name(self.study)
            if found is None:
                raise
            return found.experiment_id

    def check_study(self, space_signature: dict | None = None, **expected) -> None:
        """Refuse to add a search to a study recorded with another engine, dataset, objective or space."""
        tags = self.experiment.tags if self.experiment else {}
        for key, value in expected.items():
            if key in tags and tags[key] != value:
                raise UsageError(f"study '{self.study}' was recorded with {key.replace('_', ' ')} {tags[key]}, "
                                 f"but this search has {value}; resume it with the same settings or choose "
                                 f"another --study")
        if space_signature is not None and SPACE_TAG in tags:
            changes = signature_changes(json.loads(tags[SPACE_TAG]), space_signature)
            if changes:
                raise UsageError(f"study '{self.study}' was run with another search space ({'; '.join(changes)}); "
                                 f"resume it with the same space or choose another --study")

    def open_search(self, *, params: dict, tags: dict, experiment_tags: dict, shared: bool = False) -> bool:
        """Attach to the study's running sweep run (one parent per sweep, however many workers on however
        many hosts), or start one. Call it under the study's lock so that workers starting together make
        one parent. `shared`: the run belongs to no process (`sweeper study create`). Returns whether it
        joined a running one."""
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        with store_lock(self.uri):  # MLflow's tag upsert races between processes on SQLite
            self.experiment_id = self.experiment_id or self._create_experiment()
            for key, value in experiment_tags.items():
                _retry_once(self.client.set_experiment_tag, self.experiment_id, key, str(value))
        self.base_tags = {**{k: str(v) for k, v in tags.items()}, "worker": this_worker()}
        current = self._running_sweep()
        if current is not None:
            self.parent_id, self.joined = current, True
            return True
        owner = {"worker": "", "created_by": this_worker(), "shared": "true"} if shared else {}
        run_name = time.strftime("search-%Y%m%d-%H%M%S")
        run = self.client.create_run(self.experiment_id, tags={**self.base_tags, **owner, MLFLOW_RUN_NAME: run_name,
                                                               "run_kind": "search"})
        self.parent_id = run.info.run_id
        self._log_params(self.parent_id, params)
        _retry_once(self.client.set_experiment_tag, self.experiment_id, SWEEP_TAG, self.parent_id)
        return False

    def log_probe(self, kind: str, *, params: dict, metrics: dict, series: dict[str, list[float]],
                  artifact: Path) -> str:
        """A finished run of its own (`run_kind` = kind, e.g. lr-find) in the study's experiment: params,
        metrics, per-step series (step = index) and one file."""
        from mlflow.entities import Metric
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        with store_lock(self.uri):
            self.experiment_id = self.experiment_id or self._create_experiment()
        run_name = time.strftime(f"{kind}-%Y%m%d-%H%M%S")
        run_id = self.client.create_run(self.experiment_id, tags={"run_kind": kind, "worker": this_worker(),
                                                                  MLFLOW_RUN_NAME: run_name}).info.run_id
        self._log_params(run_id, params)
        now = int(time.time() * 1000)
        points = [Metric(name, float(v), now, step) for name, values in series.items() for step, v in enumerate(values)]
        points += [Metric(name, float(v), now, 0) for name, v in metrics.items()]
        for i in range(0, len(points), 1000):
            self.client.log_batch(run_id, metrics=points[i:i + 1000])
        self.client.log_artifact(run_id, str(artifact))
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def _running_sweep(self) -> str | None:
        return running_sweep(self.client, self.client.get_experiment(self.experiment_id))

    def trial_run_count(self) -> int:
        """How many trial runs MLflow holds for the study."""
        if self.experiment_id is None:
            return 0
        return len(self.client.search_runs([self.experiment_id], "tags.run_kind = 'trial'", max_results=50_000))

    def last_search(self):
        """The study's latest sweep run (None before the first)."""
        if self.experiment_id is None:
            return None
        return latest_search(self.client, self.client.get_experiment(self.experiment_id))

    def set_study_aside(self) -> str:
        """Rename the study's experiment to STUDY-set-aside-TIMESTAMP and delete it (restorable with `mlflow
        experiments restore`), so that the study starts afresh under its name; returns the new name."""
        aside = f"{self.study}-set-aside-{time.strftime('%Y%m%d-%H%M%S')}"
        with store_lock(self.uri):
            self.client.rename_experiment(self.experiment_id, aside)
            self.client.delete_experiment(self.experiment_id)
        logger.warning(f"set the MLflow runs of study '{self.study}' aside: experiment '{aside}' (deleted; "
                       f"`mlflow experiments restore` brings it back)")
        self.experiment, self.experiment_id = None, None
        return aside

    def recorded_budget(self) -> dict:
        """The budget `sweeper study create` recorded for the study's workers ({} for a study it did not make)."""
        tags = self.experiment.tags if self.experiment else {}
        return json.loads(tags[BUDGET_TAG]) if BUDGET_TAG in tags else {}

    def claim_finish(self) -> bool:
        """Whether this process is the one to evaluate, register and end the sweep run (call under the
        study's lock, once no trial of the study runs): the first worker to ask is."""
        if "finished_by" in self.client.get_run(self.parent_id).data.tags:
            return False
        self.client.set_tag(self.parent_id, "finished_by", this_worker())
        return True

    def join_search(self, parent_id: str, tags: dict) -> None:
        """Record trials under a search run that another process started (a `--jobs` worker)."""
        self.parent_id = parent_id
        self.experiment_id = self.client.get_run(parent_id).info.experiment_id
        self.base_tags = {**{k: str(v) for k, v in tags.items()}, "worker": this_worker()}

    def _log_params(self, run_id, params):
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    @contextmanager
    def trial_run(self, number: int, params: dict, tags: dict | None = None):
        """A child run for one trial, ended with the status its outcome deserves."""
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

        tags = {**self.base_tags, **{k: str(v) for k, v in (tags or {}).items()}, MLFLOW_PARENT_RUN_ID: self.parent_id,
                MLFLOW_RUN_NAME: f"trial-{number:03d}",
                "trial_number": str(number), "state": "running", "run_kind": "trial"}
        with deferred():
            run_id = self.client.create_run(self.experiment_id, tags=tags).info.run_id
            self._log_params(run_id, params)
        try:
            yield TrialRecorder(self.client, run_id)
        except TrialPruned as exc:
            self._end_trial(run_id, "pruned", str(exc))
            raise
        except TrialAbandoned as exc:
            self._end_trial(run_id, "abandoned", str(exc))
            raise
        except KeyboardInterrupt:
            self._end_trial(run_id, "interrupted", "interrupted by the user")
            raise
        except BaseException as exc:
            full = disk_full(exc)
            if full is None:
                self._end_trial(run_id, "failed", f"{type(exc).__name__}: {exc}")
                raise
            with contextlib.suppress(Exception):  # the full disk may refuse this write too: then the next
                self._end_trial(run_id, "interrupted", str(full))  # sweep reaps the run (its worker is gone)
            raise
        else:
            self._end_trial(run_id, "complete")

    def reap_dead_runs(self) -> int:
        """End the RUNNING runs of this study whose worker process died (MLflow never does): a trial as
        FAILED; a search as KILLED, unless live workers still run trials under it. Returns how many."""
        if self.experiment_id is None:
            return 0
        running = self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
        trials = [run for run in running if run.data.tags.get("run_kind") == "trial"]
        dead_trials = [run for run in trials if is_dead(run.data.tags.get("worker"))]
        for run in dead_trials:
            self._end_trial(run.info.run_id, "failed", f"its worker process ({run.data.tags['worker']}) died")
        ended = {run.info.run_id for run in dead_trials}
        in_use = {run.data.tags.get(MLFLOW_PARENT_RUN_ID_TAG) for run in trials if run.info.run_id not in ended}
        dead_searches = [run for run in running if run.data.tags.get("run_kind") == "search"
                         and is_dead(run.data.tags.get("worker")) and run.info.run_id not in in_use]
        for run in dead_searches:
            self.client.set_tag(run.info.run_id, "state_reason", f"its worker process ({run.data.tags['worker']}) died")
            self.client.set_terminated(run.info.run_id, "KILLED")
            self._fail_pending_models(run.info.run_id)
        return len(dead_trials) + len(dead_searches)

    def _fail_pending_models(self, run_id: str) -> None:
        """A model whose logging a kill cut short stays PENDING in MLflow: mark it FAILED."""
        from mlflow.entities import LoggedModelStatus

        for model in self.client.search_logged_models([self.experiment_id], f"source_run_id = '{run_id}'"):
            if model.status == LoggedModelStatus.PENDING:
                self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)

    def end_trial_runs(self, numbers, note: str) -> None:
        """End as FAILED the still-running MLflow runs of these trials, failed in the study because their
        worker went silent (on any host), and as KILLED that worker's search run."""
        for number in numbers if self.experiment_id else ():
            query = f"tags.run_kind = 'trial' and tags.trial_number = '{number}' and attributes.status = 'RUNNING'"
            for run in self.client.search_runs([self.experiment_id], query):
                self._end_trial(run.info.run_id, "failed", note)
                self._end_silent_search(run, note)

    def _end_silent_search(self, trial_run, note: str) -> None:
        search_id = trial_run.data.tags.get(MLFLOW_PARENT_RUN_ID_TAG, "")
        if search_id == self.parent_id:  # the sweep run this process works under: the silent worker joined it
            return
        search = self.client.get_run(search_id)
        if search.info.status == "RUNNING" and search.data.tags.get("worker") == trial_run.data.tags.get("worker"):
            self.client.set_tag(search.info.run_id, "state_reason", note)
            self.client.set_terminated(search.info.run_id, "KILLED")

    def _end_trial(self, run_id, state, note=None):
        self.client.set_tag(run_id, "state", state)
        if note:
            self.client.set_tag(run_id, "state_reason", note[:4000])
        self.client.set_terminated(run_id, _STATUS[state])

    def end_search(self, status: str, *, metrics: dict | None = None, tags: dict | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if metrics:
            self.client.log_batch(self.parent_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        for key, value in (tags or {}).items():
            self.client.set_tag(self.parent_id, key, str(value))
        self.client.set_terminated(self.parent_id, status)

    def log_final_model(self, model, refit_epochs: int, trial_run_id: str) -> None:
        """Keep the refit model on the parent run as a `.keras` file too (what `sweeper export --retrain` reuses)."""
        log_refit_model(self.client, self.parent_id, model, refit_epochs, trial_run_id)

    def log_best_model(self, model, example, *, registered_from: str, metadata: dict | None = None) -> str | None:
        """Log the model on the parent run as an MLflow model and register it under the study's name.

        A new registry version is made only when the study's best trial changed since the last one;
        the alias `champion` points at the version holding the study's best model. Returns that version.
        """
        import keras
        import mlflow
        from mlflow.models import infer_signature

        keras.config.disable_interactive_logging()  # no predict() progress bars from MLflow's checks
        signature = infer_signature(example, model.predict(example, verbose=0))
        with tempfile.TemporaryDirectory() as tmp, fluent(self.uri), \
                mlflow.start_run(run_id=self.parent_id, experiment_id=self.experiment_id):
            saved = Path(tmp) / "model.keras"
            model.save(saved)
            info = mlflow.pyfunc.log_model(name="model", python_model=str(Path(__file__).with_name("mlflow_model.py")),
                                           artifacts={"keras_model": str(saved)}, signature=signature,
                                           input_example=example, pip_requirements=_requirements(),
                                           metadata={"sweeper": metadata or {}})
        return self._register(info, registered_from)

    def _register(self, info, trial_run_id) -> str:
        with store_lock(self.uri), fluent(self.uri):  # workers ending together register one version; a
            return self._register_locked(info, trial_run_id)  # models:/ source resolves in this store

    def _register_locked(self, info, trial_run_id) -> str:
        from mlflow.exceptions import MlflowException

        client = self.client
        try:
            client.get_registered_model(self.study)
        except MlflowException:
            try:
                client.create_registered_model(self.study,
                                               description=f"Best model of the sweeper study '{self.study}'")
            except MlflowException:  # a worker on another host created it meanwhile
                client.get_registered_model(self.study)
        # One version per best trial: a sweep killed between making the version and moving the alias left one.
        versions = [v for v in client.search_model_versions(f"name = '{self.study}'")
                    if v.tags.get("trial_run_id") == trial_run_id]
        version = versions[0].version if versions else client.create_model_version(
            self.study, info.model_uri, run_id=self.parent_id, tags={"trial_run_id": trial_run_id},
            model_id=info.model_id).version
        client.set_registered_model_alias(self.study, CHAMPION, version)
        return version


def _retry_once(call, *args):
    """Some MLflow writes are upserts that race between hosts writing the same key; the second try finds
    the row the other host made."""
    from mlflow.exceptions import MlflowException

    try:
        call(*args)
    except MlflowException:
        time.sleep(0.5)
        call(*args)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"keras=={version('keras')}", f"tensorflow=={version('tensorflow-cpu')}"]


# -- reading a study back --------------------------------------------------------------------------

def find_experiment(client, study: str):
    experiment = client.get_experiment_by_name(study)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        names = [e.name for e in client.search_experiments() if e.name != "Default"]
        raise _no_study(study, client.tracking_uri, names)
    return experiment


def latest_search(client, experiment):
    """The study's latest sweep run (None before the first)."""
    found = client.search_runs([experiment.experiment_id], "tags.run_kind = 'search'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None


def recorded_space(client, experiment):
    """The search space the study swept, from the copy on its latest sweep run that has one (None for a study
    older than those copies)."""
    from sweeper.domain.space import parse_space, yaml_lines

    searches = client.search_runs([experiment.experiment_id], "tags.run_kind = 'search'",
                                  order_by=["attributes.start_time DESC"], max_results=100)
    for search in searches:
        if SPACE_ARTIFACT in [a.path for a in client.list_artifacts(search.info.run_id)]:
            with tempfile.TemporaryDirectory() as tmp:
                text = Path(client.download_artifacts(search.info.run_id, SPACE_ARTIFACT, tmp)).read_text("utf-8")
            return parse_space(yaml_lines.load(text, path=SPACE_ARTIFACT),
                               path=f"{experiment.name}'s {SPACE_ARTIFACT}")
    return None


def running_sweep(client, experiment) -> str | None:
    """The id of the study's sweep run while it runs (workers join it), else None."""
    run_id = experiment.tags.get(SWEEP_TAG)
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:  # deleted by hand
        return None
    return run_id if run.info.status == "RUNNING" and run.info.lifecycle_stage == "active" else None


def _no_study(study: str, uri: str, names: list[str]) -> TrackingError:
    known = ", ".join(names) if names else "none yet: run `sweeper search` first"
    return TrackingError(f"no study '{study}' in the MLflow store {mask(uri)}; studies: {known}")


def check_study_exists(tracking_uri: str | None, study: str) -> None:
    """Refuse, in a fraction of a second, a study that an embedded (SQLite) store does not hold, or a store that
    is not there: before MLflow (seconds to import) or TensorFlow is loaded. Other stores are checked when
    opened; so is an SQLite file this cannot read."""
    import sqlite3

    uri = tracking_uri or default_tracking_uri()
    database = sqlite_path(uri)
    if database is None:
        return
    if not database.exists():
        _check_sqlite_store(database, create=False)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as db:
            names = [name for name, in db.execute("SELECT name FROM experiments WHERE lifecycle_stage = 'active' "
                                                  "ORDER BY experiment_id")]
    except sqlite3.Error:
        return  # half-created, locked or not SQLite: opening the store says what is wrong
    if study not in names:
        raise _no_study(study, uri, [name for name in names if name != "Default"])


def trial_runs(client, experiment, *, state: str | None = None, limit: int = 1000):
    """Trial runs of an experiment, best objective first."""
    direction = experiment.tags.get("objective_direction", "maximize")
    order = "DESC" if direction == "maximize" else "ASC"
    query = "tags.run_kind = 'trial'" + (f" and tags.state = '{state}'" if state else "")
    return client.search_runs([experiment.experiment_id], filter_string=query,
                              order_by=[f"metrics.objective {order}"], max_results=limit)


def pareto_runs(client, experiment, cost_metric: str) -> list:
    """The complete trial runs no other complete run beats on both the objective and `cost_metric` (lower is
    better), cheapest first."""
    maximize = experiment.tags.get("objective_direction", "maximize") == "maximize"
    runs = [r for r in trial_runs(client, experiment, state="complete", limit=50_000)
            if "objective" in r.data.metrics and cost_metric in r.data.metrics]

    def score(run):  # both to be minimised
        objective = run.data.metrics["objective"]
        return (-objective if maximize else objective, run.data.metrics[cost_metric])

    front = [r for r in runs if not any(_dominates(score(o), score(r)) for o in runs)]
    return sorted(front, key=lambda r: score(r)[::-1])


def _dominates(a: tuple, b: tuple) -> bool:
    return all(x <= y for x, y in zip(a, b)) and a != b


def smallest_within(client, study: str, best: BestRun, margin: float) -> BestRun:
    """The complete trial with a model and the fewest parameters whose objective is within `margin` of
    `best`'s (`sweeper export --pick smallest-within MARGIN`)."""
    experiment = find_experiment(client, study)
    maximize = experiment.tags.get("objective_direction", "maximize") == "maximize"
    close = [r for r in trial_runs(client, experiment, state="complete", limit=50_000)
             if r.data.tags.get("has_model") == "true" and "param_count" in r.data.metrics
             and (best.objective - r.data.metrics["objective"] if maximize
                  else r.data.metrics["objective"] - best.objective) <= margin]
    if not close:
        return best  # trials from before parameter counts were recorded
    return _best_run(min(close, key=lambda r: (r.data.metrics["param_count"], -r.data.metrics["objective"]
                                               if maximize else r.data.metrics["objective"])))


def best_run(client, study: str) -> BestRun:
    """The study's best completed trial that has a model, from the MLflow store alone."""
    experiment = find_experiment(client, study)
    for run in trial_runs(client, experiment, state="complete", limit=50):
        if run.data.tags.get("has_model") == "true":
            return _best_run(run)
    raise TrackingError(f"study '{study}' has no completed trial with a model yet")


def _best_run(run) -> BestRun:
    return BestRun(run.info.run_id, int(run.data.tags["trial_number"]), run.data.metrics["objective"],
                   dict(run.data.params), dict(run.data.metrics))


def parse_param(text: str):
    """A param as MLflow stores it (text) back to the number or flag it was."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(text, text)


def load_run_model(client, run_id: str, artifact: str = MODEL_ARTIFACT):
    """Download a run's `.keras` model and load it."""
    import keras

    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, artifact, tmp)
        return keras.saving.load_model(path, safe_mode=True)


def learning_rates(client, run_id: str) -> dict[int, float]:
    """A trial's learning rate per epoch (1-based), as its plateau schedule logged it."""
    return {m.step: m.value for m in client.get_metric_history(run_id, "learning_rate")}


def metric_histories(client, run_id: str, names) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch values of the named metrics of a run, `name: [(epoch, value), ...]`, for those it logged."""
    histories = {name: sorted((m.step, m.value) for m in client.get_metric_history(run_id, name)) for name in names}
    return {name: points for name, points in histories.items() if points}


def log_refit_model(client, run_id: str, model, refit_epochs: int, trial_run_id: str) -> None:
    """Keep a model retrained from trial `trial_run_id`'s configuration on `run_id`, findable by refit_run."""
    _log_keras(client, run_id, model, FINAL_MODEL_ARTIFACT)
    client.set_tag(run_id, "refit_epochs", str(refit_epochs))
    client.set_tag(run_id, "refit_of", trial_run_id)


def refit_run(client, experiment, best: BestRun):
    """The latest run holding a model retrained from `best`'s configuration (by a search or an export), or None."""
    found = client.search_runs([experiment.experiment_id], f"tags.refit_of = '{best.run_id}'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None


def start_retrain_run(client, experiment, best: BestRun) -> str:
    """A run for a retraining done by `sweeper export --retrain`, under the search that ran the trial."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    trial = client.get_run(best.run_id)
    tags = {"run_kind": "retrain", "worker": this_worker(), MLFLOW_RUN_NAME: f"retrain-trial-{best.trial_number:03d}",
            MLFLOW_PARENT_RUN_ID: trial.data.tags.get(MLFLOW_PARENT_RUN_ID, "")}
    return client.create_run(experiment.experiment_id, tags=tags).info.run_id


def log_metrics(client, run_id: str, metrics: dict) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])


def log_folder(client, run_id: str, folder: Path, artifact_path: str) -> None:
    client.log_artifacts(run_id, str(folder), artifact_path=artifact_path)
