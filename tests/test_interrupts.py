"""A Ctrl-C or SIGTERM that lands inside a store write is raised once the write is done."""

import signal

import pytest

from sweeper.errors import Terminated
from sweeper.interrupts import deferred, raise_interrupt


def test_a_signal_outside_a_write_raises_at_once():
    with pytest.raises(Terminated):
        raise_interrupt(signal.SIGTERM, None)
    with pytest.raises(KeyboardInterrupt):
        raise_interrupt(signal.SIGINT, None)


def test_a_signal_during_a_write_waits_for_its_end():
    written = []
    with pytest.raises(Terminated):
        with deferred():
            with deferred():  # nested writes: raised when the outermost ends
                raise_interrupt(signal.SIGTERM, None)
                written.append("inner")
            written.append("outer")
    assert written == ["inner", "outer"]
    with deferred():  # nothing pending afterwards
        written.append("next")
    assert written[-1] == "next"
