"""Initial weights drawn by NumPy (sweeper.ml.initial): Keras' own distributions, reproducible from the seed, and a
saved model that names Keras' initializers."""

import contextlib
import os

import keras
import numpy as np
import pytest

from sweeper.ml.data import from_arrays
from sweeper.ml.initial import drawn_by_numpy
from sweeper.ml.model import build_model

WIDE = (784, 1024)  # enough values for the spread to be known within 1%
PARAMS = {"n_layers": 2, "units_0": 64, "units_1": 32, "learning_rate": 1e-3, "batch_size": 32, "optimizer": "adam",
          "dropout": 0.0, "activation": "relu", "kernel_initializer": "he_normal", "l2": 0.0, "batch_norm": True}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return from_arrays(rng.random((60, 8, 8), dtype=np.float32), np.arange(60) % 3)


@pytest.mark.parametrize("name", ["he_normal", "he_uniform", "glorot_uniform", "glorot_normal", "lecun_normal"])
def test_numpy_draws_the_distribution_keras_would(name):
    keras.utils.set_random_seed(0)
    ours, theirs = np.asarray(drawn_by_numpy(name)(WIDE)), keras.ops.convert_to_numpy(keras.initializers.get(name)(WIDE))
    assert ours.shape == WIDE and ours.dtype == np.float32
    assert ours.std() == pytest.approx(theirs.std(), rel=0.01)
    assert abs(ours.mean()) < 0.01 * theirs.std()
    assert np.abs(ours).max() <= np.abs(theirs).max() * 1.01  # truncated (or bounded) where Keras' is
    assert np.abs(ours).max() >= np.abs(theirs).max() * 0.95


def test_zeros_ones_and_constants_are_what_they_say():
    assert not np.asarray(drawn_by_numpy("zeros")((3,))).any()
    assert (np.asarray(drawn_by_numpy("ones")((3,))) == 1).all()
    assert (np.asarray(drawn_by_numpy(keras.initializers.Constant(0.5))((2, 2))) == 0.5).all()


def test_an_initializer_numpy_does_not_draw_stays_keras_own():
    assert isinstance(drawn_by_numpy("orthogonal"), keras.initializers.Orthogonal)
    seeded = keras.initializers.HeNormal(seed=3)  # a seed the user chose: Keras' own stream
    assert drawn_by_numpy(seeded) is seeded


def test_the_mlps_weights_follow_the_seed(images):
    def weights(seed):
        keras.utils.set_random_seed(seed)
        return [keras.ops.convert_to_numpy(w) for w in build_model(PARAMS, images).weights]

    first, again, other = weights(1), weights(1), weights(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    assert first[0].std() == pytest.approx(np.sqrt(2 / 64), rel=0.1)  # he_normal over 64 inputs


def test_a_saved_mlp_names_keras_initializers_and_loads_without_sweeper(images, tmp_path):
    model = build_model(PARAMS, images)
    kernels = [layer.kernel_initializer for layer in model.layers if hasattr(layer, "kernel_initializer")]
    assert [type(k).__name__ for k in kernels] == ["HeNormal", "HeNormal", "GlorotUniform"]
    assert "NumpyDrawn" not in str(model.to_json())
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")  # Keras alone, no custom objects
    assert type(loaded.get_layer("hidden_0").kernel_initializer).__name__ == "HeNormal"
    assert type(loaded.get_layer("batch_norm_0").gamma_initializer).__name__ == "Ones"
    assert np.allclose(loaded.predict(images.x_test, verbose=0), model.predict(images.x_test, verbose=0))


def test_a_copy_rebuilt_for_an_average_names_keras_initializers_and_takes_the_members_weights(images):
    from sweeper.ml.ensemble import average

    members = [build_model(PARAMS, images) for _ in range(2)]
    model = average(members, images, ["trial_000", "trial_001"])
    assert "NumpyDrawn" not in str(model.to_json())
    copy = model.get_layer("trial_001")
    assert type(copy.get_layer("hidden_0").kernel_initializer).__name__ == "HeNormal"
    assert all(np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
               for a, b in zip(copy.weights, members[1].weights, strict=True))


@contextlib.contextmanager
def keras_draws_nothing():
    """Keras' own variance-scaling draws made to fail: whatever builds a model within draws with NumPy."""
    def refused(self, shape, dtype=None):
        raise AssertionError(f"Keras drew initial weights of shape {shape}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras.initializers.VarianceScaling, "__call__", refused)
        yield


def _trained(images, seed=0):
    from sweeper.ml.train import COMPILE_OPTIONS

    keras.utils.set_random_seed(seed)
    model = build_model({**PARAMS, "optimizer": "adamw"}, images, **COMPILE_OPTIONS)
    model.fit(images.x_train, images.y_train, epochs=1, verbose=0)
    return model


def test_a_saved_model_loads_as_keras_loads_it_without_keras_drawing_weights(images, tmp_path):
    from sweeper.ml.formats import load_keras

    _trained(images).save(tmp_path / "model.keras")
    with keras_draws_nothing():
        ours = load_keras(tmp_path / "model.keras")
    theirs = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert ours.to_json() == theirs.to_json() and "NumpyDrawn" not in ours.to_json()
    assert ours.get_compile_config() == theirs.get_compile_config()
    assert int(ours.optimizer.iterations) == int(theirs.optimizer.iterations) > 0
    for a, b in zip(ours.weights + ours.optimizer.variables, theirs.weights + theirs.optimizer.variables, strict=True):
        assert np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)), a.path


