"""Opening a store: the embedded SQLite file made whole or not at all, set aside when a first run left it
half-made, read without writing; a tracking server checked before MLflow's own minutes of retries."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sweeper.domain.errors import StoreError, TrackingError, disk_full
from sweeper.domain.places import MLFLOW_ARTIFACTS, MLFLOW_DB, user_cache
from sweeper.domain.urls import mask, scrub
from sweeper.runtime.interrupts import deferred
from sweeper.runtime.workers import file_lock

logger = logging.getLogger("sweeper.store")


def default_tracking_uri() -> str:
    """The embedded store, ./mlruns/mlflow.db, as an absolute URI (MLflow caches engines by URI)."""
    return f"sqlite:///{MLFLOW_DB.resolve()}"


def default_artifact_location(uri: str) -> str | None:
    """Where an SQLite store keeps its artifacts: the folder `artifacts` beside its database file (the embedded
    store's ./mlruns/artifacts), never MLflow's default, ./mlruns under whichever folder the first command ran in;
    None for a server or another database: the store's own choice."""
    database = sqlite_path(uri)
    return (database.resolve().parent / MLFLOW_ARTIFACTS.name).as_uri() if database is not None else None


def open_client(tracking_uri: str | None, *, create: bool = True) -> Any:
    """An MlflowClient on the given store (default: the embedded one under ./mlruns).

    A new SQLite store is created whole or not at all (see `_create_sqlite_store`); with `create=False` (the
    commands that only read) a missing one is an error, and an existing one is opened without writing
    anything, so a read-only store can be read.
    """
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        _check_server(uri)  # MLflow itself retries an unreachable server for minutes
    database = sqlite_path(uri)
    if database is not None:
        _check_sqlite_store(database, create)
    import mlflow  # after the checks: a new sweep asks whether a store exists before it starts its workers

    try:
        client = mlflow.MlflowClient(uri)
        client.search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingError(f"cannot open the MLflow store {mask(uri)}: {scrub(str(exc), uri)}") from None
    return client


@contextlib.contextmanager
def fluent(uri: str) -> Iterator[None]:
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


def is_read_only(uri: str) -> bool:
    """Whether this process cannot write to the store (a read-only mount, a file it may not change)."""
    database = sqlite_path(uri)
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
        where = f"here ({MLFLOW_DB})" if database == MLFLOW_DB.resolve() else f"at {database}"
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
    a Ctrl-C or a kill -9 meanwhile leaves no store rather than a broken one. Call it under the store's lock.
    The file is a copy of an empty store kept per MLflow version (`_empty_store`) when one can be kept."""
    import shutil

    for stale in database.parent.glob(f".{database.name}.new-*"):  # under the lock: left by a killed run
        stale.unlink(missing_ok=True)
    building = database.with_name(f".{database.name}.new-{os.getpid()}")
    try:
        empty = _empty_store()
        if empty is not None:
            shutil.copyfile(empty, building)
        else:
            _build_empty_store(building)
        with deferred():
            os.replace(building, database)
    finally:
        building.unlink(missing_ok=True)
        building.with_name(building.name + "-journal").unlink(missing_ok=True)


def _build_empty_store(path: Path) -> None:
    """An MLflow store with no run at `path`: MLflow's migrations, then its default experiment (its artifact
    location relative, `./mlruns/0`, so the file holds nothing of the folder it was made in)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    uri = f"sqlite:///{path}"
    SqlAlchemyStore(uri, "./mlruns").engine.dispose()
    SqlAlchemyStore._engine_map.pop(uri, None)


def _empty_store() -> Path | None:
    """An empty store of this MLflow's schema, made once per user and version under ~/.cache/sweeper (the
    migrations cost seconds on every first run otherwise); None when that folder cannot be written."""
    import mlflow

    cache = user_cache()
    empty = cache / f"mlflow-{mlflow.__version__}.db"
    try:
        if _readable_store(empty):
            return empty
        cache.mkdir(parents=True, exist_ok=True)
        with file_lock(cache / ".empty-store.lock"):
            if not _readable_store(empty):  # made by another process meanwhile
                for stale in cache.glob(f".{empty.name}.new-*"):  # left by a killed process
                    stale.unlink(missing_ok=True)
                building = cache / f".{empty.name}.new-{os.getpid()}"
                try:
                    _build_empty_store(building)
                    os.replace(building, empty)
                finally:
                    building.unlink(missing_ok=True)
                    building.with_name(building.name + "-journal").unlink(missing_ok=True)
    except (OSError, RuntimeError):  # RuntimeError: no home folder to be found
        return None
    return empty


def _readable_store(database: Path) -> bool:
    """Whether `database` is an SQLite file with MLflow's schema version recorded (a cheap check: reading the
    migrations to compare versions costs a second)."""
    import sqlite3

    if not database.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as db:
            return db.execute("SELECT version_num FROM alembic_version").fetchone() is not None
    except sqlite3.DatabaseError:
        return False


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


def store_lock(uri: str) -> contextlib.AbstractContextManager:
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


def no_study(study: str, uri: str, names: list[str]) -> TrackingError:
    known = ", ".join(names) if names else "none yet: run `sweeper search` first"
    return TrackingError(f"no study '{study}' in the MLflow store {mask(uri)}; studies: {known}")


def check_study_exists(tracking_uri: str | None, study: str, *, say_missing_store: bool = True) -> None:
    """Refuse, in a fraction of a second, a study that an embedded (SQLite) store does not hold, or a store that
    is not there (`say_missing_store`; else that is said as the study being absent): before MLflow (seconds to
    import) or TensorFlow is loaded. Other stores are checked when opened; so is an SQLite file this cannot
    read."""
    import sqlite3

    uri = tracking_uri or default_tracking_uri()
    database = sqlite_path(uri)
    if database is None:
        return
    if not database.exists():
        if not say_missing_store:
            raise no_study(study, uri, [])
        _check_sqlite_store(database, create=False)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as db:
            names = [name for name, in db.execute("SELECT name FROM experiments WHERE lifecycle_stage = 'active' "
                                                  "ORDER BY experiment_id")]
    except sqlite3.Error:
        return  # half-created, locked or not SQLite: opening the store says what is wrong
    if study not in names:
        raise no_study(study, uri, [name for name in names if name != "Default"])
