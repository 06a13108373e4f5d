"""The real stack: Fashion-MNIST slices, Keras training, the Optuna journal and the MLflow contract."""

import json
import subprocess
import sys

import pytest

from .conftest import SMALL, sweeper, write_space

FAILING = """\
objective: {metric: val_accuracy, direction: maximize}
params:
  n_layers: 2
  units: 64
  learning_rate: 9.9
  optimizer: sgd
  momentum: 0.9
  activation: elu
  kernel_initializer: he_normal
"""


def children(store, experiment_id):
    return store.search_runs([experiment_id], "tags.run_kind = 'trial'", max_results=100)


def test_mlflow_layout_contract(fashion_study, store):
    experiment = store.get_experiment_by_name("fashion")
    assert experiment.tags["objective_metric"] == "val_accuracy" and experiment.tags["dataset"] == "fashion"
    parents = store.search_runs([experiment.experiment_id], "tags.run_kind = 'search'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["trials"] == "3" and parent.data.params["max_epochs"] == "2"
    assert 0 < parent.data.metrics["test_accuracy"] <= 1 and "test_loss" in parent.data.metrics
    trials = children(store, experiment.experiment_id)
    assert sorted(int(r.data.tags["trial_number"]) for r in trials) == [0, 1, 2]
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["backend"] == "optuna" and run.data.tags["dataset"] == "fashion"
        assert run.data.tags["state"] == "complete" and run.info.status == "FINISHED"
        assert {"n_layers", "units_0", "learning_rate", "batch_size", "optimizer", "dropout", "activation",
                "kernel_initializer"} <= set(run.data.params)
        history = store.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == list(range(1, len(history) + 1)) and len(history) >= 1
        assert {"loss", "accuracy", "val_loss", "final_val_accuracy", "objective"} <= set(run.data.metrics)
    best = max(trials, key=lambda r: r.data.metrics["objective"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.tags["best_trial_number"] == best.data.tags["trial_number"]
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best.data.metrics["objective"])


def test_best_model_is_logged_with_signature_and_registered(fashion_study, store):
    import mlflow

    version = store.get_model_version_by_alias("fashion", "champion")
    experiment = store.get_experiment_by_name("fashion")
    parent = store.search_runs([experiment.experiment_id], "tags.run_kind = 'search'")[0]
    assert version.run_id == parent.info.run_id
    mlflow.set_tracking_uri(store.tracking_uri)  # the source is resolved against the global store
    info = mlflow.models.get_model_info(version.source)
    assert info.signature is not None and info.saved_input_example_info is not None


def test_search_prints_progress_and_a_summary(fashion_study):
    _, result = fashion_study
    assert "trial   0 complete val_accuracy" in result.output
    assert "Best trials by val_accuracy" in result.output
    assert "on the test split: test_accuracy" in result.output
    assert "sweeper export fashion --out best-fashion/" in result.output and "sweeper ui" in result.output


def test_resume_keeps_finished_trials_and_counts_them(tmp_path):
    first = sweeper("search", "fashion", "--trials", 2, *SMALL, "--pruner", "none", cwd=tmp_path)
    assert first.exit_code == 0, first.output
    again = sweeper("search", "fashion", "--trials", 3, *SMALL, "--pruner", "none", cwd=tmp_path)
    assert again.exit_code == 0, again.output
    assert "Resuming study fashion: 2 trials finished before" in again.output
    assert "trial   2 complete" in again.output and "trial   0 " not in again.output.split("Resuming")[1]
    done = sweeper("search", "fashion", "--trials", 3, *SMALL, cwd=tmp_path)
    assert done.exit_code == 0 and "trial   3" not in done.output  # budget already spent


def test_failed_trials_are_recorded_and_the_cap_stops_the_sweep(tmp_path):
    import mlflow

    space = write_space(tmp_path / "nan.yaml", FAILING)
    result = sweeper("search", "fashion", "--space", space, "--trials", 5, *SMALL, "--max-failures", 2, cwd=tmp_path)
    assert result.exit_code == 1
    assert "Error: 2 trials in a row failed, so the sweep stopped (--max-failures 2); the last one: loss became" \
           in result.output
    store = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = store.get_experiment_by_name("fashion")
    runs = store.search_runs([experiment.experiment_id])
    status = {"failed": "FAILED", "complete": "FINISHED"}
    search = [r for r in runs if r.data.tags["run_kind"] == "search"]
    trials = [r for r in runs if r.data.tags["run_kind"] == "trial"]
    assert [r.info.status for r in search] == ["FAILED"]
    assert all(r.info.status == status[r.data.tags["state"]] for r in trials)  # nothing left RUNNING
    states = [r.data.tags["state"] for r in sorted(trials, key=lambda r: int(r.data.tags["trial_number"]))]
    assert states[-2:] == ["failed", "failed"]
    assert all(r.data.tags["state_reason"].startswith("TrialFailed: loss became") for r in trials
               if r.data.tags["state"] == "failed")


def test_a_failed_trial_does_not_stop_the_sweep(tmp_path):
    good = write_space(tmp_path / "mixed.yaml", FAILING.replace("learning_rate: 9.9",
                                                                "learning_rate: {type: categorical, choices: [9.9, 0.01]}"))
    result = sweeper("search", "fashion", "--space", good, "--trials", 3, *SMALL, "--algorithm", "random",
                     "--seed", 3, "--pruner", "none", "--max-failures", 10, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert " failed " in result.output and " complete " in result.output


def test_fixed_seed_repeats_the_same_trials(tmp_path):
    import optuna

    params = []
    for name in ("a", "b"):
        result = sweeper("search", "digits", "--study", name, "--trials", 3, "--max-epochs", 1, "--seed", 7,
                         "--pruner", "none", cwd=tmp_path)
        assert result.exit_code == 0, result.output
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "mlruns/optuna/journal.log")))
        params.append([t.params for t in optuna.load_study(study_name=name, storage=storage).trials])
    assert params[0] == params[1] and len(params[0]) == 3