def test_an_averaged_model_loads_its_nested_members_without_keras_drawing_weights(images, tmp_path):
    from sweeper.ml.ensemble import average
    from sweeper.ml.formats import load_keras

    model = average([build_model(PARAMS, images) for _ in range(2)], images, ["trial_000", "trial_001"])
    model.save(tmp_path / "model.keras")
    with keras_draws_nothing():
        loaded = load_keras(tmp_path / "model.keras")
    assert type(loaded.get_layer("trial_001").get_layer("hidden_0").kernel_initializer).__name__ == "HeNormal"
    assert np.array_equal(loaded.predict(images.x_test, verbose=0), model.predict(images.x_test, verbose=0))


def test_a_retraining_draws_its_initial_weights_with_numpy_from_its_seed(images):
    from sweeper.ml.train import refit

    trial = _trained(images)
    with keras_draws_nothing():
        first, again, other = (refit(trial, images, epochs=1, batch_size=32, learning_rates={}, seed=seed)
                               for seed in (1, 1, 2))
    assert all(np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
               for a, b in zip(first.weights, again.weights, strict=True))
    assert not np.array_equal(keras.ops.convert_to_numpy(first.weights[0]), keras.ops.convert_to_numpy(other.weights[0]))


def test_truncated_draws_are_the_ones_the_plain_rejection_loop_makes():
    """Only the draws made again are looked at again: the same values, and the same stream left, as drawing the
    whole array again and again until none is outside would make (models of earlier versions, seeds kept)."""
    from sweeper.ml.initial import TRUNCATION, _truncated_normal

    def plain(shape):
        values = np.random.standard_normal(shape)
        outside = np.abs(values) > TRUNCATION
        while outside.any():
            values[outside] = np.random.standard_normal(int(outside.sum()))
            outside = np.abs(values) > TRUNCATION
        return values

    for shape in [(784, 300), (5,), (3, 4, 5)]:
        np.random.seed(7)
        expected, after = plain(shape), np.random.random()
        np.random.seed(7)
        assert np.array_equal(_truncated_normal(shape), expected) and np.random.random() == after
        assert np.abs(expected).max() <= TRUNCATION


def test_the_optimizer_is_built_with_the_model_its_state_zeros(images):
    model = build_model({**PARAMS, "optimizer": "adamw", "ema": 0.99}, images)
    optimizer = model.optimizer
    assert optimizer.built and "add_variable" not in vars(optimizer)  # Keras' own method again
    state = [v for v in optimizer.variables if v.name.endswith(("momentum", "velocity", "average"))]
    assert len(state) == 3 * len(model.trainable_variables)
    assert all(not keras.ops.convert_to_numpy(v).any() for v in state)
    weights = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_variables]
    model.fit(images.x_train, images.y_train, epochs=1, verbose=0)
    assert not np.array_equal(keras.ops.convert_to_numpy(model.trainable_variables[0]), weights[0])


def test_on_jax_a_model_of_new_widths_and_its_optimizer_are_built_without_compiling(tmp_path):
    """Keras' conversion of the initial values and its zeros for the optimizer's state each compile a program per
    shape on JAX, and a sweep's trials rarely repeat a width: 0.1-0.3 s a trial (bench/RESULTS.md)."""
    import subprocess
    import sys

    code = f"""
import logging, jax, numpy as np
compiled = []
class Counted(logging.Handler):
    def emit(self, record):
        compiled.append(record.getMessage().startswith("Compiling"))
jax.config.update("jax_log_compiles", True)
logging.getLogger("jax").addHandler(Counted())
from sweeper.ml.data import from_arrays
from sweeper.ml.model import build_model
images = from_arrays(np.random.default_rng(0).random((60, 8, 8), dtype=np.float32), np.arange(60) % 3)
params = {{**{PARAMS!r}, "optimizer": "adamw", "ema": 0.99}}
build_model(params, images)  # what any first model compiles once (the optimizer's step counter, the metrics)
before = sum(compiled)
build_model({{**params, "units_0": 37, "units_1": 19}}, images)
print(sum(compiled) - before)
"""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_COMPILATION_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split()[-1] == "0"


def test_a_loaded_file_and_a_copy_for_an_average_hold_the_weights_with_nothing_drawn(images, tmp_path):
    from sweeper.ml.initial import copy_with_weights, loaded_drawn_by_numpy

    model = build_model(PARAMS, images)
    model.save(tmp_path / "model.keras")
    stream = np.random.get_state()[1].copy()
    loaded, copy = loaded_drawn_by_numpy(tmp_path / "model.keras"), copy_with_weights(model)
    assert np.array_equal(np.random.get_state()[1], stream)  # their weights replaced at once: none drawn first
    for other in (loaded, copy):
        assert all(np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
                   for a, b in zip(other.weights, model.weights, strict=True))
        assert type(other.get_layer("hidden_0").kernel_initializer).__name__ == "HeNormal"
        assert type(other.get_layer("batch_norm_0").moving_variance_initializer).__name__ == "Ones"
    assert getattr(copy, "optimizer", None) is None
