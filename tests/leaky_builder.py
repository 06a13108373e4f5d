"""A model builder that keeps 150 MiB each time it is called, as a leak of the training runtime would: the
worker processes' recycling on memory is tested with it (tests/test_recycling.py)."""

import numpy as np

KEPT = []
LEAK_MIB = 150


def leaky_mlp(params, data):
    import keras

    KEPT.append(np.ones(LEAK_MIB * 2**20, np.uint8))  # written, so resident
    return keras.Sequential([keras.Input(data.input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(params["width"], activation="relu"),
                             keras.layers.Dense(data.n_outputs, activation="softmax")])
