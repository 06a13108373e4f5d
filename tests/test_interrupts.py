"""The interrupt policy, with real signals sent to this process: raised at once, held back during a store
write, remembered for the next checkpoint, and a second signal ignored while the first is handled."""

import os
import signal

import pytest

from sweeper.domain.errors import Terminated
from sweeper.runtime.interrupts import check, deferred, installed, requested


def _send(signum):
    os.kill(os.getpid(), signum)


def test_a_signal_outside_a_write_raises_at_once():
    for signum, kind in ((signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)):
        with installed():
            with pytest.raises(kind):
                _send(signum)


def test_a_signal_during_a_write_waits_for_its_end():
    written = []
    with installed():
        with pytest.raises(Terminated):
            with deferred():
                with deferred():  # nested writes: raised when the outermost ends
                    _send(signal.SIGTERM)
                    written.append("inner")
                written.append("outer")
    assert written == ["inner", "outer"]
    with installed(), deferred():  # nothing pending afterwards
        written.append("next")
    assert written[-1] == "next"


def test_an_interrupt_that_was_swallowed_is_raised_again_at_the_next_checkpoint():
    with installed():
        try:
            _send(signal.SIGINT)
        except KeyboardInterrupt:
            pass  # what a garbage-collection callback does with it ("Exception ignored in ...")
        assert isinstance(requested(), KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            check()


def test_a_second_signal_is_ignored_while_the_first_is_handled():
    recorded = []
    with installed():
        with pytest.raises(Terminated):
            try:
                _send(signal.SIGTERM)
            finally:
                _send(signal.SIGINT)  # e.g. Ctrl-C reaching a worker its parent has just signalled
                recorded.append("the interrupted trial")
    assert recorded == ["the interrupted trial"]


def test_the_previous_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with installed():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before and requested() is None
    check()  # no interrupt outside: a checkpoint does nothing


def test_an_error_raised_while_handling_an_interrupt_exits_as_the_interrupt():
    """SQLAlchemy invalidates a connection that Ctrl-C reaches mid-statement, and its rollback on the way out raises
    PendingRollbackError in the interrupt's place (a flake of the store-creation test): exit 130, no `Error:`."""
    import click
    from click.testing import CliRunner

    from sweeper.cli.speak import reports_errors

    @click.command()
    @reports_errors
    def migrate():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("Can't reconnect until invalid transaction is rolled back") from None

    result = CliRunner().invoke(migrate, [])
    assert (result.exit_code, result.output.strip()) == (130, "Interrupted.")


def test_an_interrupt_inside_a_garbage_collection_callback_prints_no_traceback_and_still_stops():
    """Ctrl-C that lands in a weakref callback (SQLAlchemy's, as a sweep's store is created) is swallowed by Python,
    which prints "Exception ignored in ..." and a traceback; the interrupt is remembered and raised at the next
    checkpoint, and nothing is printed."""
    import subprocess
    import sys

    code = ("import os, signal, weakref\n"
            "from sweeper.runtime.interrupts import check, installed\n"
            "class Thing: pass\n"
            "with installed():\n"
            "    thing = Thing()\n"
            "    ref = weakref.ref(thing, lambda r: os.kill(os.getpid(), signal.SIGINT) or sum(range(1000)))\n"
            "    del thing\n"
            "    print('swallowed', flush=True)\n"
            "    check()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout == "swallowed\n"  # Python went on past the callback
    assert "KeyboardInterrupt" in result.stderr  # raised again by check(): the process stops
    assert "Exception ignored" not in result.stderr and result.stderr.count("Traceback") == 1
