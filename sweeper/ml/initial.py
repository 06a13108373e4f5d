"""Initial weights drawn by NumPy from the distribution of the Keras initializer a model is configured with.

On JAX, Keras draws each initial weight with a jitted random op, compiled again for every new shape: building the
hand recipe's 784-1001-500-10 MLP took 0.6-1.4 s, against 0.009 s at a width built before (bench/RESULTS.md), and
nearly every trial of a sweep samples new widths. NumPy draws the same distributions in milliseconds. A layer
built here gets Keras' own initializer back once its weights exist (`keras_initializers_restored`), so a saved
model's configuration names Keras' initializer, and loads without sweeper. Initializers NumPy does not draw here
(any but Keras' variance-scaling family, zeros, ones and constants) are Keras' own, unchanged.
"""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np

#: Keras' truncated normal keeps draws within two standard deviations; its variance-scaling initializers divide
#: the standard deviation by that of a standard normal truncated so
TRUNCATION, TRUNCATED_STD = 2.0, 0.87962566103423978

#: the attributes of Keras layers that hold an initializer (Dense, BatchNormalization)
INITIALIZER_ATTRIBUTES = ("kernel_initializer", "bias_initializer", "gamma_initializer", "beta_initializer",
                          "moving_mean_initializer", "moving_variance_initializer")


def drawn_by_numpy(identifier):
    """Keras' initializer named or given by `identifier`, its values drawn by NumPy where it knows the
    distribution (the random stream is NumPy's global one, which `keras.utils.set_random_seed` seeds)."""
    import keras

    initializer = keras.initializers.get(identifier)
    draw = _numpy_draw(initializer)
    if draw is None:
        return initializer

    class NumpyDrawn(keras.initializers.Initializer):
        keras_initializer = initializer

        def __call__(self, shape, dtype=None):
            return draw(tuple(shape)).astype(keras.backend.standardize_dtype(dtype or "float32"))

    return NumpyDrawn()


def rebuilt_drawn_by_numpy(model):
    """`model` built anew from its configuration (its architecture, not its weights nor its optimizer), its initial
    weights drawn by NumPy (`drawn_by_numpy`) and its configuration naming Keras' initializers: a copy about to be
    given another model's weights or trained afresh, for which Keras would compile its initializers again on JAX."""
    config = model.get_config()
    _layers_drawn_by_numpy(config)
    return keras_initializers_restored(type(model).from_config(config))


def fresh_copy(model):
    """`model`'s architecture with new initial weights (`rebuilt_drawn_by_numpy`), or Keras' clone of it where its
    configuration does not rebuild it (a subclassed model of a user's builder)."""
    import keras

    try:
        return rebuilt_drawn_by_numpy(model)
    except (TypeError, ValueError, NotImplementedError):
        return keras.models.clone_model(model)


#: what Keras writes into a `.keras` file of a model without assets
PLAIN_ARCHIVE = {"config.json", "metadata.json", "model.weights.h5"}


def loaded_drawn_by_numpy(path):
    """A `.keras` file loaded as `keras.saving.load_model(path, safe_mode=True)` loads it, but with the layers'
    initial weights, which the file's replace at once, drawn by NumPy: Keras' own draws compile per shape on JAX
    (0.95 s for the hand recipe's MLP, bench/RESULTS.md). A file with assets is Keras' to load."""
    import keras
    from keras.src.saving.serialization_lib import ObjectSharingScope  # as Keras' own loading rebuilds shared objects

    with zipfile.ZipFile(path) as archive:
        if set(archive.namelist()) != PLAIN_ARCHIVE:
            return keras.saving.load_model(path, safe_mode=True)
        config = json.loads(archive.read("config.json"))
    _layers_drawn_by_numpy(config.get("config", {}))
    with ObjectSharingScope():
        model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    keras_initializers_restored(model).load_weights(path)
    return model


def _layers_drawn_by_numpy(config: dict) -> None:
    """A model's configuration (`get_config()`, or the inner one of a saved file) with its layers' initializers,
    nested models' included, drawn by NumPy (changed in place)."""
    for layer in config.get("layers", []):
        inner = layer.get("config", {})
        inner.update({name: drawn_by_numpy(inner[name]) for name in INITIALIZER_ATTRIBUTES if inner.get(name)})
        _layers_drawn_by_numpy(inner)


def keras_initializers_restored(model):
    """`model` with each layer's initializers, nested models' included, Keras' own again (its weights kept), for
    its saved configuration."""
    for layer in model.layers:
        for name in INITIALIZER_ATTRIBUTES:
            drawn = getattr(layer, name, None)
            if hasattr(drawn, "keras_initializer"):
                setattr(layer, name, drawn.keras_initializer)
        if hasattr(layer, "layers"):
            keras_initializers_restored(layer)
    return model


def _numpy_draw(initializer):
    """A function of a shape drawing `initializer`'s distribution with NumPy (None: not one drawn here)."""
    import keras

    if isinstance(initializer, keras.initializers.Zeros):
        return np.zeros
    if isinstance(initializer, keras.initializers.Ones):
        return np.ones
    if isinstance(initializer, keras.initializers.Constant):
        return lambda shape: np.full(shape, float(initializer.value))
    if isinstance(initializer, keras.initializers.VarianceScaling) and getattr(initializer, "_init_seed", None) is None:
        return lambda shape: _variance_scaled(initializer, shape)
    return None


def _variance_scaled(initializer, shape: tuple) -> np.ndarray:
    """Keras' `VarianceScaling.__call__`, drawn by NumPy (a 2-D kernel's fans; other shapes as Keras computes)."""
    from keras.src.initializers.random_initializers import compute_fans

    fan_in, fan_out = compute_fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out}.get(initializer.mode, (fan_in + fan_out) / 2.0)
    scale = initializer.scale / max(1.0, fan)
    if initializer.distribution == "truncated_normal":
        return _truncated_normal(shape) * (math.sqrt(scale) / TRUNCATED_STD)
    if initializer.distribution == "untruncated_normal":
        return np.random.standard_normal(shape) * math.sqrt(scale)
    limit = math.sqrt(3.0 * scale)
    return np.random.uniform(-limit, limit, shape)


def _truncated_normal(shape: tuple) -> np.ndarray:
    """Standard normal draws within TRUNCATION standard deviations (those outside drawn again)."""
    values = np.random.standard_normal(shape)
    outside = np.abs(values) > TRUNCATION
    while outside.any():
        values[outside] = np.random.standard_normal(int(outside.sum()))
        outside = np.abs(values) > TRUNCATION
    return values
