"""A model builder that notes, at each call, which Keras backends and which of Keras' optional extras its process
has imported (a line in the file named by SWEEPER_PROBE_FILE): a worker should hold only the backend it trains on,
and no extra that nothing but Keras asked for (tests/test_cli.py)."""

import os
import sys


def probing_mlp(params, data):
    import keras

    imported = sorted(name for name in ("jax", "tensorflow") if sys.modules.get(name) is not None)
    extras = sorted(name for name in ("IPython", "matplotlib", "sklearn") if sys.modules.get(name) is not None)
    with open(os.environ["SWEEPER_PROBE_FILE"], "a") as probe:
        probe.write(f"{os.getpid()} {','.join(imported)} {','.join(extras) or '-'}\n")
    return keras.Sequential([keras.Input(data.input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(params["width"], activation="relu"),
                             keras.layers.Dense(data.n_outputs, activation="softmax")])
