"""The floor under an epoch on JAX: what bench/epoch_speed.py's classic 784-300-100-10 MLP costs per epoch, piece
by piece, against the same matmul ideal.

Run: .venv/bin/python bench/step_floor.py [--batches 32 128 256] [--images 55000]
Each row is seconds per epoch (the full batches of `--images` training images) and its ratio to the ideal epoch
(6 x parameters x images at TensorFlow's best large-matmul rate, as bench/epoch_speed.py):
- the step's 8 matmuls alone (3 forward, 5 backward), one jitted call per step, then 64 steps in one `lax.scan`
  (no dispatch), then the same scan in bfloat16 (the speed of the dots at these shapes, not of the model);
- Keras' own `train_step` (SGD), jitted, one call per step on a batch already on the device, then 64 steps in one
  `lax.scan` with the rows gathered and scaled inside the program (no dispatch, no feed);
- Keras' `fit` as sweeper's trainer calls it (`COMPILE_OPTIONS`, `sweeper.ml.train.training_inputs`: since a067283
  its steps looped over the arrays on the device, before it `sweeper.ml.tensors.batches`), without validation.
XLA's CPU flags apply through XLA_FLAGS, and one core through `taskset -c 0`: compare their rows as ratios to the
plain run's, measured one after the other. Compare only ratios measured in one run.
"""

import argparse
import dataclasses
import itertools
import os
import sys
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from epoch_speed import classic_model, matmul_gflops

from sweeper.ml import quiet

SCANNED = 64  # steps per program in the scanned rows, as sweeper's steps_per_execution
WIDTHS = (784, 300, 100, 10)


def timed(call, repeats: int) -> float:
    """Seconds for `repeats` calls of `call` (whose last result is waited for), after one warm-up call."""
    import jax

    jax.block_until_ready(call())
    started = time.perf_counter()
    for _ in range(repeats):
        result = call()
    jax.block_until_ready(result)
    return time.perf_counter() - started


def matmuls(x, w1, w2, w3):
    """The matmuls of one training step of the MLP (its first layer's input gradient is not needed)."""
    h1 = x @ w1
    h2 = h1 @ w2
    out = h2 @ w3
    g2 = out @ w3.T
    g1 = g2 @ w2.T
    return (h2.T @ out).sum() + (h1.T @ g2).sum() + (x.T @ g1).sum()


def matmul_rows(batch: int, steps: int) -> dict[str, float]:
    one_call, scanned = matmul_seconds(batch, steps, "float32")
    return {"matmuls alone, a call per step": one_call, "matmuls alone, 64 steps a scan": scanned,
            "matmuls alone, 64 steps a scan (bfloat16)": matmul_seconds(batch, steps, "bfloat16")[1]}


