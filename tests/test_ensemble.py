"""The final model as an average of the best trials: one Keras model whose output is its members' mean, kept and
registered like a single one, exported to every format with the same outputs, said in the summary and the card."""

import json

import mlflow
import numpy as np
import pytest

from sweeper.ml.data import load_dataset
from sweeper.ml.formats import FORMATS

from .conftest import SPACES, sweeper, write_space
from .test_export import COSINE_SPACE
from .test_multi_objective import two_objective_space

ENSEMBLE = ["search", "digits", "--trials", 5, "--max-epochs", 2, "--pruner", "none", "--ensemble", 4]
DIGITS = {"n_layers": 1, "units_0": 16, "activation": "relu", "kernel_initializer": "glorot_uniform",
          "dropout": 0.0, "optimizer": "adam", "learning_rate": 1e-2, "batch_size": 32, "batch_norm": True}


@pytest.fixture(scope="module")
def ensemble_study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ensemble")
    result = sweeper(*ENSEMBLE, cwd=workdir)
    assert result.exit_code == 0, result.output
    return workdir, result


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None, "classification", None)


@pytest.fixture(scope="module")
def members(digits):
    """Three small real models of digits, trained one epoch from three seeds."""
    import keras

    from sweeper.ml.model import build_model

    models = []
    for seed in range(3):
        keras.utils.set_random_seed(seed)
        models.append(build_model(DIGITS, digits))
        models[-1].fit(digits.x_train, digits.y_train, epochs=1, verbose=0)
    return models


def _client(workdir):
    return mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")


def _runs(workdir, kind):
    client = _client(workdir)
    experiment = client.get_experiment_by_name("digits")
    return client.search_runs([experiment.experiment_id], f"tags.run_kind = '{kind}'")


def test_the_average_of_models_is_one_model_whose_output_is_their_mean(tmp_path, digits, members):
    import keras

    from sweeper.ml.ensemble import average

    mean = np.mean([m.predict(digits.x_test, verbose=0) for m in members], axis=0)
    model = average(members, digits, ["trial_000", "trial_001", "trial_002"])
    assert np.abs(model.predict(digits.x_test, verbose=0) - mean).max() < 1e-6
    model.save(tmp_path / "average.keras")  # saved without the members' optimizers, loaded whole
    loaded = keras.models.load_model(tmp_path / "average.keras")
    assert np.abs(loaded.predict(digits.x_test, verbose=0) - mean).max() < 1e-6
    assert [layer.name for layer in loaded.layers] == ["inputs", "trial_000", "trial_001", "trial_002", "average"]


@pytest.mark.parametrize("name", list(FORMATS))
def test_an_averaged_model_is_written_in_every_format_with_the_same_outputs(tmp_path, digits, members, name):
    from sweeper.ml.ensemble import average

    model = average(members, digits, ["trial_000", "trial_001", "trial_002"])
    expected = model.predict(digits.x_test, verbose=0)
    path = tmp_path / FORMATS[name].filename
    FORMATS[name].write(model, path)
    predicted = np.asarray(FORMATS[name].load(path)(digits.x_test)).reshape(expected.shape)  # its own runtime
    assert np.abs(predicted - expected).max() < 1e-4


def _probabilities(y, right, confidence, classes=10):
    """Predictions of class y (right) or y+1 (wrong) per row, with the given confidence, the rest spread."""
    rows = np.full((len(y), classes), (1 - confidence) / (classes - 1))
    rows[np.arange(len(y)), np.where(right, y, (y + 1) % classes)] = confidence
    return rows


def test_averaging_takes_only_the_trials_that_improve_the_validation_objective(digits):
    from sweeper.domain.space import Objective
    from sweeper.ml.ensemble import choose_members

    y = np.asarray(digits.y_val).astype(int)
    first = np.arange(len(y)) < 0.9 * len(y)
    best = _probabilities(y, first, 0.6)  # right on the first 90% of the validation split
    same = best.copy()  # averaging with itself changes nothing
    weak = _probabilities(y, np.zeros(len(y), bool), 0.9)  # wrong everywhere, and sure of it
    mending = _probabilities(y, ~first, 0.9)  # right, and sure, where the best is wrong
    mending[first] = _probabilities(y[first], np.ones(first.sum(), bool), 0.5)  # and right elsewhere, less sure
    accuracy = Objective("val_accuracy", "maximize")
    assert choose_members([best, same, weak], digits, accuracy) == [0]
    assert choose_members([best, weak, mending, same], digits, accuracy) == [0, 2]
    assert choose_members([best, weak, mending], digits, Objective("val_loss", "minimize")) == [0, 2]


