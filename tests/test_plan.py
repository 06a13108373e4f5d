"""The plan: every setting resolved once (space file < the study's recorded budget < what the caller gave), every
engine rule checked once, the engine's options and the recorded settings derived from it. Fast: no training."""

import json

import pytest

from sweeper.domain.errors import OptionError, UsageError
from sweeper.usecases.plan import make_plan

from .conftest import SPACES, write_space

TWO_OBJECTIVES = (SPACES / "digits.yaml").read_text().replace(
    "objective: {metric: val_accuracy, direction: maximize}",
    "objective:\n  - {metric: val_accuracy, direction: maximize}\n  - {metric: param_count, direction: minimize}")
assert TWO_OBJECTIVES != (SPACES / "digits.yaml").read_text()


def test_defaults_come_from_the_engine_table_and_the_bundled_space(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = make_plan("digits")
    assert (plan.study, plan.backend, plan.algorithm, plan.pruner, plan.task) == (
        "digits", "optuna", "tpe", "median", "classification")
    assert plan.space.source.endswith("digits.yaml")
    tuner = make_plan("digits", backend="keras-tuner")
    assert (tuner.study, tuner.algorithm, tuner.pruner) == ("digits-keras-tuner", "random", "none")
    assert not (tmp_path / "mlruns").exists()  # planning writes nothing


def test_the_engine_options_and_the_settings_derive_from_the_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = make_plan("digits", trials=7, max_epochs=2, seed=5, subset=300, grace_period=30, algorithm="random")
    options = plan.engine_options(worker=2)
    assert (options.study, options.algorithm, options.pruner, options.seed, options.worker, options.grace_period) == (
        "digits", "random", "median", 5, 2, 30)
    assert options.space is plan.space and plan.space.trials == 7
    settings = plan.settings()
    assert settings["trials"] == 7 and settings["subset"] == 300 and settings["timeout_s"] is None
    assert json.loads(json.dumps(settings)) == settings  # one JSON document, typed


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(algorithm="bohb"), OptionError, "--algorithm: 'bohb' is not an algorithm of the optuna backend; expected "
                                          "one of tpe, random, grid, cmaes, nsga2"),
    (dict(backend="keras-tuner", pruner="median"), OptionError, "--pruner: 'median' is not a pruner of the "
                                                                "keras-tuner backend; expected one of none"),
    (dict(backend="keras-tuner", jobs=2), UsageError, "--jobs 2 needs the optuna backend: a keras-tuner study serves "
                                                      "one process at a time"),
    (dict(backend="keras-tuner", storage="sqlite:///kt.db"), UsageError,
     "the keras-tuner backend keeps its state in a folder, but --storage is the URL sqlite:///kt.db; give a folder "
     "path (default: mlruns/keras-tuner)"),
    (dict(algorithm="grid"), UsageError, "the grid algorithm needs a `step` on float parameter 'learning_rate' (or a "
                                         "categorical list of values), but it has none"),
    (dict(target="y"), UsageError, "--target applies to csv:PATH datasets only"),
    (dict(impute="mean"), UsageError, "--impute applies to csv:PATH datasets only"),
    (dict(study="a/b"), UsageError, "the study name 'a/b' holds '/'"),
])
def test_each_engine_and_data_rule_is_checked_once_in_the_plan(tmp_path, monkeypatch, kwargs, error, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error) as caught:
        make_plan("digits", **kwargs)
    assert str(caught.value).startswith(message)


def test_two_objectives_take_no_pruner_and_need_optuna(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = write_space(tmp_path / "two.yaml", TWO_OBJECTIVES)
    assert make_plan("digits", space=space).pruner == "none"
    with pytest.raises(UsageError, match="two objectives need the optuna backend; keras-tuner optimises one"):
        make_plan("digits", space=space, backend="keras-tuner")


def test_the_budget_is_the_space_files_then_the_studys_recorded_one_then_the_callers(tmp_path, monkeypatch):
    from sweeper.store import SweepRecorder

    monkeypatch.chdir(tmp_path)
    assert make_plan("digits").space.trials == 20  # the space file's
    plan = make_plan("digits")
    SweepRecorder.open("digits").open_search(plan.study_record(), space_signature=plan.space.signature(),
                                             settings=plan.settings(), space_text="", shared=True,
                                             budget={"trials": 9, "max_epochs": 4, "patience": 1})
    recorded = make_plan("digits").space
    assert (recorded.trials, recorded.max_epochs, recorded.patience) == (9, 4, 1)  # the study's recorded budget
    given = make_plan("digits", trials=3).space
    assert (given.trials, given.max_epochs) == (3, 4)  # what the caller gave wins, the rest stays recorded


def test_planning_a_sweep_in_a_new_folder_imports_no_mlflow(tmp_path):
    """A new sweep's workers start once it is planned: asking whether a store exists must not first import MLflow
    (1.6 s here, which every new sweep's start-up waited for)."""
    import subprocess
    import sys

    code = ("import sys\nfrom sweeper.usecases.plan import make_plan\nplan = make_plan('digits', timeout='15m')\n"
            "print(plan.study, 'mlflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["digits", "False"]
    assert not (tmp_path / "mlruns").exists()
