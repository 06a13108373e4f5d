"""The space's training levers (batch normalisation, weight decay, label smoothing, the learning-rate schedule, no
hidden layer at all, weight averaging, input standardisation), each trained for real on scikit-learn's digits: what each one changes in the model."""

import math

import keras
import numpy as np
import pytest

from sweeper.domain.space import Objective
from sweeper.ml.data import load_dataset
from sweeper.ml.formats import load_keras
from sweeper.ml.losses import SmoothedSparseCrossentropy
from sweeper.ml.model import LEAST_SCALE, build_model
from sweeper.ml.train import evaluate, for_users, train_trial

BASE = {"n_layers": 2, "units_0": 32, "units_1": 16, "learning_rate": 1e-2, "batch_size": 64, "optimizer": "adam",
        "dropout": 0.0, "activation": "relu", "kernel_initializer": "he_normal", "l2": 0.0}
ACCURACY = Objective("val_accuracy", "maximize")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_batch_norm_normalises_each_hidden_layer_before_its_activation(digits):
    model = build_model({**BASE, "batch_norm": True}, digits)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Flatten", "Dense", "BatchNormalization", "Activation", "Dense", "BatchNormalization",
                     "Activation", "Dense"]
    assert not model.get_layer("hidden_0").use_bias  # the normalisation's shift is the bias
    assert model.get_layer("activation_1").activation.__name__ == "relu"


def test_no_hidden_layer_is_a_linear_model(digits):
    model = build_model({**BASE, "n_layers": 0}, digits)
    assert [type(layer).__name__ for layer in model.layers] == ["Flatten", "Dense"]
    assert model.count_params() == 64 * 10 + 10


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_weight_decay_reaches_every_optimizer(digits, optimizer):
    model = build_model({**BASE, "optimizer": optimizer, "weight_decay": 3e-4}, digits)
    assert model.optimizer.weight_decay == pytest.approx(3e-4)
    assert build_model({**BASE, "optimizer": "adamw"}, digits).optimizer.weight_decay == 0.0  # not Keras' 0.004


def test_label_smoothing_trains_and_the_users_model_loads_without_sweeper(digits, tmp_path):
    result = train_trial({**BASE, "label_smoothing": 0.1}, digits, ACCURACY, max_epochs=3, patience=3)
    assert isinstance(result.model.loss, SmoothedSparseCrossentropy) and result.model.loss.label_smoothing == 0.1
    assert result.objective > 0.5
    smooth = result.model.loss(np.array([0]), np.eye(10)[:1] * 0.999 + 0.0001)
    plain = keras.losses.SparseCategoricalCrossentropy()(np.array([0]), np.eye(10)[:1] * 0.999 + 0.0001)
    assert float(smooth) > float(plain) + 0.1  # a confident right answer still costs something
    trial_file = tmp_path / "trial.keras"
    result.model.save(trial_file)
    assert isinstance(load_keras(trial_file).loss, SmoothedSparseCrossentropy)  # a trial's model reloads
    smoothed_test = evaluate(result.model, digits)
    users = for_users(result.model)
    assert evaluate(users, digits) == pytest.approx(smoothed_test, rel=1e-4)  # one test loss, Keras' own
    assert users.get_compile_config()["loss"] == "sparse_categorical_crossentropy"
    users.save(tmp_path / "users.keras")
    script = ("import keras; m = keras.saving.load_model('users.keras', safe_mode=True); "
              "print(type(m.loss).__name__ if not isinstance(m.loss, str) else m.loss)")
    import subprocess
    import sys
    shown = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "sweeper" not in shown.stdout.lower() and shown.stdout.strip()


