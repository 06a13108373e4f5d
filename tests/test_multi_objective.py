"""Two objectives: accuracy against model cost as an Optuna multi-objective study, its Pareto front in the
summary and the report, and `export --pick smallest-within`."""

import json

import mlflow
import pytest

from sweeper.domain.space import load_space

from .conftest import SPACES, sweeper, write_space
from .test_faults import study_trials


def two_objective_space(tmp_path, second="{metric: param_count, direction: minimize}"):
    text = (SPACES / "digits.yaml").read_text()
    return write_space(tmp_path / "two.yaml", text.replace(
        "objective: {metric: val_accuracy, direction: maximize}",
        f"objective:\n  - {{metric: val_accuracy, direction: maximize}}\n  - {second}"))


@pytest.fixture(scope="module")
def two_objective_study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("two-objectives")
    space = two_objective_space(workdir)
    result = sweeper("search", "digits", "--space", space, "--study", "small", "--trials", 8, "--max-epochs", 3,
                     cwd=workdir)
    assert result.exit_code == 0, result.output
    return workdir, result


def test_a_space_may_name_a_validation_metric_and_a_model_cost(tmp_path):
    space = load_space(two_objective_space(tmp_path))
    assert [(o.metric, o.direction) for o in space.objectives] == [("val_accuracy", "maximize"),
                                                                    ("param_count", "minimize")]


@pytest.mark.parametrize("second,message", [
    ("{metric: val_loss, direction: minimize}", "objective[1].metric: must be one of param_count, latency_ms, but "
                                                "got 'val_loss' (text)"),
    ("{metric: param_count, direction: maximize}", "objective[1].direction: must be minimize for param_count, but "
                                                   "got 'maximize' (text)"),
])
def test_a_bad_second_objective_names_its_line(tmp_path, second, message):
    path = two_objective_space(tmp_path, second)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if second in text)
    result = sweeper("validate", path)
    assert result.exit_code == 1 and result.output.strip() == f"Error: {path}:{line}: {message}"


def test_the_study_has_two_objectives_and_the_summary_shows_its_pareto_front(two_objective_study):
    workdir, result = two_objective_study
    trials = [t for t in study_trials(workdir, "small") if t.state.name == "COMPLETE"]
    assert len(trials) == 8 and all(len(t.values) == 2 for t in trials)
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("small")
    runs = {int(r.data.tags["trial_number"]): r for r in client.search_runs([experiment.experiment_id],
                                                                              "tags.run_kind = 'trial'")}
    for trial in trials:  # the study and MLflow agree on both values; every trial keeps its model
        metrics = runs[trial.number].data.metrics
        assert trial.values == [pytest.approx(metrics["objective"]), metrics["param_count"]]
        assert runs[trial.number].data.tags["has_model"] == "true"
    points = [(t.values[0], t.values[1]) for t in trials]
    front = {t.number for t in trials
             if not any(a >= t.values[0] and c <= t.values[1] and (a, c) != tuple(t.values) for a, c in points)}
    table = result.output.split("Pareto front: accuracy against param_count")[1].split("Export the smallest")[0]
    shown = [int(line.split("│")[1]) for line in table.splitlines() if line.startswith("│")]
    assert set(shown) == front
    costs = [runs[n].data.metrics["param_count"] for n in shown]
    assert costs == sorted(costs)  # cheapest first


def test_export_picks_the_smallest_model_within_the_margin(two_objective_study, tmp_path):
    workdir, _ = two_objective_study
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("small")
    runs = client.search_runs([experiment.experiment_id], "tags.state = 'complete'")
    best = max(r.data.metrics["objective"] for r in runs)
    search, = client.search_runs([experiment.experiment_id], "tags.run_kind = 'search'")
    margin = 0.1
    close = [r for r in runs if r.data.metrics["objective"] >= best - margin]
    smallest = min(close, key=lambda r: (r.data.metrics["param_count"], -r.data.metrics["objective"]))
    result = sweeper("export", "small", "--pick", "smallest-within", margin, "--out", tmp_path / "small", cwd=workdir)
    assert result.exit_code == 0, result.output
    number = smallest.data.tags["trial_number"]
    # the pick's model is the sweep's final one when the pick is the best trial (which the sweep retrained), else its own
    model = f"trial {number}'s configuration retrained on training + validation data" \
        if smallest.info.run_id == search.data.tags["best_run_id"] else f"trial {number}'s own model"
    assert f"Picked trial {number} " in result.output and f"Exported {model}" in result.output
    card = json.loads((tmp_path / "small" / "model.json").read_text())
    assert card["parameter_count"] == smallest.data.metrics["param_count"]
    assert card["parameter_count"] <= min(r.data.metrics["param_count"] for r in runs
                                          if r.data.metrics["objective"] == best)


def test_the_report_plots_the_pareto_front(two_objective_study, tmp_path):
    workdir, _ = two_objective_study
    result = sweeper("report", "small", "--out", tmp_path / "r.html", cwd=workdir)
    assert result.exit_code == 0 and "pareto_front" in result.output.split("figures (")[1].split(")")[0]


def test_two_objectives_need_the_optuna_backend(tmp_path):
    result = sweeper("search", "digits", "--space", two_objective_space(tmp_path), "--backend", "keras-tuner",
                     cwd=tmp_path)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == ("Error: two objectives need the optuna backend; keras-tuner "
                                                      "optimises one")
