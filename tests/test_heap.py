"""The garbage collector during the trials: what lived before them is left out of its walks, garbage is not."""

import gc
import weakref

from sweeper.runtime.heap import long_lived_objects_frozen


class _Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the collector frees it


def test_what_lived_before_the_trials_is_frozen_for_them_and_handed_back_after():
    before = _Node()
    with long_lived_objects_frozen():
        assert gc.get_freeze_count() > 0
        during = _Node()
        gone = weakref.ref(during)
        del during
        gc.collect()
        assert gone() is None  # a trial's garbage is still collected
    assert gc.get_freeze_count() == 0
    left = weakref.ref(before)
    del before
    gc.collect()
    assert left() is None  # and what was frozen is collected again once the trials end


def test_garbage_of_before_the_trials_is_freed_not_frozen():
    old = _Node()
    gone = weakref.ref(old)
    del old
    with long_lived_objects_frozen():
        assert gone() is None


def test_memory_a_trial_freed_goes_back_to_the_system():
    """200 MiB of small blocks freed stay resident in the C allocator's heap (a block kept after them stops it from
    shrinking itself) until they are released."""
    import subprocess
    import sys

    code = ("from sweeper.runtime.heap import release_freed_memory, resident_mib\n"
            "blocks = [bytearray(1000) for _ in range(200_000)]; kept = bytearray(1000); start = resident_mib()\n"
            "del blocks; freed = resident_mib(); release_freed_memory(); print(start, freed, resident_mib())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    start, freed, released = map(float, out.split())
    assert freed > start - 50  # free() alone keeps them
    assert released < start - 150


def test_programs_jax_compiled_for_a_trial_are_dropped_after_it():
    """A worker on JAX would otherwise keep every program it compiled (each trial's training step, each eager op at
    each new shape) for its life."""
    import subprocess
    import sys

    code = ("import jax, jax.numpy as jnp\nfrom sweeper.runtime.heap import release_freed_memory\n"
            "step = jax.jit(lambda x: x * 2); step(jnp.ones(3)); step(jnp.ones(4)); before = step._cache_size()\n"
            "release_freed_memory(); print(before, step._cache_size())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2", "0"]