def matmul_seconds(batch: int, steps: int, dtype: str) -> tuple[float, float]:
    """Seconds for `steps` steps' matmuls in `dtype`: a jitted call per step, and 64 steps per `lax.scan`."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    shapes = [(batch, WIDTHS[0]), *zip(WIDTHS, WIDTHS[1:], strict=False)]
    x, *weights = (jnp.asarray(rng.random(shape, np.float32), dtype) for shape in shapes)
    one = jax.jit(matmuls)
    stacked, zero = jnp.stack([x] * SCANNED), jnp.zeros((), dtype)
    many = jax.jit(lambda xs, *w: jax.lax.scan(lambda total, x: (total + matmuls(x, *w), None), zero, xs)[0])
    groups = max(1, steps // SCANNED)
    return (timed(lambda: one(x, *weights), steps),
            timed(lambda: many(stacked, *weights), groups) * steps / (groups * SCANNED))


def train_step_rows(keras, dataset, batch: int, steps: int) -> dict[str, float]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    model = classic_model(keras, {})
    floats = dataset.as_inputs()
    model.fit(floats.x_train[:batch], floats.y_train[:batch], batch_size=batch, epochs=1, verbose=0)  # builds all
    variables = (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables,
                 model.metrics_variables)
    state = jax.tree.map(lambda variable: jnp.array(variable.value), variables)
    one = jax.jit(model.train_step, donate_argnums=0)
    batch_data = (jnp.asarray(floats.x_train[:batch]), jnp.asarray(floats.y_train[:batch]))
    held = [state]

    def one_step():
        logs, held[0] = one(held[0], batch_data)
        return logs

    rows = {"Keras' train_step, a call per step": timed(one_step, steps)}
    images, labels = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train.astype(np.int32))

    def scanned(state, indices):
        def body(state, rows):
            data = (images[rows].astype(jnp.float32) / dataset.divisor, labels[rows])
            logs, state = model.train_step(state, data)
            return state, logs
        state, logs = jax.lax.scan(body, state, indices)
        return jax.tree.map(lambda log: log[-1], logs), state

    many = jax.jit(scanned, donate_argnums=0)
    groups = max(1, steps // SCANNED)
    order = np.random.default_rng(0).permutation(len(dataset.x_train))
    group_rows = itertools.cycle(np.resize(order, (groups + 1, SCANNED, batch)))  # + 1: the warm-up call's

    def scanned_steps():
        logs, held[0] = many(held[0], next(group_rows))
        return logs

    rows["Keras' train_step, 64 steps a scan, rows gathered in it"] = (timed(scanned_steps, groups) * steps
                                                                        / (groups * SCANNED))
    return rows


def fit_row(keras, dataset, batch: int) -> dict[str, float]:
    from sweeper.ml.train import COMPILE_OPTIONS, training_inputs

    keras.utils.set_random_seed(0)
    model = classic_model(keras, COMPILE_OPTIONS)
    times = []
    clock = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: times.append(time.perf_counter()),
                                           on_epoch_end=lambda epoch, logs: times.append(time.perf_counter()))
    nan_check = keras.callbacks.LambdaCallback(on_train_batch_end=lambda step, logs: float(logs["loss"]))
    with training_inputs(model, (dataset.x_train, dataset.y_train), batch_size=batch,
                         divisor=dataset.divisor) as inputs:
        model.fit(**inputs, epochs=3, verbose=0, callbacks=[clock, nan_check])
    epochs = sorted(times[i + 1] - times[i] for i in range(2, len(times), 2))  # the first epoch compiles
    scale = (len(dataset.x_train) // batch) / -(-len(dataset.x_train) // batch)  # to the full batches counted
    return {"Keras' fit as sweeper calls it (no validation)": epochs[0] * scale}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--images", type=int, default=55_000, help="training images per epoch (a quick look: fewer)")
    args = parser.parse_args()
    quiet.import_keras()
    import keras
    import tensorflow as tf

    from sweeper.ml.data import load_dataset

    dataset = load_dataset("fashion")
    dataset = dataclasses.replace(dataset, x_train=dataset.x_train[:args.images],
                                  y_train=dataset.y_train[:args.images])
    parameters = sum(a * b + b for a, b in zip(WIDTHS, WIDTHS[1:], strict=False))
    rate = max(matmul_gflops(tf))
    ideal = 6 * parameters * args.images / rate / 1e9
    print(f"Keras on {keras.backend.backend()}, {os.cpu_count()} cores visible to Python, "
          f"{len(os.sched_getaffinity(0))} usable; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; matmul rate "
          f"{rate:.1f} GFLOP/s -> ideal epoch {ideal:.3f} s ({args.images} images)")
    print("seconds per epoch = times the ideal")
    table = {}
    for batch in args.batches:
        steps = args.images // batch
        table[batch] = {**matmul_rows(batch, steps), **train_step_rows(keras, dataset, batch, steps),
                        **fit_row(keras, dataset, batch)}
        keras.backend.clear_session()
    names = list(table[args.batches[0]])
    print(f"{'':<56}" + "".join(f"{'batch ' + str(b):>18}" for b in args.batches))
    for name in names:
        print(f"{name:<56}" + "".join(f"{table[b][name]:>8.3f} s = {table[b][name] / ideal:>4.1f}x"
                                      for b in args.batches))


if __name__ == "__main__":
    main()
