"""Arrays shared with the backend's tensors, for every `fit` of a process to read in place, in batches.

Given NumPy arrays, Keras on TensorFlow copies them into new tensors in each `fit` (its array adapter), and
the graphs TensorFlow keeps after a trial hold on to each copy: on the full Fashion-MNIST a worker grew by
about 290 MiB per trial (bench/RESULTS.md). A tensor made here reads the array's own memory (DLPack), so the
data is in memory once. Keras on JAX or PyTorch slices NumPy arrays without copying them: there, nothing is
shared.

Batches (`batches`) come from a tf.data pipeline like Keras' own for arrays (a batch of indices, gathered), with two
differences. Its order changes at every epoch: Keras' own, once a seed is set, draws the same permutation at every
epoch (a new iterator per epoch replays the seeded shuffle). And tf.data's autotuning is off: an autotuned iterator
runs a model thread, and releasing the iterator waits out that thread's sleep, up to its
optimisation period, which doubles up to a minute. Keras makes an iterator per epoch and per evaluation: with
autotuning, a 12 s epoch of Fashion-MNIST took up to 8 s more, and `fit` returned 8 s after its last epoch
(bench/RESULTS.md).
"""

from __future__ import annotations

import functools

import numpy as np

from sweeper.runtime.setup import keras_backend

#: TensorFlow's alignment for tensor memory: its kernels abort the process on a tensor that is not aligned.
ALIGNMENT = 64
NUMERIC = "iuf"  # the kinds of array shared (signed, unsigned, float)
#: about how many rows `batches` gathers at once (a whole number of batches): 6 MiB of Fashion-MNIST's float images
GATHERED_ROWS = 2048


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
    return aligned_copy(array)


def aligned_copy(array: np.ndarray) -> np.ndarray:
    """A copy of `array` that a tensor can read in place (see `shareable`)."""
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


def batches(x, y, *, batch_size: int, shuffle: bool, divisor: int | None = None):
    """(x, y) in batches for Keras to train or evaluate on, x divided by `divisor` as float32 when one is given
    (images held as bytes): on TensorFlow a tf.data pipeline over their memory, in another order at each iteration
    (epoch) when `shuffle` (the last batch may be smaller), without autotuning; elsewhere, bytes in a
    `DividedBatches`, and None for other arrays (Keras slices them itself). On TensorFlow the rows of several
    batches are gathered at once (a gather per batch, 1,719 an epoch of Fashion-MNIST at batch 32, cost a fixed
    0.4 ms each: bench/RESULTS.md)."""
    if not shares_arrays():
        return None if divisor is None else _divided_batches()(x, y, batch_size=batch_size, shuffle=shuffle,
                                                                divisor=divisor)
    import tensorflow as tf

    x, y = (in_place(part) if isinstance(part, np.ndarray) else part for part in (x, y))
    count = int(x.shape[0])
    indices = tf.data.Dataset.range(count)
    if shuffle:  # Keras' own pipeline, seeded, draws the same order at every epoch
        indices = indices.shuffle(count, reshuffle_each_iteration=True)
    per_gather = batch_size * max(1, GATHERED_ROWS // batch_size)

    def gathered(rows, data):
        x_rows, y_rows = (tf.gather(part, rows) for part in data)
        return (x_rows if divisor is None else tf.cast(x_rows, tf.float32) / divisor), y_rows

    def in_batches(*parts):
        """A gathered stretch of rows as its batches: the whole ones as slices of one reshape, then the rest."""
        whole = tf.shape(parts[0])[0] // batch_size * batch_size
        shaped = tuple(tf.reshape(part[:whole], tf.concat([[-1, batch_size], tf.shape(part)[1:]], 0))
                       for part in parts)
        rest = tf.data.Dataset.from_tensors(tuple(part[whole:] for part in parts))
        return tf.data.Dataset.from_tensor_slices(shaped).concatenate(
            rest.filter(lambda *part: tf.shape(part[0])[0] > 0))

    pipeline = tf.data.Dataset.zip((indices.batch(per_gather), tf.data.Dataset.from_tensors((x, y)).repeat()))
    pipeline = pipeline.map(gathered, num_parallel_calls=tf.data.AUTOTUNE).flat_map(in_batches)
    # known again after flat_map: Keras counts an epoch's steps from it (else it warns that the data ran out)
    pipeline = pipeline.apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))
    pipeline = pipeline.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.autotune.enabled = False  # AUTOTUNE above then means as many as there are cores
    options.experimental_optimization.apply_default_optimizations = False  # as Keras: no graph rewrite per iterator
    return pipeline.with_options(options)


@functools.cache
def _divided_batches():
    """The class of Keras' batches of bytes divided as they are given (its base class needs Keras, imported here)."""
    import keras

    class DividedBatches(keras.utils.PyDataset):
        """(x, y) in batches of x's rows divided by `divisor` as float32, y's as they are, made as Keras asks for
        them (in its training thread: no workers). Shuffled, the rows follow a permutation drawn at each epoch's
        start from NumPy's global generator, as Keras' own feed of arrays draws it: the batches are the ones it
        gave when the arrays held the divided values."""

        def __init__(self, x, y, *, batch_size: int, shuffle: bool, divisor: int):
            super().__init__()
            self.x, self.y, self.batch_size, self.shuffle, self.divisor = x, y, batch_size, shuffle, divisor
            self.order = None

        def __len__(self) -> int:
            return -(-len(self.x) // self.batch_size)

        def on_epoch_begin(self) -> None:
            if self.shuffle:
                self.order = np.random.permutation(len(self.x))

        def __getitem__(self, index: int):
            start, stop = index * self.batch_size, (index + 1) * self.batch_size
            rows = slice(start, stop) if self.order is None else self.order[start:stop]
            return np.divide(self.x[rows], np.float32(self.divisor), dtype=np.float32), self.y[rows]

    return DividedBatches
