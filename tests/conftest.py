"""Shared fixtures: real data slices, a real MLflow store and Optuna journal in temporary folders."""

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from sweeper.domain.choices import KERAS_BACKENDS

# The tests train on the backend the command line trains on by default, a space's `keras_backend` included
# (set before anything imports Keras or sweeper's set-up reads who chose it); `KERAS_BACKEND=jax make test` runs the
# whole suite on the other one.
os.environ.setdefault("KERAS_BACKEND", KERAS_BACKENDS[0])

from sweeper.cli import main

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"
#: a few hundred real Fashion-MNIST images, 2 epochs: the real stack, in seconds
SMALL = ["--subset", "300", "--max-epochs", "2", "--patience", "1"]


def sweeper(*args, cwd=None):
    """Run the CLI in-process (CliRunner); the embedded store lands in `cwd`."""
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which `--tracking-uri` reads: one in-process
    # command must not hand its store to the next (a real command is a fresh process).
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    old = os.getcwd()
    os.chdir(cwd or old)
    try:
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.chdir(old)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No network; and no MLFLOW_TRACKING_URI left by one test (MLflow exports it) for the next one's commands."""
    monkeypatch.setenv("SWEEPER_OFFLINE", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


_STARTED = []  # processes a test started, killed at its end if they still run


def outlived_by_nothing(process):
    """`process`, killed when the test that started it ends, if it still runs: a failed assertion would otherwise
    leave a sweep training in the background, taking the cores of the tests after it."""
    _STARTED.append(process)
    return process


@pytest.fixture(autouse=True)
def _kill_what_the_test_left_running():
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            process.kill()  # a sweep's workers end with it (their parent-death signal)
            process.wait()


def here(workdir, *args):
    """`sweeper ARGS` in `workdir`, in this process, read as a finished subprocess (returncode, stdout, stderr):
    for the steps of a fault test that need no process of their own (a setup sweep, a resume, a read)."""
    import subprocess

    result = sweeper(*args, cwd=workdir)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def _run_folder(tmp_path_factory) -> Path:
    """The whole test run's folder, shared by its pytest-xdist workers (each has its own below it)."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def once_per_run(tmp_path_factory, name, build):
    """`build(folder)` once for the whole test run however many pytest-xdist workers ask for it: the first to
    ask builds it under a lock, the others wait and reuse it. Returns (folder, what `build` returned as JSON)."""
    import json
    import shutil

    from sweeper.runtime.workers import file_lock

    root = _run_folder(tmp_path_factory)
    folder, built = root / name, root / f"{name}.json"
    with file_lock(root / f"{name}.lock"):
        if not built.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed build by another worker left
            folder.mkdir()
            built.write_text(json.dumps(build(folder)))
    return folder, json.loads(built.read_text())


def stop_at_the_end(tmp_path_factory, command: list[str]) -> None:
    """Run `command` when the whole test run ends (after every pytest-xdist worker): a service that
    `once_per_run` started for all of them outlives the worker that started it."""
    import json

    with open(_run_folder(tmp_path_factory) / "stop-at-the-end.jsonl", "a") as commands:
        commands.write(json.dumps(command) + "\n")


def pytest_sessionfinish(session):
    """The controller (or a run without workers) stops what `stop_at_the_end` was given, last started first."""
    import json
    import subprocess

    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    commands = _run_folder(session.config._tmp_path_factory) / "stop-at-the-end.jsonl"
    if commands.exists():
        for line in reversed(commands.read_text().splitlines()):
            subprocess.run(json.loads(line), capture_output=True)
        commands.unlink()


@pytest.fixture(scope="session")
def fashion_study(tmp_path_factory):
    """One real sweep shared by the read-only tests (of every pytest worker): 3 trials on 300 Fashion-MNIST images,
    its final model the best trial's alone (averaged final models: tests/test_ensemble.py). Yields the folder and
    the command's result (exit_code, output)."""
    from types import SimpleNamespace

    def build(workdir):
        result = sweeper("search", "fashion", "--trials", 3, *SMALL, "--pruner", "none", "--ensemble", 1,
                         cwd=workdir)
        assert result.exit_code == 0, result.output
        return {"exit_code": result.exit_code, "output": result.output}

    workdir, result = once_per_run(tmp_path_factory, "fashion-study", build)
    return workdir, SimpleNamespace(**result)


@pytest.fixture
def store(fashion_study):
    """An MlflowClient on the shared study's embedded store."""
    import mlflow

    workdir, _ = fashion_study
    return mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")


def write_space(path, text):
    path.write_text(text)
    return path


#: A password with every character a URL must escape, as users' passwords have.
PG_PASSWORD = "p@ss:w/rd%1"


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pg_bin(name):
    """A PostgreSQL program: on PATH, else Debian's newest /usr/lib/postgresql/N/bin (None if neither)."""
    import glob
    import shutil

    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return shutil.which(name) or (candidates[-1] if candidates else None)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A throwaway PostgreSQL cluster on 127.0.0.1 (initdb + pg_ctl on a free port, as the postgres user when
    run as root), started once for every pytest worker and stopped when the run ends; yields (host, port, user,
    password)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (make test installs Debian's postgresql package)")
    _, started = once_per_run(tmp_path_factory, "postgres", lambda _: _start_postgres(tmp_path_factory, initdb, pg_ctl))
    return tuple(started)


def _start_postgres(tmp_path_factory, initdb, pg_ctl):
    import getpass
    import subprocess
    import tempfile

    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    user = "postgres" if as_postgres else getpass.getuser()
    home = Path(tempfile.mkdtemp(prefix="sweeper-pg-"))  # not under pytest's private tmp: postgres must reach it
    data, password_file = home / "data", home / "password"
    password_file.write_text(PG_PASSWORD + "\n")
    if as_postgres:
        subprocess.run(["chown", "-R", "postgres", str(home)], check=True)
    port = free_port()
    subprocess.run(as_postgres + [initdb, "-D", str(data), "-U", user, "--pwfile", str(password_file),
                                  "--auth", "scram-sha-256", "--no-sync"], check=True, capture_output=True)
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    stop_at_the_end(tmp_path_factory, ["rm", "-rf", str(home)])  # run after the stop below
    stop_at_the_end(tmp_path_factory, as_postgres + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"])
    subprocess.run(as_postgres + [pg_ctl, "-D", str(data), "-o", options, "-l", str(home / "log"), "-w", "start"],
                   check=True, capture_output=True)
    return ["127.0.0.1", port, user, PG_PASSWORD]


@pytest.fixture
def pg_database(postgres, request):
    """A fresh database in the throwaway cluster; yields its SQLAlchemy URL (password percent-encoded)."""
    import re

    return _create_database(postgres, re.sub(r"\W", "_", request.node.name.lower())[:50])


def _create_database(postgres, name):
    from urllib.parse import quote

    import psycopg

    host, port, user, password = postgres
    with psycopg.connect(host=host, port=port, user=user, password=password, dbname="postgres",
                         autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://{user}:{quote(password, safe='')}@{host}:{port}/{name}"


def load_pg_study(url, study):
    """The study in PostgreSQL at `url`, read on connections closed after each query. Tests poll studies; a
    pooled connection would stay open until its engine is garbage-collected, and a slow run's polls used up
    the throwaway cluster's 200 connections."""
    import optuna
    from sqlalchemy.pool import NullPool

    return optuna.load_study(study_name=study, storage=optuna.storages.RDBStorage(
        url, engine_kwargs={"poolclass": NullPool}))


@pytest.fixture(scope="session")
def mlflow_server(postgres, tmp_path_factory):
    """An MLflow tracking server on 127.0.0.1 backed by the throwaway PostgreSQL, started once for every pytest
    worker and stopped when the run ends; yields its URL."""
    _, url = once_per_run(tmp_path_factory, "mlflow-server", lambda home: _start_mlflow_server(
        postgres, tmp_path_factory, home))
    return url


def _start_mlflow_server(postgres, tmp_path_factory, home):
    import subprocess
    import sys
    import time
    import urllib.request

    from sweeper.usecases.ui import WITHOUT_JOB_RUNNERS

    store = _create_database(postgres, "mlflow_server")
    port = free_port()
    with open(home / "server.log", "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
                                   "--artifacts-destination", (home / "artifacts").as_uri(), "--host", "127.0.0.1",
                                   "--port", str(port), "--workers", "2"], stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True, env={**os.environ, **WITHOUT_JOB_RUNNERS})
    stop_at_the_end(tmp_path_factory, [sys.executable, "-c", f"import os; os.killpg({server.pid}, 15)"])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).read()
            return url
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, (home / "server.log").read_text()
            time.sleep(0.5)
