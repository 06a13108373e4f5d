"""Ctrl-C and SIGTERM: one policy for the main process and every worker process.

`installed()` makes SIGINT raise KeyboardInterrupt and SIGTERM raise Terminated (an ignored SIGINT, as a
background job inherits it, is taken back). Three rules make an interrupt safe:

- A store write runs inside `deferred()`: a signal arriving there is raised as soon as the write is done
  (Python raises wherever the main thread is; inside an SQLite write that leaves a transaction open and
  the store locked for the write that records the interrupted trial).
- The first signal is remembered and `check()` raises it again at the next checkpoint (between trials,
  every few training batches): an interrupt that lands where Python swallows exceptions (a garbage
  collection callback) still stops the process, and Python's "Exception ignored in ..." with its traceback
  is not printed for it.
- Later signals are ignored while the first is handled: recording the interrupted trial is not itself
  interrupted. A parent that must not wait kills its workers with SIGKILL after a deadline.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

from sweeper.domain.errors import Terminated

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_depth = 0
_pending: BaseException | None = None  # raised when the outermost deferred block ends
_requested: BaseException | None = None  # the first interrupt this process received


def _interrupt(signum: int) -> BaseException:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handler(signum, frame):
    global _pending, _requested
    if _requested is not None:
        return  # already stopping: let the first interrupt finish recording what it stopped
    _requested = _interrupt(signum)
    if _depth:
        _pending = _requested
        return
    raise _interrupt(signum)


@contextmanager
def installed():
    """SIGINT and SIGTERM raise (see the module's rules) for the block; the previous handlers come back after."""
    global _pending, _requested
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    _pending = _requested = None
    previous = {signum: signal.signal(signum, _handler) for signum in _SIGNALS}
    previous_hook, sys.unraisablehook = sys.unraisablehook, _swallowed_interrupts_unsaid(sys.unraisablehook)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = previous_hook
        _pending = _requested = None


def _swallowed_interrupts_unsaid(hook):
    """Python's hook for exceptions it cannot raise (in a garbage-collection or weakref callback), silent for the
    interrupt this process received: it is raised again at the next checkpoint."""

    def unraisable(report):
        if _requested is not None and isinstance(report.exc_value, (KeyboardInterrupt, Terminated)):
            return
        hook(report)

    return unraisable


def request(exc: BaseException) -> None:
    """Ask this process to stop as a signal would (from a thread that watches something else: a Dask task's stop
    event); the next checkpoint raises it."""
    global _requested
    if _requested is None:
        _requested = exc


def reset() -> None:
    """Forget an interrupt that was handled (a Dask worker runs the next task in the same process)."""
    global _pending, _requested
    _pending = _requested = None


def requested() -> BaseException | None:
    """The interrupt this process received, if any (it may already be on its way up)."""
    return _requested


def check() -> None:
    """A checkpoint: raise the interrupt received, if any, unless inside a deferred write."""
    if _requested is not None and not _depth:
        raise type(_requested)()


@contextmanager
def deferred():
    """Hold SIGINT and SIGTERM back for the block (a store write); raise them when it is done."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            exc, _pending = _pending, None
            raise exc


def behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The interrupt that `exc` stands for, if any: one it was raised while handling (SQLAlchemy invalidates a
    connection that an interrupt reaches mid-statement, and the rollback on the way out then raises
    PendingRollbackError in its place, seen when Ctrl-C lands inside MLflow's migrations), or else the one this
    process received (a library's bare `except:` may swallow it and fail later in its own words: Keras, tracing the
    training step, turns it into "ValueError: None values not supported"). Such an error is the interrupt, not a
    failure."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return _requested
