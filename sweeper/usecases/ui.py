"""`sweeper ui`: the MLflow UI over the study store, on 127.0.0.1 only."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from sweeper.domain.errors import SweeperError
from sweeper.domain.places import STORE_ROOT
from sweeper.domain.urls import mask
from sweeper.store import default_artifact_location, default_tracking_uri, describe_store

HOST = "127.0.0.1"


def check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SweeperError(f"port {port} on {HOST} is already in use; choose another with --port") from None
            raise SweeperError(f"cannot listen on {HOST}:{port}: {exc.strerror}") from None


def page_url(base: str, experiment_id: str | None = None) -> str:
    base = base.rstrip("/") + "/"
    return f"{base}#/experiments/{experiment_id}/runs" if experiment_id else base


def study_page(tracking_uri: str | None, experiment_id: str, port: int = 5000) -> str:
    """A study's page in the MLflow UI: the tracking server's own, or the one `sweeper ui` serves locally."""
    uri = tracking_uri or default_tracking_uri()
    base = uri if uri.startswith(("http://", "https://")) else f"http://{HOST}:{port}/"
    return page_url(base, experiment_id)


def server_command(uri: str, port: int) -> list[str]:
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", HOST,
               "--port", str(port), "--workers", "1"]
    if uri == default_tracking_uri():
        STORE_ROOT.mkdir(exist_ok=True)
    artifacts = default_artifact_location(uri)
    if artifacts is not None:
        command += ["--default-artifact-root", artifacts]
    return command


#: an MLflow server without its job runner processes (they run MLflow's GenAI jobs, which a sweep never submits)
WITHOUT_JOB_RUNNERS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def server_env() -> dict[str, str]:
    """The MLflow server's environment: its own log, whole; no job runners unless the user asks for them."""
    return {**WITHOUT_JOB_RUNNERS, **os.environ, "MLFLOW_LOGGING_LEVEL": "INFO"}


def serve(tracking_uri: str | None, port: int, study: str | None, open_browser: bool,
          say: Callable[[str], None]) -> int:
    """Run the MLflow UI until Ctrl-C; returns its exit status."""
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return _point_at_server(uri, study, open_browser, say)
    check_port_free(port)
    base = f"http://{HOST}:{port}/"
    url = page_url(base, _experiment_id(tracking_uri, study) if study else None)
    log = server_log(port)
    say(f"MLflow UI on {base} (store {describe_store(uri)}); Ctrl-C to stop. Server log: {log}")
    if study:
        say(f"Study {study}: {url}")
    with open(log, "wb") as written:  # MLflow's start-up lines, warnings and request log are not for the terminal
        server = subprocess.Popen(server_command(uri, port), stdout=written, stderr=subprocess.STDOUT,
                                  env=server_env())
    if open_browser:
        threading.Thread(target=_open_when_up, args=(base, url), daemon=True).start()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM must not leave the server orphaned
    try:
        status = server.wait()
    except KeyboardInterrupt:
        server.terminate()
        server.wait()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if status != 0:
        raise SweeperError(f"the MLflow UI server stopped with exit status {status}; its last lines, from {log}: "
                           f"{' | '.join(_last_lines(log))}")
    return status


def server_log(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"sweeper-ui-{port}.log"


def _last_lines(path: Path, n: int = 3) -> list[str]:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-n:] or ["(empty)"]


def _point_at_server(uri: str, study: str | None, open_browser: bool, say: Callable[[str], None]) -> int:
    """A tracking server serves the MLflow UI itself: check that it answers and say where to look."""
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10).read()
    except OSError as exc:
        raise SweeperError(f"the MLflow tracking server {mask(uri)} does not answer ({exc}); start it, or check "
                           f"--tracking-uri") from None
    url = page_url(uri, _experiment_id(uri, study) if study else None)
    say(f"The tracking server {mask(uri)} serves the MLflow UI itself: {url}")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _experiment_id(tracking_uri: str | None, study: str) -> str:
    from sweeper.store import Store

    return Store.open(tracking_uri, create=False).study(study).experiment_id


def _open_when_up(base: str, url: str, wait_s: float = 60) -> None:
    import webbrowser

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}health", timeout=2).read()
            webbrowser.open(url)
            return
        except OSError:
            time.sleep(0.5)
