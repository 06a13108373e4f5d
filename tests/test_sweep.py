"""The real stack: Fashion-MNIST slices, Keras training, the Optuna journal and the MLflow contract."""

import json
import os
import subprocess
import sys
from pathlib import Path

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
  l2: 1.0e+30
"""  # the loss overflows to NaN on every backend (at a rate this high alone, JAX's clipped loss stays finite)


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
    # the final model: the best configuration retrained on train + val for the trial's best epoch count, or for
    # 2x the 2 epochs of a cosine schedule that ended while the trial still improved (no --timeout to cap it)
    still_improving = best.data.params["lr_schedule"] == "cosine" and best.data.metrics["best_epoch"] >= 1
    expected = 4 if still_improving else best.data.metrics["best_epoch"]
    assert parent.data.metrics["refit_epochs"] == expected >= 1
    assert 0 < parent.data.metrics["trial_test_accuracy"] <= 1
    assert [a.path for a in store.list_artifacts(parent.info.run_id, "final_model")] == ["final_model/model.keras"]


def test_best_model_is_logged_with_signature_and_registered(fashion_study, store):
    import mlflow

    version = store.get_model_version_by_alias("fashion", "champion")
    experiment = store.get_experiment_by_name("fashion")
    parent = store.search_runs([experiment.experiment_id], "tags.run_kind = 'search'")[0]
    assert version.run_id == parent.info.run_id
    from sweeper.store.files import fluent

    with fluent(store.tracking_uri):  # the source is resolved against the current store
        info = mlflow.models.get_model_info(version.source)
    assert info.signature is not None and info.saved_input_example_info is not None


def test_search_prints_progress_and_a_summary(fashion_study):
    _, result = fashion_study
    summary = " ".join(result.output.split())  # the summary wraps at the terminal's width, where its values fall
    assert "trial 0 complete val_accuracy" in summary
    assert "Best trials by val_accuracy" in summary
    assert "retrained on training + validation data for" in summary
    assert "test_accuracy" in summary and "(the trial's own model: test_accuracy" in summary
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
    mixed = FAILING.replace("learning_rate: 9.9", "learning_rate: 0.01").replace(
        "l2: 1.0e+30", "l2: {type: categorical, choices: [1.0e+30, 0.0]}")
    good = write_space(tmp_path / "mixed.yaml", mixed)
    result = sweeper("search", "fashion", "--space", good, "--trials", 3, *SMALL, "--algorithm", "random",
                     "--seed", 3, "--pruner", "none", "--max-failures", 10, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert " failed " in result.output and " complete " in result.output


PRUNABLE = """\
objective: {metric: val_accuracy, direction: maximize}
params:
  n_layers: 1
  units: 32
  learning_rate: {type: categorical, choices: [0.05, 0.0000001]}
  optimizer: sgd
