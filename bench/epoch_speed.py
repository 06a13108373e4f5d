"""Training efficiency: seconds per epoch of the classic 784-300-100-10 MLP over the matmul ideal.

Run: [KERAS_BACKEND=jax] .venv/bin/python bench/epoch_speed.py [--batches 32 128 256] [--variants all]
The ideal is the epoch's floating-point work (6 x parameters x images: forward, and backward for
inputs and weights) at this machine's float32 matmul rate, measured in this same run with
TensorFlow on a large square matmul (the best of five rounds). Each variant is one way of calling Keras' fit;
`sweeper` is what sweeper's trainer does (`sweeper.train.COMPILE_OPTIONS`, with its NaN check after each
execution, and its data from `sweeper.ml.train.training_inputs`: on JAX the steps looped over the arrays on the
device, `sweeper.ml.steps`; elsewhere the batches of `sweeper.ml.tensors.batches`, as on JAX too
before a067283; before 084dc7e Keras' own). On JAX the ideal is still TensorFlow's matmul rate: the machine's,
not the backend's. Figures are medians of the timed epochs after a warm-up epoch; the warm-up epoch's own time
(tracing, XLA compilation) is shown beside them, since every trial pays it once.
"""

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeper.ml import quiet

BATCHES = {"batches": True}  # the data in batches from sweeper.ml.tensors.batches, as sweeper gave it before a067283
TRAINER = {"trainer": True}  # the data as sweeper's trainer gives it (sweeper.ml.train.training_inputs)

VARIANTS = {
    # name: (compile options, fit options, batch-level callback)
    "keras default (no XLA on CPU)": ({}, {}, False),
    "batch callback (sweeper before)": ({}, {}, True),
    "jit_compile=True (XLA)": ({"jit_compile": True}, {}, False),
    "steps_per_execution=4": ({"steps_per_execution": 4}, {}, False),
    "steps_per_execution=16": ({"steps_per_execution": 16}, {}, False),
    "steps_per_execution=64": ({"steps_per_execution": 64}, {}, False),
    "steps_per_execution=16, XLA": ({"steps_per_execution": 16, "jit_compile": True}, {}, False),
    "steps_per_execution=64, XLA": ({"steps_per_execution": 64, "jit_compile": True}, {}, False),
    "sweeper before 084dc7e (Keras' batches)": (None, {}, True),
    "sweeper before a067283 (tensors.batches)": (None, BATCHES, True),
    "sweeper (COMPILE_OPTIONS, training_inputs)": (None, TRAINER, True),
}


def matmul_gflops(tf, n=2048, repeats=10, rounds=5) -> list[float]:
    """The float32 matmul rate of `rounds` rounds of `repeats` products each: one round alone swung 241-333 GFLOP/s
    between runs minutes apart (bench/RESULTS.md), where the epochs varied by a tenth; the best is the ideal."""
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.linalg.matmul(a, b).numpy()
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeats):
            c = tf.linalg.matmul(a, b)
        c.numpy()
        rates.append(2 * n**3 * repeats / (time.perf_counter() - started) / 1e9)
    return rates


def classic_model(keras, compile_options):
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
                              keras.layers.Dense(300, activation="relu"), keras.layers.Dense(100, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], **compile_options)
    return model


def epoch_seconds(keras, dataset, batch, compile_options, fit_options, batch_callback, epochs) -> float:
    keras.utils.set_random_seed(0)
    model = classic_model(keras, compile_options)
    times = []
    clock = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: times.append(time.perf_counter()),
                                           on_epoch_end=lambda e, logs: times.append(time.perf_counter()))
    callbacks = [clock]
    if batch_callback:
        callbacks.append(keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: float(logs["loss"])))
    from sweeper.ml.tensors import batches
    from sweeper.ml.train import training_inputs

    with contextlib.ExitStack() as stack:
        if fit_options is TRAINER:  # sweeper's trainer: the images held as bytes, divided as they are fed
            data = stack.enter_context(training_inputs(model, (dataset.x_train, dataset.y_train),
                                                       (dataset.x_val, dataset.y_val), batch_size=batch,
                                                       divisor=dataset.divisor))
            fit_options = {}
        elif fit_options is BATCHES:
            data = {"x": batches(dataset.x_train, dataset.y_train, batch_size=batch, shuffle=True,
                                 divisor=dataset.divisor), "shuffle": False,
                    "validation_data": batches(dataset.x_val, dataset.y_val, batch_size=batch, shuffle=False,
                                               divisor=dataset.divisor)}
            fit_options = {}
        else:  # Keras' own feed of float arrays
            floats = dataset.as_inputs()
            data = {"x": floats.x_train, "y": floats.y_train, "batch_size": batch,
                    "validation_data": (floats.x_val, floats.y_val)}
        model.fit(**data, epochs=epochs + 1, verbose=0, callbacks=callbacks, **fit_options)
    durations = sorted(times[i + 1] - times[i] for i in range(2, len(times), 2))  # the first epoch warms up
    return durations[len(durations) // 2], times[1] - times[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement (after one warm-up)")
    args = parser.parse_args()
    quiet.import_keras()
    import keras
    import tensorflow as tf

    from sweeper.ml.data import load_dataset
    from sweeper.ml.train import COMPILE_OPTIONS

    dataset = load_dataset("fashion")
    params = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    flop = 6 * params * len(dataset.x_train)
    rates = matmul_gflops(tf)
    rate = max(rates)
    ideal = flop / rate / 1e9
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "default"
    print(f"Keras on {keras.backend.backend()}; threads: intra-op {threads}, "
          f"{os.cpu_count()} cores; epoch work {flop / 1e9:.1f} GFLOP ({params} parameters x "
          f"{len(dataset.x_train)} images x 6); matmul rate {rate:.1f} GFLOP/s, the best of {len(rates)} rounds "
          f"({min(rates):.1f}-{rate:.1f}) -> ideal epoch {ideal:.2f} s")
    print("seconds per epoch = times the ideal (the first epoch, tracing and compiling included)")
    print(f"{'variant':<34}" + "".join(f"{'batch ' + str(b):>24}" for b in args.batches))
    for name in args.variants:
        row = f"{name:<34}"
        for batch in args.batches:
            compile_opts, fit_opts, batch_callback = VARIANTS[name]
            if compile_opts is None:
                compile_opts = COMPILE_OPTIONS
            seconds, first = epoch_seconds(keras, dataset, batch, compile_opts, fit_opts, batch_callback, args.epochs)
            row += f"{seconds:>6.2f} s = {seconds / ideal:>4.1f}x ({first:4.1f} s)"
            keras.backend.clear_session()
        print(row, flush=True)


if __name__ == "__main__":
    main()
