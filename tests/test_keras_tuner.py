"""Keras Tuner specifics: the HyperParameters adapter, Hyperband's rounds, export, and refusals."""

import subprocess
import sys

import pytest

from sweeper.domain.space import load_space
from sweeper.engines.keras_tuner_engine import HyperParametersSuggester

from .conftest import SPACES, sweeper

SPACE = load_space(SPACES / "digits.yaml")
STUDY = "digits-keras-tuner"  # the default name of a Keras Tuner study of digits


def test_the_adapter_declares_conditional_parameters_to_keras_tuner():
    import keras_tuner as kt

    hp = kt.HyperParameters()
    params = SPACE.sample(HyperParametersSuggester(hp))
    # Keras Tuner's defaults: lowest value, first choice; so one layer and adam
    assert params == {"n_layers": 1, "units_0": 16, "learning_rate": 1e-4, "batch_size": 16, "optimizer": "adam",
                      "dropout": 0.0, "activation": "relu", "kernel_initializer": "he_normal", "l2": 0.0,
                      "batch_norm": False, "weight_decay": 0.0, "label_smoothing": 0.0, "lr_schedule": "plateau",
                      "ema": 0.0, "standardize": False}
    conditions = {h.name: [(c.name, list(c.values)) for c in h.conditions] for h in hp.space}
    assert conditions["units_0"] == [("n_layers", [1, 2, 3])] and conditions["units_2"] == [("n_layers", [3])]
    assert conditions["momentum"] == conditions["nesterov"] == [("optimizer", ["sgd"])]
    assert conditions["learning_rate"] == [] and "l2" not in conditions  # fixed values are not tuned
    assert not hp.is_active("units_1") and not hp.is_active("momentum")


def test_the_adapter_hands_back_booleans_and_keeps_the_bounds():
    import keras_tuner as kt

    hp = kt.HyperParameters()
    SPACE.sample(HyperParametersSuggester(hp))
    hp.values.update(n_layers=3, optimizer="sgd", momentum=0.5, nesterov=1, units_0=257, units_1=32, units_2=16)
    params = SPACE.sample(HyperParametersSuggester(hp))
    assert params["nesterov"] is True  # Keras Tuner stores booleans as 0/1
    assert params["units_0"] == hp.values["units_0"] == 256  # its Bayesian oracle can propose high + 1
    assert [params[f"units_{i}"] for i in (1, 2)] == [32, 16] and params["momentum"] == 0.5


@pytest.fixture(scope="module")
def hyperband_study(tmp_path_factory):
    """Hyperband on 300 digits, up to 3 epochs: three 1-epoch trials, then the best continued to epoch 3."""
    workdir = tmp_path_factory.mktemp("hyperband")
    result = sweeper("search", "digits", "--backend", "keras-tuner", "--algorithm", "hyperband", "--trials", 4,
                     "--subset", 300, "--max-epochs", 3, "--patience", 1, cwd=workdir)
    assert result.exit_code == 0, result.output
    return workdir, result


def _runs(workdir):
    import mlflow

    store = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    experiment = store.get_experiment_by_name(STUDY)
    return store, store.search_runs([experiment.experiment_id], max_results=100)


def test_hyperband_rounds_continue_earlier_trials(hyperband_study):
    workdir, result = hyperband_study
    store, runs = _runs(workdir)
    trials = {int(r.data.tags["trial_number"]): r for r in runs if r.data.tags["run_kind"] == "trial"}
    assert sorted(trials) == [0, 1, 2, 3]
    later = trials[3]
    earlier = trials[int(later.data.tags["continues_trial"])]
    best_first_round = max((trials[n] for n in (0, 1, 2)), key=lambda r: r.data.metrics["objective"])
    assert earlier.info.run_id == best_first_round.info.run_id and later.data.params == earlier.data.params
    assert later.data.tags["initial_epoch"] == "1"
    assert [m.step for m in store.get_metric_history(later.info.run_id, "val_accuracy")][0] == 2
    assert [m.step for m in store.get_metric_history(earlier.info.run_id, "val_accuracy")] == [1]
    trial_dir = workdir / "mlruns" / "keras-tuner" / STUDY / f"trial_{int(earlier.data.tags['trial_number']):04d}"
    assert (trial_dir / "checkpoint.weights.h5").is_file()
    assert f"sweeper export {STUDY} --out best-{STUDY}/" in result.output