def test_export_writes_a_model_that_reproduces_the_logged_test_accuracy(fashion_study, store, tmp_path):
    workdir, _ = fashion_study
    out = tmp_path / "best"
    result = sweeper("export", "fashion", "--out", out, "--tracking-uri", f"sqlite:///{workdir}/mlruns/mlflow.db")
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model.json").read_text())
    assert card["class_names"][9] == "Ankle boot" and card["hyperparameters"]["n_layers"] >= 1
    assert card["mlflow_run_id"] and "val_accuracy" in card["validation_metrics"]
    experiment = store.get_experiment_by_name("fashion")
    parent = store.search_runs([experiment.experiment_id], "tags.run_kind = 'search'")[0]
    assert card["mlflow_run_id"] == parent.data.tags["best_run_id"]
    code = ("import sys, numpy as np, keras; from sweeper.data import load_dataset; d = load_dataset('fashion'); "
            "m = keras.saving.load_model(sys.argv[1]); "
            "print(float(np.mean(m.predict(d.x_test, verbose=0).argmax(1) == d.y_test)))")
    fresh = subprocess.run([sys.executable, "-c", code, str(out / "model.keras")], capture_output=True, text=True,
                           check=True)
    assert float(fresh.stdout.strip().splitlines()[-1]) == pytest.approx(parent.data.metrics["test_accuracy"],
                                                                          abs=1e-4)
    again = sweeper("export", "fashion", "--out", out, "--tracking-uri", f"sqlite:///{workdir}/mlruns/mlflow.db")
    assert again.exit_code == 1 and f"Error: {out} already exists; choose another --out or add --force" in again.output
    forced = sweeper("export", "fashion", "--out", out, "--force", "--tracking-uri",
                     f"sqlite:///{workdir}/mlruns/mlflow.db")
    assert forced.exit_code == 0 and (out / "model.keras").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["best"]  # nothing half-written beside it


def test_export_of_an_unknown_study(fashion_study):
    workdir, _ = fashion_study
    result = sweeper("export", "nope", "--out", workdir / "x", "--tracking-uri", f"sqlite:///{workdir}/mlruns/mlflow.db")
    assert result.exit_code == 1
    assert "Error: no study 'nope' in the MLflow store" in result.output and "studies: fashion" in result.output
    assert not (workdir / "x").exists()
