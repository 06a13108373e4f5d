"""`sweeper refine`: a space narrowed around a study's top trials, written as YAML, swept warm-started."""

import math

import mlflow
import pytest

from sweeper.domain.errors import UsageError
from sweeper.domain.records import StudyRecord, TrialRecord
from sweeper.domain.space import Choice, dump_space, load_space
from sweeper.usecases.refine import narrow

from .conftest import SPACES, sweeper
from .test_faults import study_trials


def _record(values_and_params):
    trials = [TrialRecord(i, "complete", value, 1.0, 3, params, f"run{i}", "search")
              for i, (value, params) in enumerate(values_and_params)]
    return StudyRecord("s", "1", "optuna", "digits", "val_accuracy", "maximize", trials)


def _params(n_layers, units, lr, optimizer, dropout, batch=32):
    return {"n_layers": n_layers, **{f"units_{i}": u for i, u in enumerate(units)}, "learning_rate": lr,
            "batch_size": batch, "optimizer": optimizer, "dropout": dropout, "activation": "relu",
            "kernel_initializer": "he_normal"}


def test_ranges_shrink_around_the_top_trials_and_choices_keep_what_they_chose():
    space = load_space(SPACES / "digits.yaml")
    record = _record([(0.97, _params(2, [128, 64], 1e-3, "adam", 0.1)),
                      (0.96, _params(2, [100, 50], 3e-3, "rmsprop", 0.2, batch=64)),
                      (0.95, _params(1, [80], 2e-3, "adam", 0.15)),
                      (0.50, _params(3, [16, 16, 16], 9e-2, "sgd", 0.5))])  # not among the top 3
    refined = narrow(space, record, top=3, margin=0.25)
    p = refined.space.params
    assert [t.value for t in refined.top] == [0.97, 0.96, 0.95]
    assert (p["n_layers"].low, p["n_layers"].high) == (1, 3)  # 1..2 plus a quarter of a layer, rounded out
    lr_pad = 0.25 * math.log(3e-3 / 1e-3)
    assert p["learning_rate"].low == pytest.approx(1e-3 * math.exp(-lr_pad), rel=1e-2)
    assert p["learning_rate"].high == pytest.approx(3e-3 * math.exp(lr_pad), rel=1e-2) and p["learning_rate"].log
    assert p["units"].low <= 50 and p["units"].high >= 128 and p["units"].high < 256  # every layer's units
    assert p["dropout"].low == pytest.approx(0.075) and p["dropout"].high == pytest.approx(0.225)
    assert p["optimizer"] == Choice(("adam", "rmsprop")) and p["batch_size"] == Choice((32, 64))
    assert p["momentum"] == space.params["momentum"]  # no top trial used sgd: left as it was
    assert any(c.startswith("learning_rate: 0.0001..0.1 log -> ") for c in refined.changes)


def test_a_narrowed_space_reads_back_the_same_from_its_yaml(tmp_path):
    space = load_space(SPACES / "fashion.yaml")
    record = _record([(0.9, _params(2, [256, 128], 1e-3, "adam", 0.2, batch=256)),
                      (0.89, _params(2, [300, 190], 5e-4, "adam", 0.3, batch=128))])
    refined = narrow(space, record, top=5, margin=0.5).space
    (tmp_path / "r.yaml").write_text(dump_space(refined))
    assert load_space(tmp_path / "r.yaml").signature() == refined.signature()


def test_refining_needs_two_complete_trials():
    with pytest.raises(UsageError, match=r"study 's' has 1 complete trial\(s\); refining needs at least 2"):
        narrow(load_space(SPACES / "digits.yaml"), _record([(0.9, _params(1, [32], 1e-3, "adam", 0.0))]),
               top=5, margin=0.25)


def test_refine_writes_the_space_and_sweeps_it_warm_started_under_its_own_tagged_parent(tmp_path):
    first = sweeper("search", "digits", "--trials", 5, "--max-epochs", 2, "--pruner", "none", cwd=tmp_path)
    assert first.exit_code == 0, first.output
    result = sweeper("refine", "digits", "--top", 3, "--trials", 2, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    refined = load_space(tmp_path / "digits-refined.yaml")
    assert refined.trials == 5 and refined.max_epochs == 2  # 3 warm-start + 2 new; the first stage's epochs
    assert "# narrowed around the top trials:" in (tmp_path / "digits-refined.yaml").read_text()
    trials = study_trials(tmp_path, "digits-refined")
    warm = [t for t in trials if t.user_attrs.get("warm_start")]
    new = [t for t in trials if not t.user_attrs.get("warm_start")]
    stage_one = sorted((t for t in study_trials(tmp_path) if t.state.name == "COMPLETE"), key=lambda t: -t.value)
    assert [(t.params, t.value) for t in warm] == [(t.params, pytest.approx(t.value)) for t in stage_one[:3]]
    assert [t.state.name for t in new] == ["COMPLETE", "COMPLETE"]
    for trial in new:  # drawn from the narrowed space
        assert refined.params["learning_rate"].contains(trial.params["learning_rate"])
        assert trial.params["optimizer"] in refined.params["optimizer"].choices
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("digits-refined")
    assert experiment.tags["refines"] == "digits"
    [parent] = client.search_runs([experiment.experiment_id], "tags.run_kind = 'search'")
    assert parent.data.tags["refines"] == "digits" and parent.data.params["warm_start_trials"] == "3"
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_complete"] == 5
    assert "test_accuracy" in parent.data.metrics  # its own trials keep models, whatever the first stage scored
    assert "First stage: digits's best val_accuracy" in result.output
    runs = client.search_runs([experiment.experiment_id], "tags.run_kind = 'trial'")
    assert sorted(int(r.data.tags["trial_number"]) for r in runs) == [t.number for t in new]  # trained ones only


def test_refine_refuses_to_overwrite_its_output_and_writes_nothing(tmp_path):
    assert sweeper("search", "digits", "--trials", 3, "--max-epochs", 1, "--pruner", "none",
                   cwd=tmp_path).exit_code == 0
    (tmp_path / "digits-refined.yaml").write_text("mine")
    result = sweeper("refine", "digits", cwd=tmp_path)
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1] == (
        "Error: digits-refined.yaml exists; choose another --out or add --force to replace it")
    assert (tmp_path / "digits-refined.yaml").read_text() == "mine"
    assert mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db").get_experiment_by_name("digits-refined") is None


def test_refine_of_an_unknown_study_is_one_error_line(tmp_path):
    result = sweeper("refine", "nope", cwd=tmp_path)
    assert result.exit_code == 1 and result.output.startswith("Error: no study 'nope' in the MLflow store")