def test_export_of_a_keras_tuner_study_reproduces_its_test_accuracy(hyperband_study, tmp_path):
    workdir, _ = hyperband_study
    out = tmp_path / "best"
    exported = sweeper("export", STUDY, "--out", out, cwd=workdir)
    assert exported.exit_code == 0, exported.output
    _, runs = _runs(workdir)
    parent, = [r for r in runs if r.data.tags["run_kind"] == "search"]
    code = ("import sys, numpy as np, keras; from sweeper.ml.data import load_dataset; d = load_dataset('digits'); "
            "m = keras.saving.load_model(sys.argv[1]); "
            "print(float(np.mean(m.predict(d.x_test, verbose=0).argmax(1) == d.y_test)))")
    fresh = subprocess.run([sys.executable, "-c", code, str(out / "model.keras")], capture_output=True, text=True,
                           check=True)
    # the exported model is the one the summary reports and registers: the refit, when there is one
    assert float(fresh.stdout.split()[-1]) == pytest.approx(parent.data.metrics["test_accuracy"], abs=1e-4)


def test_a_study_of_one_engine_is_not_resumed_by_another(hyperband_study):
    workdir, _ = hyperband_study
    result = sweeper("search", "digits", "--study", STUDY, "--trials", 5, cwd=workdir)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: study '{STUDY}' was recorded with backend keras-tuner, but this search has optuna; resume it "
        f"with the same settings or choose another --study")
    assert not (workdir / "mlruns" / "optuna").exists()


def test_keras_tuner_state_is_a_folder_not_a_url(tmp_path):
    result = sweeper("search", "digits", "--backend", "keras-tuner", "--storage", "sqlite:///kt.db", cwd=tmp_path)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: the keras-tuner backend keeps its state in a folder, but --storage is the URL sqlite:///kt.db; "
        "give a folder path (default: mlruns/keras-tuner)")
    assert not (tmp_path / "mlruns" / "keras-tuner").exists() and not (tmp_path / "kt.db").exists()


def test_a_keras_tuner_study_serves_one_process_at_a_time(tmp_path):
    import os

    from sweeper.engines.keras_tuner_engine import _lock_study

    held = _lock_study(tmp_path / "mlruns" / "keras-tuner" / f"{STUDY}.lock", STUDY)  # as another sweep would
    try:
        result = sweeper("search", "digits", "--backend", "keras-tuner", "--trials", 1, cwd=tmp_path)
    finally:
        held.close()
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: the Keras Tuner study '{STUDY}' is being run by another process (pid {os.getpid()}); Keras Tuner "
        f"keeps one process per study, so wait for it, or use --backend optuna to run several workers")
    again = sweeper("search", "digits", "--backend", "keras-tuner", "--trials", 1, "--max-epochs", 1, cwd=tmp_path)
    assert again.exit_code == 0, again.output  # the lock goes with the process that held it


def test_a_keras_tuner_study_is_reported_from_its_mlflow_records(hyperband_study, tmp_path):
    workdir, _ = hyperband_study
    trials = sweeper("trials", STUDY, "--json", cwd=workdir)
    assert trials.exit_code == 0, trials.output
    rows = __import__("json").loads(trials.output)
    assert len(rows) == 4 and {r["state"] for r in rows} <= {"complete", "pruned", "failed"}
    out = tmp_path / "report.html"
    result = sweeper("report", STUDY, "--out", out, cwd=workdir)
    assert result.exit_code == 0, result.output
    page = out.read_text()
    for key in ("optimization_history", "parallel_coordinate", "slice", "learning_curves", "confusion_matrix"):
        assert f'id="plot-{key}"' in page, key
