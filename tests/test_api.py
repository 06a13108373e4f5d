"""sweeper from Python: arrays, DataFrames and model builders in, the same sweep, MLflow records and final model as
the command line; a Sweep to look at, export and reload. Real stores, real training on a few hundred examples."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest

import sweeper

from .conftest import sweeper as cli

TINY = dict(trials=2, max_epochs=2, patience=1, progress=False)


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def digits_arrays():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target  # 8x8 images of 0..16, as they come


def test_arrays_in_give_a_sweep_recorded_like_the_command_lines(here):
    import mlflow

    x, y = digits_arrays()
    s = sweeper.search((x[:400], y[:400]), study="arrays", **TINY)
    assert s.study == "arrays" and s.counts["complete"] + s.counts["pruned"] == 2
    assert s.objective == "val_accuracy" and 0 <= s.best_value <= 1 and "units_0" in s.best_params
    assert set(s.test_metrics) == {"test_accuracy", "test_loss"}
    client = mlflow.MlflowClient(f"sqlite:///{here}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("arrays")
    assert experiment.tags["dataset"].startswith("data:") and experiment.tags["task"] == "classification"
    assert client.get_model_version_by_alias("arrays", "champion").run_id == s.run_id
    kept = list((here / "mlruns" / "datasets").glob("*.npz"))
    assert len(kept) == 1  # the data, kept once for the study's workers, export and report
    assert repr(s).startswith("<Sweep arrays: best val_accuracy ")
    assert s.ui_url == f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs"


def test_a_dataframe_with_a_target_is_swept_as_a_regression(here):
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"rooms": rng.integers(1, 8, 300), "area": rng.normal(80, 20, 300),
                          "city": rng.choice(["north", "south"], 300)})
    frame["price"] = 50 * frame["rooms"] + 2 * frame["area"] + (frame["city"] == "north") * 40 + rng.normal(0, 5, 300)
    s = sweeper.search(frame, target="price", study="houses", **TINY)
    assert s.objective == "val_loss" and set(s.test_metrics) == {"test_loss", "test_mae", "test_rmse"}
    card_dir = s.export(here / "houses-model")
    card = json.loads((card_dir / "model.json").read_text())
    assert card["task"] == "regression" and card["preprocessing"]["kind"] == "tabular"
    assert card["preprocessing"]["features"] == ["rooms", "area", "city_north", "city_south"]


def small_cnn(params, data):
    """A model builder of the tests' own: a convolution over 8x8 digits."""
    import keras

    return keras.Sequential([keras.Input(data.input_shape), keras.layers.Reshape((*data.input_shape, 1)),
                             keras.layers.Conv2D(params["filters"], params["kernel"], activation="relu",
                                                 padding="same"),
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(data.n_outputs, activation="softmax")])


CNN_SPACE = {"objective": "val_accuracy",
             "params": {"learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
                        "filters": {"type": "int", "low": 4, "high": 16, "log": True},
                        "kernel": {"type": "categorical", "choices": [3, 5]}}}


def test_a_model_builder_of_ones_own_is_swept_exported_and_reloaded(here):
    import keras

    x, y = digits_arrays()
    s = sweeper.search((x[:300], y[:300]), space=CNN_SPACE, build=small_cnn, study="cnn", **TINY)
    assert set(s.best_params) >= {"filters", "kernel", "learning_rate"} and "units_0" not in s.best_params
    model = s.best_model()
    assert any(isinstance(layer, keras.layers.Conv2D) for layer in model.layers)
    folder = s.export(here / "cnn-model")
    reloaded = keras.saving.load_model(folder / "model.keras")
    assert any(isinstance(layer, keras.layers.Conv2D) for layer in reloaded.layers)
    from sweeper.store import Store

    store = Store.open()
    recorded = store.recorded_space(store.study("cnn"))  # the space as the sweep kept it: `refine` reads it back
    assert recorded.model == "tests.test_api:small_cnn"  # importable: worker processes can run it too
    assert recorded.builder_params == ["filters", "kernel"]


def test_a_dict_space_with_an_error_names_the_key_path(here):
    bad = {"objective": "val_accuracy", "params": {"n_layers": 1, "units": {"type": "int", "low": 64, "high": 8},
                                                   "learning_rate": 0.01}}
    with pytest.raises(sweeper.SearchSpaceError) as caught:
        sweeper.search("digits", space=bad, **TINY)
    assert str(caught.value) == "params.units: `low <= high` must hold, but got (low=64, high=8)"
    with pytest.raises(sweeper.UsageError, match="a DataFrame needs target= naming the column to predict"):
        import pandas as pd

        sweeper.search(pd.DataFrame({"a": [1, 2]}), **TINY)
    assert not (here / "mlruns").exists()  # refused before any store was made


def test_load_reads_a_cli_study_and_trials_match_the_cli_csv(fashion_study, store):
    import pandas as pd

    workdir, _ = fashion_study
    s = sweeper.load("fashion", tracking_uri=f"sqlite:///{workdir}/mlruns/mlflow.db")
    parent = store.search_runs([store.get_experiment_by_name("fashion").experiment_id], "tags.run_kind = 'search'",
                               order_by=["attributes.start_time DESC"])[0]
    assert s.run_id == parent.info.run_id and s.best_trial == int(parent.data.tags["best_trial_number"])
    assert s.test_metrics["test_accuracy"] == pytest.approx(parent.data.metrics["test_accuracy"])
    from_cli = pd.read_csv(io.StringIO(cli("trials", "fashion", "--csv", cwd=workdir).output))
    from_api = s.trials()
    assert list(from_api.columns) == list(from_cli.columns)
    assert from_api["run_id"].tolist() == from_cli["run_id"].tolist()
    assert np.allclose(from_api["objective"], from_cli["objective"])
    with pytest.raises(sweeper.TrackingError, match="no study 'nope' in the MLflow store"):
        sweeper.load("nope", tracking_uri=f"sqlite:///{workdir}/mlruns/mlflow.db")


def test_an_api_export_reloads_to_the_test_accuracy_it_reports(fashion_study, tmp_path):
    workdir, _ = fashion_study
    s = sweeper.load("fashion", tracking_uri=f"sqlite:///{workdir}/mlruns/mlflow.db")
    folder = s.export(tmp_path / "api-export")
    code = ("import sys, numpy as np, keras; from sweeper.ml.data import load_dataset; d = load_dataset('fashion'); "
            "m = keras.saving.load_model(sys.argv[1]); "
            "print(float(np.mean(m.predict(d.inputs(d.x_test), verbose=0).argmax(1) == d.y_test)))")
    fresh = subprocess.run([sys.executable, "-c", code, str(folder / "model.keras")], capture_output=True, text=True,
                           check=True)
    assert float(fresh.stdout.split()[-1]) == pytest.approx(s.test_metrics["test_accuracy"], abs=1e-4)


def test_an_api_sweep_is_resumed_from_the_command_line(here):
    first = sweeper.search("digits", study="both", subset=300, **TINY)
    assert first.counts["complete"] + first.counts["pruned"] == 2
    resumed = cli("search", "digits", "--study", "both", "--trials", 3, "--max-epochs", 2, "--patience", 1,
                  "--subset", 300, cwd=here)
    assert resumed.exit_code == 0, resumed.output
    assert "Resuming study both: 2 trials finished before" in resumed.stderr
    again = sweeper.load("both")
    assert again.counts["complete"] + again.counts["pruned"] == 3 and again.run_id != first.run_id
