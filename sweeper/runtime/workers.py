"""Who runs a trial: `host:pid:start` names a worker process, so a dead one's trials can be reaped.

The process start time (Linux `/proc/PID/stat`, field 22) guards against a recycled pid. A worker on
another host cannot be checked from here and is taken to be alive.
"""

from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def pid_alive(pid: int) -> bool:
    """Whether a process of this host has that pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def this_worker() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or 0}"


def is_dead(worker: str | None) -> bool:
    """Whether `worker` is a process of this host that no longer runs (False when that cannot be told)."""
    if not worker or worker.count(":") < 2:
        return False
    host, pid, start = worker.rsplit(":", 2)
    if host != socket.gethostname():
        return False
    return _start_time(int(pid)) != start


@contextmanager
def file_lock(path: Path):
    """An exclusive lock between the processes of this machine, held for the `with` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def hold_lock(path: Path):
    """Take an exclusive lock for as long as the returned file stays open, writing this pid into it; or
    return the pid recorded by the process that holds it (a str) without waiting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        return holder
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
