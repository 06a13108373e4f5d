"""The final model as an average of the best trials: one Keras model whose output is its members' mean, kept and
registered like a single one, exported to every format with the same outputs, said in the summary and the card."""

import json

import mlflow
import numpy as np
import pytest

from sweeper.ml.data import load_dataset
from sweeper.ml.formats import FORMATS

from .conftest import sweeper
from .test_multi_objective import two_objective_space

ENSEMBLE = ["search", "digits", "--trials", 4, "--max-epochs", 2, "--pruner", "none", "--ensemble", 3]


@pytest.fixture(scope="module")
def ensemble_study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ensemble")
    result = sweeper(*ENSEMBLE, cwd=workdir)
    assert result.exit_code == 0, result.output
    return workdir, result


def _client(workdir):
    return mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")


def _runs(workdir, kind):
    client = _client(workdir)
    experiment = client.get_experiment_by_name("digits")
    return client.search_runs([experiment.experiment_id], f"tags.run_kind = '{kind}'")


def test_the_average_of_models_is_one_model_whose_output_is_their_mean(tmp_path):
    import keras

    from sweeper.ml.ensemble import average
    from sweeper.ml.model import build_model

    data = load_dataset("digits", None, "classification", None)
    params = {"n_layers": 1, "units_0": 16, "activation": "relu", "kernel_initializer": "glorot_uniform",
              "dropout": 0.0, "optimizer": "adam", "learning_rate": 1e-2, "batch_size": 32, "batch_norm": True}
    members = []
    for seed in range(3):
        keras.utils.set_random_seed(seed)
        members.append(build_model(params, data))
        members[-1].fit(data.x_train, data.y_train, epochs=1, verbose=0)
    mean = np.mean([m.predict(data.x_test, verbose=0) for m in members], axis=0)
    model = average(members, data, ["trial_000", "trial_001", "trial_002"])
    assert np.abs(model.predict(data.x_test, verbose=0) - mean).max() < 1e-6
    model.save(tmp_path / "average.keras")  # saved without the members' optimizers, loaded whole
    loaded = keras.models.load_model(tmp_path / "average.keras")
    assert np.abs(loaded.predict(data.x_test, verbose=0) - mean).max() < 1e-6
    assert [layer.name for layer in loaded.layers] == ["inputs", "trial_000", "trial_001", "trial_002", "average"]


def test_the_best_trials_keep_their_models_and_the_final_model_averages_them(ensemble_study):
    workdir, result = ensemble_study
    trials = sorted(_runs(workdir, "trial"), key=lambda r: -r.data.metrics["objective"])
    [parent] = _runs(workdir, "search")
    top = [r.data.tags["trial_number"] for r in trials[:3]]
    assert parent.data.tags["ensemble_of"] == ",".join(top)
    assert all(_client(workdir).list_artifacts(r.info.run_id, "model") for r in trials[:3])
    assert {"single_test_accuracy", "test_accuracy", "trial_test_accuracy"} <= set(parent.data.metrics)
    summary = " ".join(result.output.split())
    single, averaged = parent.data.metrics["single_test_accuracy"], parent.data.metrics["test_accuracy"]
    gain = f"{abs(averaged - single):.4f} {'ahead of' if averaged >= single else 'behind'} trial {top[0]}'s model alone"
    assert (f"Final model: the average of trials {top[0]}, {top[1]} and {top[2]} (trial {top[0]} retrained), on the "
            f"test split: test_accuracy {averaged:.4f}, {gain}.") in summary
    assert f"on the test split: test_accuracy {single:.4f}" in summary  # the best model's line: the single one


def test_the_averaged_model_exports_to_every_format_with_the_same_outputs(ensemble_study, tmp_path):
    from sweeper.usecases.export import final_model

    workdir, _ = ensemble_study
    out = tmp_path / "best"
    result = sweeper("export", "digits", "--out", out, "--format", "keras", "--format", "savedmodel", "--format",
                     "onnx", "--format", "tflite", cwd=workdir)
    assert result.exit_code == 0, result.output
    ensemble = final_model("digits", tracking_uri=f"sqlite:///{workdir}/mlruns/mlflow.db")
    data = load_dataset("digits", None, "classification", None)
    expected = ensemble.predict(data.x_test, verbose=0)
    members = [layer for layer in ensemble.layers if layer.name.startswith("trial_")]
    assert len(members) == 3
    assert np.abs(np.mean([m.predict(data.x_test, verbose=0) for m in members], axis=0) - expected).max() < 1e-6
    files = {"keras": "model.keras", "savedmodel": "savedmodel", "onnx": "model.onnx", "tflite": "model.tflite"}
    for name, file in files.items():  # each read back by its own runtime (onnxruntime, LiteRT, TensorFlow)
        predicted = np.asarray(FORMATS[name].load(out / file)(data.x_test)).reshape(expected.shape)
        assert np.abs(predicted - expected).max() < 1e-4, name
    card = json.loads((out / "model.json").read_text())
    assert card["model"].startswith("the average of trial ") and "own models of trials" in card["model"]
    assert card["architecture"].count("trial_") == 3


@pytest.mark.parametrize("value", [0, 11])
def test_an_ensemble_out_of_range_is_one_error_line(tmp_path, value):
    result = sweeper("search", "digits", "--ensemble", value, cwd=tmp_path)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: Invalid value for '--ensemble': must be between 1 and 10 trials, but got {value}")
    assert not (tmp_path / "mlruns").exists()


def test_an_ensemble_of_a_two_objective_study_is_refused(tmp_path):
    space = two_objective_space(tmp_path)
    result = sweeper("search", "digits", "--space", space, "--ensemble", 3, cwd=tmp_path)
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1] == (
        "Error: --ensemble 3 averages the best trials of one objective; with two objectives the final model is one "
        "trial of the Pareto front")
