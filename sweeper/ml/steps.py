"""On JAX, an epoch's training steps as a few XLA programs of up to 64 steps each (a `lax.scan`) over the training
arrays held on the device, each step gathering its rows (and dividing images held as bytes) inside the program.

Keras' own loop on JAX calls one compiled step per batch from Python, each batch sliced, divided and copied to the
device before it: an epoch of the 784-300-100-10 MLP at batch 32 took 1.27 s that way against 0.96 s here, 0.59 s
against 0.49 s at batch 128 (bench/epoch_speed.py, bench/RESULTS.md). Keras' `fit` still drives the epochs, the
callbacks and the validation: only the model's train function is replaced, for the length of one `fit`, and the
data it is given is the epoch's order of rows, drawn as sweeper's batches of bytes draw it (a permutation from
NumPy's global generator at each epoch's start). The model is built before `fit` (Keras' own build takes a first
batch, for which those batches drew one order more). The sums inside a scanned step may round differently from a
step compiled alone: the same batches train to the same weights within rounding (tests/test_steps.py).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import numpy as np

from sweeper.runtime.setup import keras_backend

#: steps per program: as many as sweeper's steps_per_execution (sweeper.ml.train.COMPILE_OPTIONS)
STEPS_PER_PROGRAM = 64
NUMERIC = "iuf"


def applies(model, x, y) -> bool:
    """Whether `model` can train on (x, y) this way: on JAX, compiled, one array of numbers each for x and y."""
    return (keras_backend() == "jax" and all(isinstance(part, np.ndarray) and part.dtype.kind in NUMERIC
                                             for part in (x, y))
            and not model.run_eagerly and bool(model.jit_compile) and hasattr(model, "_symbolic_build"))


@contextlib.contextmanager
def scanned_training(model, x, y, *, batch_size: int, divisor: int | None = None) -> Iterator:
    """For the length of the block, `model` trains on (x, y) held on the device (x divided by `divisor` as float32
    when one is given) in programs of STEPS_PER_PROGRAM steps; yields what `fit` is given as x, with
    `shuffle=False` (the rows' order is drawn at each epoch). Requires `applies(model, x, y)`."""
    import jax

    first = x[:batch_size] if divisor is None else np.divide(x[:batch_size], np.float32(divisor), dtype=np.float32)
    model._symbolic_build(data_batch=(first, y[:batch_size]))  # Keras would build from a batch of our row numbers
    model.train_function = _train_function(model, jax.device_put(x), jax.device_put(y), divisor)
    try:
        yield _row_groups()(len(x), batch_size)
    finally:
        model.train_function = None  # Keras makes its own at the next fit; the arrays on the device are let go


def _train_function(model, x, y, divisor: int | None):
    """Keras' train function on JAX (state, iterator) -> (logs, state), running each group of row numbers that the
    iterator gives as one program, as many groups as the model's steps_per_execution."""
    import jax
    import jax.numpy as jnp

    def steps(state, groups, x, y):
        def step(state, rows):
            inputs = x[rows] if divisor is None else x[rows].astype(jnp.float32) / divisor
            logs, state = model.train_step(state, (inputs, y[rows]))
            return state, logs

        state, logs = jax.lax.scan(step, state, groups)
        return jax.tree.map(lambda log: log[-1], logs), state

    program = jax.jit(steps, donate_argnums=0)  # the arrays are arguments: as constants they would be compiled in

    def train_function(state, iterator):
        logs = None
        try:
            for _ in range(model.steps_per_execution):
                groups = next(iterator)
                logs, state = program(state, groups[0] if isinstance(groups, tuple) else groups, x, y)
        except StopIteration:
            pass
        return logs, state

    return train_function


@functools.cache
def _row_groups():
    """The class of an epoch's row numbers in groups (its base class needs Keras, imported here)."""
    import keras

    class RowGroups(keras.utils.PyDataset):
        """An epoch's row numbers as groups of STEPS_PER_PROGRAM batches (batch_size x steps), the last group
        shorter and the last batch, if smaller, a group of its own; in a new order at each epoch's start, drawn
        from NumPy's global generator as `sweeper.ml.tensors`' batches draw it."""

        def __init__(self, rows: int, batch_size: int):
            super().__init__()
            self.rows, self.batch_size = rows, batch_size
            self.order = np.arange(rows, dtype=np.int32)
            whole = rows // batch_size
            self.groups = [(start, min(STEPS_PER_PROGRAM, whole - start))
                           for start in range(0, whole, STEPS_PER_PROGRAM)]
            if rows % batch_size:
                self.groups.append((whole, 1))

        def __len__(self) -> int:
            return len(self.groups)

        def on_epoch_begin(self) -> None:
            self.order = np.random.permutation(self.rows).astype(np.int32)

        def __getitem__(self, index: int) -> np.ndarray:
            start, steps = self.groups[index]
            rows = self.order[start * self.batch_size:(start + steps) * self.batch_size]
            return rows.reshape(steps, -1)

    return RowGroups
