"""Python's garbage collector during a sweep's trials, and the process's resident memory.

Keras' `clear_session` after each trial runs a full collection, which walks every object the process tracks:
about 740,000 once TensorFlow, MLflow and Optuna are imported, 0.43 s a collection here, paid per trial
(bench/RESULTS.md). What exists when the trials start (the libraries, the data) lives as long as the process,
so it is frozen out of the collector's walk for the trials and handed back to it after them.

What a trial freed stays in the C allocator's heap unless it is handed back to the system: glibc keeps it for
later allocations, fragmented among the model's and XLA's buffers (four trials in one JAX process: 1029 MiB
after them, 780 with the trim). In a 15-minute sweep of Fashion-MNIST most of what a worker keeps after its first
trial is live, not free, and the trim buys little there (bench/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Full collections inside the block walk only what the block created (`gc.freeze`), restored after it."""
    gc.collect()  # garbage of before the block is freed now, not frozen for its length
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def resident_mib() -> float | None:
    """This process's resident memory in MiB (Linux's /proc; None where it cannot be read)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def release_freed_memory() -> None:
    """Drop JAX's compiled programs, where JAX is imported, and hand the memory the C allocator holds free back to the
    system (glibc's `malloc_trim`; nothing where the C library has none): after a trial, so that what it freed does
    not stay resident for the next one. JAX keeps every program it compiled (a trial's training step, each eager op
    at each shape) for the process's life, and a sweep's trials rarely repeat a shape; one that does is read back
    from the persistent compilation cache."""
    jax = sys.modules.get("jax")
    if jax is not None:
        jax.clear_caches()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # no C library by that name, or one without malloc_trim (musl, macOS)
        return None