"""


def test_a_pruned_trial_is_recorded_with_its_cost(tmp_path):
    import mlflow

    space = write_space(tmp_path / "prunable.yaml", PRUNABLE)
    result = sweeper("search", "digits", "--space", space, "--trials", 6, "--max-epochs", 5, "--patience", 5,
                     "--algorithm", "random", "--seed", 1, "--no-refit", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert " pruned " in result.output
    store = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = store.get_experiment_by_name("digits")
    pruned = store.search_runs([experiment.experiment_id], "tags.state = 'pruned'")
    assert pruned and all(r.info.status == "FINISHED" for r in pruned)  # not a failure
    for run in pruned:
        assert run.data.tags["state_reason"].startswith("pruned after epoch")
        assert run.data.params["learning_rate"] == "1e-07" and run.data.metrics["train_seconds"] > 0


def test_a_new_study_tries_the_start_configurations_first(tmp_path):
    import mlflow
    import optuna

    space = write_space(tmp_path / "start.yaml", PRUNABLE.replace("n_layers: 1", "n_layers: {type: int, low: 1, high: 2}")
                        + "start:\n  - {units: [32, 32], learning_rate: 0.05}\n")
    for trials in (2, 3):  # the second run resumes: the start configuration is not tried again
        result = sweeper("search", "digits", "--space", space, "--trials", trials, "--max-epochs", 1, "--seed", 4,
                         "--no-refit", cwd=tmp_path)
        assert result.exit_code == 0, result.output
    store = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = store.search_runs([store.get_experiment_by_name("digits").experiment_id], "tags.run_kind = 'trial'")
    first = next(r.data.params for r in runs if r.data.tags["trial_number"] == "0")
    assert (first["n_layers"], first["units_1"], first["learning_rate"]) == ("2", "32", "0.05")
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "mlruns/optuna/journal.log")))
    trials = optuna.load_study(study_name="digits", storage=storage).trials
    assert [t.number for t in trials if "fixed_params" in t.system_attrs] == [0] and len(trials) == 3


def test_fixed_seed_repeats_the_same_trials_in_one_process_or_in_recycled_workers(tmp_path):
    """The same seed draws the same trials whether they ran in the command's process or each in a fresh worker
    process (SWEEPER_RECYCLE_AFTER=1: a worker replaced after every trial)."""
    import optuna

    args = ["search", "digits", "--trials", 3, "--max-epochs", 1, "--seed", 7, "--pruner", "none", "--subset", 300,
            "--no-refit"]
    assert sweeper(*args, "--study", "a", cwd=tmp_path).exit_code == 0
    recycled = subprocess.run([str(Path(sys.executable).parent / "sweeper"), *map(str, args), "--study", "b"],
                              cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "SWEEPER_OFFLINE": "1", "SWEEPER_RECYCLE_AFTER": "1"})
    assert recycled.returncode == 0, recycled.stderr
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "mlruns/optuna/journal.log")))
    a, b = ([t.params for t in optuna.load_study(study_name=name, storage=storage).trials] for name in "ab")
    assert a == b and len(a) == 3 and len({json.dumps(p, sort_keys=True) for p in a}) == 3
    workers = {t.user_attrs["worker"] for t in optuna.load_study(study_name="b", storage=storage).trials}
    assert len(workers) == 3  # each trial in a process of its own


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
    # the model the summary reports and registers: the refit one, logged in the sweep run
    assert card["mlflow_model_run_id"] == parent.info.run_id and "retrained on training + validation" in card["model"]
    champion = store.get_model_version_by_alias("fashion", "champion")
    assert champion.run_id == parent.info.run_id
    code = ("import sys, numpy as np, keras; from sweeper.ml.data import load_dataset; d = load_dataset('fashion'); "
            "m = keras.saving.load_model(sys.argv[1]); "
            "print(float(np.mean(m.predict(d.inputs(d.x_test), verbose=0).argmax(1) == d.y_test)))")
    fresh = subprocess.run([sys.executable, "-c", code, str(out / "model.keras")], capture_output=True, text=True,
                           check=True)
    assert float(fresh.stdout.strip().splitlines()[-1]) == pytest.approx(
        parent.data.metrics["test_accuracy"], abs=1e-4)
    again = sweeper("export", "fashion", "--out", out, "--tracking-uri", f"sqlite:///{workdir}/mlruns/mlflow.db")
    assert again.exit_code == 1 and f"Error: {out} already exists; choose another --out or add --force" in again.output
    forced = sweeper("export", "fashion", "--out", out, "--force", "--tracking-uri",
                     f"sqlite:///{workdir}/mlruns/mlflow.db")
    assert forced.exit_code == 0 and (out / "model.keras").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["best"]  # nothing half-written beside it


def test_no_refit_keeps_the_trials_own_model(tmp_path):
    import mlflow

    result = sweeper("search", "digits", "--trials", 1, "--max-epochs", 2, "--no-refit", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "retraining" not in result.output and "on the test split: test_accuracy" in result.output
    store = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    parent = store.search_runs([store.get_experiment_by_name("digits").experiment_id], "tags.run_kind = 'search'")[0]
    assert "refit_epochs" not in parent.data.metrics and "trial_test_accuracy" not in parent.data.metrics
    exported = sweeper("export", "digits", "--out", tmp_path / "best", cwd=tmp_path)
    assert exported.exit_code == 0, exported.output
    card = json.loads((tmp_path / "best" / "model.json").read_text())
    assert card["model"] == "trial 0's own model" and card["mlflow_model_run_id"] == card["mlflow_run_id"]
    assert "Trial 0 was not retrained on training + validation data (--no-refit or --pick): exporting its own " \
           "model; --retrain makes the retrained one." in exported.output
    assert card["test_metrics"]["test_accuracy"] == pytest.approx(parent.data.metrics["test_accuracy"], abs=1e-6)


def test_export_of_an_unknown_study(fashion_study):
    workdir, _ = fashion_study
    result = sweeper("export", "nope", "--out", workdir / "x", "--tracking-uri", f"sqlite:///{workdir}/mlruns/mlflow.db")
    assert result.exit_code == 1
    assert "Error: no study 'nope' in the MLflow store" in result.output and "studies: fashion" in result.output
    assert not (workdir / "x").exists()


def test_a_trial_longer_than_the_budget_stops_training_and_the_sweep_still_makes_its_final_model(tmp_path):
    # 5,000 epochs of digits take minutes; a 20-second budget (counted from the command's start, so room is left for
    # opening the store and the data on a slow machine) stops the trial once only the final model's time is left
    # (sized on the running trial), and the trial still completes with its best epoch so far.
    result = sweeper("search", "digits", "--trials", 1, "--max-epochs", 5000, "--patience", 5000, "--pruner", "none",
                     "--timeout", "20s", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "trial   0 complete" in result.output and "Registered in MLflow as models:/digits@champion" in result.output
    import mlflow

    store = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    [trial] = children(store, store.get_experiment_by_name("digits").experiment_id)
    assert trial.data.tags["state"] == "complete"
    assert 1 <= trial.data.metrics["best_epoch"] <= trial.data.metrics["epochs"] < 5000
