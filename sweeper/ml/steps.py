"""On JAX, an epoch's steps as XLA programs of up to 64 steps each (a loop inside the program) over the arrays held
on the device, each step gathering its rows (and dividing images held as bytes) inside the program: the training
steps, and the validation's.

Keras' own loop on JAX calls one compiled step per batch from Python, each batch sliced, divided and copied to the
device before it: an epoch of the 784-300-100-10 MLP at batch 32 took 1.46 s that way against 1.05 s here, 0.66 s
against 0.51 s at batch 128 (bench/epoch_speed.py, bench/RESULTS.md, one run). Keras' `fit` still drives the epochs, the
callbacks and the validation: only the model's train and test functions are replaced, for the length of one
`fit`, and the data they are given is each epoch's order of rows, drawn for training as sweeper's batches of bytes
draw it (a permutation from NumPy's global generator at each epoch's start). The model is built before `fit`
(Keras' own build takes a first batch, for which those batches drew one order more). The sums inside a step in a
loop may round differently from a step compiled alone: the same batches train to the same weights within rounding
(tests/test_steps.py).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import numpy as np

from sweeper.ml.tensors import NUMERIC
from sweeper.runtime.setup import keras_backend

#: steps per program: as many as sweeper's steps_per_execution (sweeper.ml.train.COMPILE_OPTIONS)
STEPS_PER_PROGRAM = 64


def applies(model, *arrays) -> bool:
    """Whether `model` can train this way on `arrays`: on JAX, compiled, each an array of numbers."""
    return (keras_backend() == "jax" and all(isinstance(part, np.ndarray) and part.dtype.kind in NUMERIC
                                             for part in arrays)
            and not model.run_eagerly and bool(model.jit_compile) and hasattr(model, "_symbolic_build"))


@contextlib.contextmanager
def on_device(model, train: tuple, validation: tuple | None = None, *, batch_size: int,
              divisor: int | None = None) -> Iterator[dict]:
    """For the length of the block, `model` trains on `train` (x, y) and is validated on `validation`, both held on
    the device (x divided by `divisor` as float32 when one is given), in programs of STEPS_PER_PROGRAM steps; yields
    Keras' `fit` arguments for them. Requires `applies(model, *train, *validation)`."""
    x, y = train
    first = x[:batch_size] if divisor is None else np.divide(x[:batch_size], np.float32(divisor), dtype=np.float32)
    model._symbolic_build(data_batch=(first, y[:batch_size]))  # Keras would build from a batch of our row numbers
    model.train_function = _looped(model, model.train_step, *train, divisor)
    inputs = {"x": _row_groups()(len(x), batch_size, shuffle=True), "shuffle": False}  # it shuffles: Keras' warns
    if validation is not None:
        model.test_function = _looped(model, model.test_step, *validation, divisor)
        inputs["validation_data"] = _row_groups()(len(validation[0]), batch_size, shuffle=False)
    try:
        yield inputs
    finally:  # Keras makes its own at the next fit or evaluate; the arrays on the device are let go
        model.train_function = model.test_function = None


def _looped(model, step_function, x, y, divisor: int | None):
    """Keras' train or test function on JAX, (state, iterator) -> (logs, state), for `step_function` (the model's
    train_step or test_step): each group of row numbers that the iterator gives runs as one program, as many groups
    as the model's steps_per_execution."""
    import jax
    import jax.numpy as jnp

    def steps(state, groups, x, y):
        def step(index, carried):
            state, _ = carried
            rows = groups[index]
            inputs = x[rows] if divisor is None else x[rows].astype(jnp.float32) / divisor
            logs, state = step_function(state, (inputs, y[rows]))
            return state, logs

        logs = jax.tree.map(lambda log: jnp.zeros(log.shape, log.dtype),  # what the first step overwrites
                            jax.eval_shape(step, 0, (state, None))[1])
        state, logs = jax.lax.fori_loop(0, jnp.sum(groups[:, 0] >= 0), step, (state, logs))
        return logs, state

    program = jax.jit(steps, donate_argnums=0)  # the arrays are arguments: as constants they would be compiled in
    x, y = jax.device_put(x), jax.device_put(y)

    def function(state, iterator):
        logs = None
        try:
            for _ in range(model.steps_per_execution):
                groups = next(iterator)
                logs, state = program(state, groups[0] if isinstance(groups, tuple) else groups, x, y)
        except StopIteration:
            pass
        return logs, state

    return function


@functools.cache
def _row_groups():
    """The class of an epoch's row numbers in groups (its base class needs Keras, imported here)."""
    import keras

    class RowGroups(keras.utils.PyDataset):
        """An epoch's row numbers as groups of STEPS_PER_PROGRAM batches (steps x batch_size), the last group
        filled up with batches of -1 that are not run (so that its whole batches run in the same program as the
        others': a loop of fewer steps would compile one more, 1-1.7 s for the hand recipe's model), and the last
        batch, if smaller, a group of its own. Shuffled, in a new order at each epoch's start, drawn from NumPy's
        global generator as `sweeper.ml.tensors`' batches draw it."""

        def __init__(self, rows: int, batch_size: int, *, shuffle: bool):
            super().__init__()
            self.rows, self.batch_size, self.shuffle = rows, batch_size, shuffle
            self.order = np.arange(rows, dtype=np.int32)
            whole = rows // batch_size
            self.groups = [(start, min(STEPS_PER_PROGRAM, whole - start))
                           for start in range(0, whole, STEPS_PER_PROGRAM)]
            if rows % batch_size:
                self.groups.append((whole, 1))

        def __len__(self) -> int:
            return len(self.groups)

        def on_epoch_begin(self) -> None:
            if self.shuffle:
                self.order = np.random.permutation(self.rows).astype(np.int32)

        def __getitem__(self, index: int) -> np.ndarray:
            start, steps = self.groups[index]
            rows = self.order[start * self.batch_size:(start + steps) * self.batch_size].reshape(steps, -1)
            if steps == 1 or steps == STEPS_PER_PROGRAM:
                return rows
            return np.concatenate([rows, np.full((STEPS_PER_PROGRAM - steps, self.batch_size), -1, np.int32)])

    return RowGroups