def test_cosine_schedule_decays_the_rate_to_near_zero_at_the_epoch_cap(digits):
    result = train_trial({**BASE, "lr_schedule": "cosine"}, digits, ACCURACY, max_epochs=4, patience=4)
    rates = result.history["learning_rate"]
    expected = [1e-2 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert rates == pytest.approx(expected, rel=1e-5)


def test_constant_schedule_keeps_the_rate_where_plateau_would_drop_it(digits):
    noisy = {**BASE, "learning_rate": 2.0, "optimizer": "sgd"}  # a rate too high to keep improving (either backend)
    plateau = train_trial(noisy, digits, ACCURACY, max_epochs=6, patience=6).history["learning_rate"]
    constant = train_trial({**noisy, "lr_schedule": "constant"}, digits, ACCURACY, max_epochs=6, patience=6)
    assert set(constant.history.get("learning_rate", [2.0])) == {2.0}
    assert min(plateau) < 2.0


def test_a_cosine_schedule_runs_to_its_end_and_keeps_the_best_epoch_of_its_second_half(digits):
    noisy = {**BASE, "learning_rate": 2.0, "optimizer": "sgd"}  # a rate too high to keep improving (either backend)
    constant = train_trial({**noisy, "lr_schedule": "constant"}, digits, ACCURACY, max_epochs=8, patience=0)
    cosine = train_trial({**noisy, "lr_schedule": "cosine"}, digits, ACCURACY, max_epochs=8, patience=0)
    assert constant.epochs < 8 == cosine.epochs  # patience 0 stops the constant rate at its first epoch without gain
    assert cosine.best_epoch >= 5
    assert cosine.objective == max(cosine.history["val_accuracy"][4:])


def test_weight_averaging_scores_and_keeps_the_averaged_weights(digits):
    # Averaged with momentum 0.999 over the ~51 steps of three epochs, the weights barely leave their initial values:
    # a model near chance, where the raw weights of the same training already classify most digits.
    raw = train_trial(BASE, digits, ACCURACY, max_epochs=3, patience=3)
    averaged = train_trial({**BASE, "ema": 0.999}, digits, ACCURACY, max_epochs=3, patience=3)
    assert averaged.model.optimizer.use_ema and averaged.model.optimizer.ema_momentum == 0.999
    assert raw.objective > 0.6 and averaged.objective < 0.4  # the objective is the average's
    kept = averaged.model.evaluate(digits.x_val, digits.y_val, verbose=0, return_dict=True)["accuracy"]
    assert kept == pytest.approx(averaged.objective)  # and the model holds the weights it was scored on


def test_standardize_scales_each_feature_by_the_training_split_inside_the_model(digits, tmp_path):
    model = build_model({**BASE, "standardize": True}, digits)
    assert [type(layer).__name__ for layer in model.layers][:2] == ["Flatten", "Rescaling"]
    x = digits.x_train.reshape(len(digits.x_train), -1)
    scaled = np.asarray(model.get_layer("standardize")(x))
    varying = x.std(axis=0) > 0.05 * x.std(axis=0).max()
    assert np.abs(scaled.mean(axis=0)).max() < 1e-3 and np.allclose(scaled.std(axis=0)[varying], 1, atol=1e-3)
    constant = x.std(axis=0) == 0  # e.g. the digits' always-blank corner pixels: not divided by zero
    assert constant.any() and np.isfinite(scaled).all()
    faint_stroke = np.asarray(model.get_layer("standardize")(x[:1] + 0.1))[0][constant]
    assert np.allclose(faint_stroke, 0.1 / (LEAST_SCALE * x.std(axis=0).max()), rtol=1e-4)  # scaled, not blown up
    model.save(tmp_path / "model.keras")
    reloaded = load_keras(tmp_path / "model.keras")
    assert np.allclose(reloaded.predict(digits.x_test, verbose=0), model.predict(digits.x_test, verbose=0))


def test_a_gelu_model_is_refused_by_the_onnx_format_with_a_clear_error(digits, tmp_path):
    from sweeper.domain.errors import ExportError
    from sweeper.ml.formats import OnnxFormat

    model = for_users(build_model({**BASE, "activation": "gelu"}, digits))
    model.predict(digits.x_test[:2], verbose=0)  # built, as a trained model is
    onnx = OnnxFormat()
    onnx.write(model, tmp_path / "model.onnx")
    with pytest.raises(ExportError, match=r"^the onnx format cannot hold this model: onnxruntime refuses the "
                                          r"converted file \(.*Erfc.*\); the keras, savedmodel and tflite formats can"):
        onnx.load(tmp_path / "model.onnx")


@pytest.mark.parametrize("rows", [1, 784, 1024, 1025, 5000, 10000, 10001, 55000])
def test_a_split_is_predicted_in_as_few_batches_as_the_cap_allows_all_of_one_size_where_it_divides(rows):
    from sweeper.ml.model import PREDICT_BATCH, predict_batch

    batch = predict_batch(rows)
    assert batch <= PREDICT_BATCH and -(-rows // batch) == -(-rows // PREDICT_BATCH)  # no more steps than the cap's
    if rows in (5000, 10000):  # Fashion-MNIST's validation and test splits: one shape, one compile on JAX
        assert rows % batch == 0
