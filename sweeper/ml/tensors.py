"""Arrays shared with the backend's tensors, for every `fit` of a process to read in place.

Given NumPy arrays, Keras on TensorFlow copies them into new tensors in each `fit` (its array adapter), and
the graphs TensorFlow keeps after a trial hold on to each copy: on the full Fashion-MNIST a worker grew by
about 290 MiB per trial (bench/RESULTS.md). A tensor made here reads the array's own memory (DLPack), so the
data is in memory once. Keras on JAX or PyTorch slices NumPy arrays without copying them: there, nothing is
shared.
"""

from __future__ import annotations

import numpy as np

from sweeper.runtime.setup import keras_backend

#: TensorFlow's alignment for tensor memory: its kernels abort the process on a tensor that is not aligned.
ALIGNMENT = 64
NUMERIC = "iuf"  # the kinds of array shared (signed, unsigned, float)


def shares_arrays() -> bool:
    """Whether Keras in this process is given tensors over the arrays (on TensorFlow)."""
    return keras_backend() == "tensorflow"


def shareable(array: np.ndarray) -> np.ndarray:
    """`array` itself when a tensor can read its memory (C-contiguous, aligned, writable as DLPack requires),
    else a copy that can; an array of another kind than NUMERIC is returned as it is, and not shared."""
    if array.dtype.kind not in NUMERIC:
        return array
    if array.flags.c_contiguous and array.flags.writeable and array.ctypes.data % ALIGNMENT == 0:
        return array
    copy = aligned_empty(array.shape, array.dtype)
    copy[...] = array
    return copy


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts at a multiple of ALIGNMENT bytes."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffer = np.empty(size + ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % ALIGNMENT
    return buffer[start:start + size].view(dtype).reshape(shape)


def in_place(array: np.ndarray):
    """What Keras is given for an array it trains on once: on TensorFlow a tensor over its memory (over a
    shareable copy, if need be), elsewhere the array."""
    if not shares_arrays() or array.dtype.kind not in NUMERIC:
        return array
    return _shared_tensor(shareable(array))


def _shared_tensor(array: np.ndarray):
    """A TensorFlow tensor over `array`'s memory (which `shareable` returned), without a copy."""
    import tensorflow as tf

    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
