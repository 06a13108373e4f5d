"""Initial weights drawn by NumPy from the distribution of the Keras initializer a model is configured with.

On JAX, Keras draws each initial weight with a jitted random op, compiled again for every new shape: building the
hand recipe's 784-1001-500-10 MLP took 0.6-1.4 s, against 0.009 s at a width built before (bench/RESULTS.md), and
nearly every trial of a sweep samples new widths. NumPy draws the same distributions in milliseconds, and on JAX
its values become a variable's by `jax.device_put`, a copy: Keras' conversion (`jnp.asarray`) compiles a program
per shape too. A layer built here gets Keras' own initializer back once its weights exist
(`keras_initializers_restored`), so a saved model's configuration names Keras' initializer, and loads without
sweeper. Initializers NumPy does not draw here (any but Keras' variance-scaling family, zeros, ones and constants)
are Keras' own, unchanged. An optimizer's state (Adam's moments, the weights' average) starts from zeros, which
`optimizer_built` has NumPy make as well, before `fit` would have Keras make them per shape.
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


def drawn_by_numpy(identifier, *, zeros: bool = False):
    """Keras' initializer named or given by `identifier`, its values drawn by NumPy where it knows the
    distribution (the random stream is NumPy's global one, which `keras.utils.set_random_seed` seeds); `zeros`:
    zeros in place of any initializer's values, for a weight about to be given another's (nothing drawn)."""
    import keras

    initializer = keras.initializers.get(identifier)
    draw = np.zeros if zeros else _numpy_draw(initializer)
    if draw is None:
        return initializer

    class NumpyDrawn(keras.initializers.Initializer):
        keras_initializer = initializer

        def __call__(self, shape, dtype=None):
            return _as_variable_value(draw(tuple(shape)).astype(keras.backend.standardize_dtype(dtype or "float32")))

    return NumpyDrawn()


def _as_variable_value(values: np.ndarray):
    """`values` as a Keras variable takes them without a compile: on JAX a JAX array, elsewhere as they are."""
    import keras

    if keras.backend.backend() != "jax":
        return values
    import jax

    return jax.device_put(values)


def optimizer_built(model) -> None:
    """`model`'s optimizer given its state for the model's trainable weights now, as `fit` would at its start, the
    zeros that state starts from made by NumPy (`drawn_by_numpy`). A model not built yet (a builder's subclassed
    model, built by its first call) is left to `fit`."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or optimizer.built or not model.built:
        return
    add_variable = optimizer.add_variable

    def added_by_numpy(shape, initializer="zeros", **options):
        return add_variable(shape, initializer=drawn_by_numpy(initializer), **options)

    optimizer.add_variable = added_by_numpy  # this optimizer's only, while it builds
    try:
        optimizer.build(model.trainable_variables)
    finally:
        del optimizer.add_variable


def rebuilt_drawn_by_numpy(model, *, zeros: bool = False):
    """`model` built anew from its configuration (its architecture, not its weights nor its optimizer), its initial
    weights drawn by NumPy (`drawn_by_numpy`; `zeros`: all zero, for a copy about to be given another model's
    weights) and its configuration naming Keras' initializers: a copy for which Keras would compile its
    initializers again on JAX."""
    config = model.get_config()
    _layers_drawn_by_numpy(config, zeros)
    return keras_initializers_restored(type(model).from_config(config))


def fresh_copy(model, *, zeros: bool = False):
    """`model`'s architecture with new initial weights (`rebuilt_drawn_by_numpy`; `zeros`: all zero), or Keras'
    clone of it where its configuration does not rebuild it (a subclassed model of a user's builder)."""
    import keras

    try:
        return rebuilt_drawn_by_numpy(model, zeros=zeros)
    except (TypeError, ValueError, NotImplementedError):
        return keras.models.clone_model(model)


def copy_with_weights(model):
    """`model`'s architecture holding its weights, without its optimizer: a fresh copy from zeros (`fresh_copy`)
    given the model's own arrays (NumPy copies of them would be converted back per shape, a compile each on JAX)."""
    copy = fresh_copy(model, zeros=True)
    for mine, theirs in zip(copy.weights, model.weights, strict=True):
        mine.assign(theirs.value)
    return copy


#: what Keras writes into a `.keras` file of a model without assets
PLAIN_ARCHIVE = {"config.json", "metadata.json", "model.weights.h5"}


def loaded_drawn_by_numpy(path):
    """A `.keras` file loaded as `keras.saving.load_model(path, safe_mode=True)` loads it, but with the layers'
    initial weights, which the file's replace at once, zeros made by NumPy: Keras' own draws compile per shape on
    JAX (0.95 s for the hand recipe's MLP, bench/RESULTS.md). A file with assets is Keras' to load."""
    import keras
    from keras.src.saving.serialization_lib import ObjectSharingScope  # as Keras' own loading rebuilds shared objects

    with zipfile.ZipFile(path) as archive:
        if set(archive.namelist()) != PLAIN_ARCHIVE:
            return keras.saving.load_model(path, safe_mode=True)
        config = json.loads(archive.read("config.json"))
    _layers_drawn_by_numpy(config.get("config", {}), zeros=True)
    with ObjectSharingScope():
        model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    keras_initializers_restored(model).load_weights(path)
    return model


def _layers_drawn_by_numpy(config: dict, zeros: bool = False) -> None:
    """A model's configuration (`get_config()`, or the inner one of a saved file) with its layers' initializers,
    nested models' included, drawn by NumPy (`zeros`: zeros instead; changed in place)."""
    for layer in config.get("layers", []):
        inner = layer.get("config", {})
        inner.update({name: drawn_by_numpy(inner[name], zeros=zeros)
                      for name in INITIALIZER_ATTRIBUTES if inner.get(name)})
        _layers_drawn_by_numpy(inner, zeros)


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
    """Standard normal draws within TRUNCATION standard deviations (those outside drawn again, in order; only the
    draws made again are looked at again)."""
    values = np.random.standard_normal(shape)
    flat = values.reshape(-1)
    again = np.flatnonzero(np.abs(flat) > TRUNCATION)
    while again.size:
        flat[again] = drawn = np.random.standard_normal(again.size)
        again = again[np.abs(drawn) > TRUNCATION]
    return values
