"""Initial weights drawn by NumPy (sweeper.ml.initial): Keras' own distributions, reproducible from the seed, and a
saved model that names Keras' initializers."""

import contextlib

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
