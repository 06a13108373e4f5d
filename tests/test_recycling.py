"""When a worker process is replaced by a fresh one: after a number of trials, or sooner once its memory has grown
(the replacement itself, through the installed command: tests/test_faults.py)."""

import numpy as np

from sweeper.runtime.heap import resident_mib
from sweeper.usecases.pool import Recycling


def _rule(readings, *, after=20, growth=100):
    """The trials (0-based, in the process) that `Recycling` makes last, given its memory as each begins."""
    announced = []
    recycling = Recycling(lambda: announced.append(True), after=after, growth=growth,
                          resident=iter(readings).__next__)
    lasts = [ran for ran in range(len(readings)) if recycling(ran)]
    assert len(announced) == len(lasts)
    return lasts


def test_a_worker_is_last_at_its_count_or_once_grown_past_the_bound_over_its_second_trials_start():
    # the first trial's growth (TensorFlow's start) is the process's own: only what later trials leave counts
    assert _rule([800, 1200, 1250, 1299, 1301, 1400]) == [4, 5]
    assert _rule([800, 1200, 1210, 1220], after=3) == [2, 3]
    assert _rule([800, 1200, 1150, 1250, 1300]) == []  # memory given back does not move the bound
    assert _rule([None, None, None, None], after=3) == [2, 3]  # memory unknown: the count alone


def test_resident_memory_is_read_and_grows_with_what_the_process_writes():
    before = resident_mib()
    held = np.ones(64 * 2**20, np.uint8)
    assert resident_mib() - before > 60
    del held

