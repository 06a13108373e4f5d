"""Ctrl-C and SIGTERM as exceptions, held back while a store write is in flight.

Python raises KeyboardInterrupt wherever the main thread happens to be; inside an SQLite write it
leaves that connection's transaction open, and the write that records the interrupted trial then
finds the database locked. Writes run inside `deferred()`: a signal arriving there is raised as
soon as the write is done.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

from .errors import Terminated

_depth = 0
_pending: BaseException | None = None


def raise_interrupt(signum, frame):
    """Signal handler for SIGINT and SIGTERM: KeyboardInterrupt or Terminated, now or after the write."""
    global _pending
    exc = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    if _depth:
        _pending = exc
        return
    raise exc


@contextmanager
def deferred():
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            exc, _pending = _pending, None
            raise exc