def test_the_best_trials_keep_their_models_and_the_final_model_says_what_it_averages(ensemble_study, tmp_path):
    workdir, result = ensemble_study
    trials = sorted(_runs(workdir, "trial"), key=lambda r: -r.data.metrics["objective"])
    [parent] = _runs(workdir, "search")
    numbers = [r.data.tags["trial_number"] for r in trials]
    assert all(_client(workdir).list_artifacts(r.info.run_id, "model") for r in trials[:4])  # the best 4 keep theirs
    assert parent.data.tags["ensemble_candidates"] == ",".join(numbers[1:4])
    summary = " ".join(result.output.split())
    final_line = summary[summary.index("Final model:"):summary.index(" Baseline (")]
    again = " ".join(sweeper(*ENSEMBLE, cwd=workdir).output.split())  # the budget spent: the recorded summary
    assert "nothing to run" in again and final_line in again
    if "ensemble_of" not in parent.data.tags:  # averaging did not improve the validation accuracy
        assert (f"Final model: the best trial alone (averaging it with trials {numbers[1]}, {numbers[2]} and "
                f"{numbers[3]} did not improve val_accuracy on the validation split).") in summary
        return
    averaged = parent.data.tags["ensemble_of"].split(",")
    assert averaged[0] == numbers[0] and set(averaged[1:]) <= set(numbers[1:4])
    single, test = parent.data.metrics["single_test_accuracy"], parent.data.metrics["test_accuracy"]
    assert f"Final model: the average of trials {', '.join(averaged[:-1])} and {averaged[-1]} (trial " \
           f"{numbers[0]} retrained; chosen on the validation split among" in summary
    assert f"on the test split: test_accuracy {test:.4f}, {abs(test - single):.4f}" in summary
    out = tmp_path / "best"
    exported = sweeper("export", "digits", "--out", out, "--format", "onnx", cwd=workdir)
    assert exported.exit_code == 0, exported.output
    card = json.loads((out / "model.json").read_text())
    assert card["model"].startswith(f"the average of trial {numbers[0]}'s configuration retrained")
    assert card["architecture"].count("trial_") == len(averaged)
    assert card["single_model_test_metrics"]["test_accuracy"] == pytest.approx(single)
    assert f"Trial {numbers[0]}'s final model alone scored test_accuracy {single:.4f}" in (out / "MODEL_CARD.md").read_text()


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


@pytest.mark.parametrize("extra,message", [
    ("ensemble: 11", "ensemble: must be at most 10 trials, but got 11 (integer)"),
    ("ensemble: 0", "ensemble: must be an integer >= 1, but got 0 (integer)"),
])
def test_a_space_files_ensemble_out_of_range_names_its_line(tmp_path, extra, message):
    path = write_space(tmp_path / "space.yaml", (SPACES / "digits.yaml").read_text() + f"\n{extra}\n")
    line = path.read_text().splitlines().index(extra) + 1
    result = sweeper("validate", path)
    assert result.exit_code == 1 and result.output.strip() == f"Error: {path}:{line}: {message}"


def test_a_two_objective_space_file_with_an_ensemble_names_its_line(tmp_path):
    path = two_objective_space(tmp_path)
    path.write_text(path.read_text() + "\nensemble: 3\n")
    line = path.read_text().splitlines().index("ensemble: 3") + 1
    result = sweeper("validate", path)
    assert result.exit_code == 1 and result.output.strip() == (
        f"Error: {path}:{line}: ensemble: averages the best trials of one objective, but this space has two (its "
        f"final model is one trial of the Pareto front)")


def test_a_best_trial_retrained_longer_than_it_ran_is_averaged_with_its_retrainings_from_other_seeds(tmp_path):
    space = write_space(tmp_path / "cosine.yaml", COSINE_SPACE)  # 2 epochs: the best epoch is one of the last two
    result = sweeper("search", "digits", "--space", space, "--trials", 2, "--ensemble", 3, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    [parent] = _runs(tmp_path, "search")
    best, tags = parent.data.tags["best_trial_number"], parent.data.tags
    summary = " ".join(result.output.split())
    assert "on training + validation data for 4 epochs" in summary  # 2x the schedule's 2, cosine stretched
    assert summary.count("retraining it again from another seed") == 2
    assert tags["refit_seeds"] == "0,1,2" and "ensemble_of" not in tags and "ensemble_skipped" not in tags
    single, test = parent.data.metrics["single_test_accuracy"], parent.data.metrics["test_accuracy"]
    assert (f"Final model: the average of 3 retrainings of trial {best}'s configuration (seeds 0, 1 and 2), on the "
            f"test split: test_accuracy {test:.4f}, {abs(test - single):.4f} "
            f"{'ahead of' if test >= single else 'behind'} the first retraining alone.") in summary
    out = tmp_path / "best"
    exported = sweeper("export", "digits", "--out", out, "--format", "onnx", cwd=tmp_path)
    assert exported.exit_code == 0, exported.output
    card = json.loads((out / "model.json").read_text())
    assert card["model"] == (f"the average of 3 retrainings of trial {best}'s configuration on training + validation "
                             f"data for 4 epochs each (seeds 0, 1, 2)")
    assert card["architecture"].count(f"trial_{int(best):03d}_seed_") == 3
    assert card["test_metrics"]["test_accuracy"] == pytest.approx(test)  # the model the sweep measured
    assert card["formats"]["onnx"]["max_abs_difference"] < 1e-4

