"""Keras backends side by side: seconds per epoch and per trial of fashion.yaml's start configuration (the hand
recipe: 784-1024-512-10, batch normalisation, AdamW, label smoothing, batch 256) through sweeper's own model
builder, compile options and feed (`sweeper.ml.train.training_inputs`: on JAX the steps looped over the arrays on the
device; until 26e4bd7 Keras' own feed of float arrays), on TensorFlow and on JAX, each in a fresh process, one after
the other.

Run: .venv/bin/python bench/backends.py [--epochs 4] [--backends tensorflow jax jax]
Each process is set up as sweeper's (`configure_process`: on JAX, its persistent compilation cache), so a second
`jax` shows a trial whose shapes were compiled before (a repeated or resumed sweep; set JAX_COMPILATION_CACHE_DIR
to an empty folder for a cold first one).
The first epoch (tracing and compiling, paid once per trial) is shown apart from the median of the others;
"trial" is the sum of all the epochs, as a trial of that many epochs would spend in fit. Compare only the ratio
measured in one run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = {"n_layers": 2, "units_0": 1024, "units_1": 512, "learning_rate": 2e-3, "batch_size": 256,
          "optimizer": "adamw", "dropout": 0.3, "activation": "relu", "kernel_initializer": "he_normal", "l2": 0.0,
          "batch_norm": True, "weight_decay": 1e-4, "label_smoothing": 0.1, "lr_schedule": "cosine"}


def one_backend(epochs: int) -> dict:
    """In this process, on the backend KERAS_BACKEND names: each epoch's wall time."""
    import time

    sys.path.insert(0, str(ROOT))
    from sweeper.ml import quiet
    from sweeper.runtime.setup import configure_process

    configure_process()
    quiet.import_keras()  # the data loader and the quiet set-up; Keras itself follows KERAS_BACKEND
    import keras

    from sweeper.ml.data import load_dataset
    from sweeper.ml.model import build_model
    from sweeper.ml.train import COMPILE_OPTIONS, training_inputs

    data = load_dataset("fashion")
    keras.utils.set_random_seed(0)
    model = build_model(RECIPE, data, **COMPILE_OPTIONS)
    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.started)

    batch = RECIPE["batch_size"]
    with training_inputs(model, (data.x_train, data.y_train), (data.x_val, data.y_val), batch_size=batch,
                         divisor=data.divisor) as inputs:
        model.fit(**inputs, epochs=epochs, verbose=0, callbacks=[Clock()])
    return {"backend": keras.backend.backend(), "epochs": times}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "jax"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_backend(args.epochs)))
        return
    results = []
    for backend in args.backends:
        out = subprocess.run([sys.executable, __file__, "--child", "--epochs", str(args.epochs)], check=True,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "KERAS_BACKEND": backend}).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    base = None
    for result in results:
        first, rest = result["epochs"][0], statistics.median(result["epochs"][1:])
        trial = sum(result["epochs"])
        base = base or trial
        print(f"{result['backend']:<11} first epoch {first:6.2f} s  then {rest:6.2f} s/epoch  "
              f"{len(result['epochs'])}-epoch trial {trial:7.1f} s  ({trial / base:.2f}x {args.backends[0]}'s)")


if __name__ == "__main__":
    main()
