"""One contract, every engine: the same tiny real sweeps through each backend x algorithm.

Each engine runs 4 trials of up to 3 epochs on 300 real digits images (3 epochs give Keras Tuner's
Hyperband a second round that continues an earlier trial), then a second study with the same seed,
resumed once, and a Fashion-MNIST sweep whose trials all fail.
"""

import glob
import json
import math

import pytest

from sweeper.domain.space import Choice, FloatRange, IntRange, load_space

from .conftest import SPACES, sweeper, write_space

ENGINES = [("optuna", "tpe"), ("optuna", "random"), ("optuna", "cmaes"),
           ("keras-tuner", "random"), ("keras-tuner", "bayesian"), ("keras-tuner", "hyperband")]
TINY = ["--subset", 300, "--max-epochs", 3, "--patience", 1, "--seed", 11]
SPACE = load_space(SPACES / "digits.yaml")
ALL_FAIL = """\
objective: {metric: val_accuracy, direction: maximize}
params:
  n_layers: 2
  units: 64
  learning_rate: {type: categorical, choices: [9.9, 9.8, 9.7]}
  optimizer: sgd
  batch_size: 8
  momentum: 0.9
  activation: elu
  kernel_initializer: he_normal
  l2: 1.0e+30
"""


def search(workdir, engine, study, trials, *extra, dataset="digits"):
    backend, algorithm = engine
    pruner = ["--pruner", "none"] if backend == "optuna" else []
    return sweeper("search", dataset, "--backend", backend, "--algorithm", algorithm, "--study", study,
                   "--trials", trials, *TINY, *pruner, *extra, cwd=workdir)


def mlflow_store(workdir):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")


def trial_runs(workdir, study):
    store = mlflow_store(workdir)
    experiment = store.get_experiment_by_name(study)
    runs = store.search_runs([experiment.experiment_id], "tags.run_kind = 'trial'", max_results=100)
    return sorted(runs, key=lambda r: (int(r.data.tags["trial_number"]), r.info.start_time))


_STATES = {"COMPLETE": "complete", "COMPLETED": "complete", "FAIL": "failed", "FAILED": "failed"}


def engine_trials(workdir, backend, study):
    """(state, params) of every trial, as the engine itself recorded it (Keras Tuner: booleans as 0/1)."""
    if backend == "optuna":
        import optuna

        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(workdir / "mlruns/optuna/journal.log")))
        return [(_STATES[t.state.name], t.params) for t in optuna.load_study(study_name=study, storage=storage).trials]
    trials = [json.loads(open(f).read()) for f in
              sorted(glob.glob(str(workdir / f"mlruns/keras-tuner/{study}/trial_*/trial.json")))]
    return [(_STATES[t["status"]], {k: v for k, v in t["hyperparameters"]["values"].items()
                                     if not k.startswith("tuner/")}) for t in trials]


@pytest.fixture(scope="module", params=ENGINES, ids=["/".join(e) for e in ENGINES])
def engine_study(request, tmp_path_factory):
    """A finished 4-trial study of one engine."""
    workdir = tmp_path_factory.mktemp("-".join(request.param))
    result = search(workdir, request.param, "contract", 4)
    assert result.exit_code == 0, result.output
    return request.param, workdir


@pytest.fixture(scope="module")
def resumed_study(engine_study):
    """A second study with the same seed: 2 trials, then resumed to 3."""
    engine, workdir = engine_study
    first = search(workdir, engine, "again", 2)
    assert first.exit_code == 0, first.output
    before = trial_runs(workdir, "again")
    resumed = search(workdir, engine, "again", 3)
    assert resumed.exit_code == 0, resumed.output
    return before, resumed


def _inside(spec, value):
    if isinstance(spec, IntRange):
        return spec.low <= value <= spec.high and (value - spec.low) % spec.step == 0
    if isinstance(spec, FloatRange):
        return spec.low <= value <= spec.high
    if isinstance(spec, Choice):
        return value in spec.choices
    return value == spec.value


def _typed(spec, text):
    """An MLflow param (text) back in the space's type."""
    kind = spec.choices[0] if isinstance(spec, Choice) else spec.low if hasattr(spec, "low") else spec.value
    return {bool: lambda t: t == "True", int: int, float: float}.get(type(kind), str)(text)


def test_sampled_values_lie_inside_the_space(engine_study):
    (backend, _), workdir = engine_study
    for run in trial_runs(workdir, "contract"):
        for name, text in run.data.params.items():
            spec = SPACE.params["units" if name.startswith("units_") else name]
            assert _inside(spec, _typed(spec, text)), (name, text)
    for _, params in engine_trials(workdir, backend, "contract"):
        for name, value in params.items():
            spec = SPACE.params["units" if name.startswith("units_") else name]
            assert _inside(spec, value), (name, value)


FIXED = {"l2", "batch_norm", "weight_decay", "label_smoothing", "lr_schedule", "ema", "standardize"}  # in SPACE or by default


def _expected_names(params):
    n_layers = int(params["n_layers"])
    names = {"n_layers", "learning_rate", "batch_size", "optimizer", "dropout", "activation", "kernel_initializer",
             *FIXED} | {f"units_{i}" for i in range(n_layers)}
    return names | ({"momentum", "nesterov"} if params["optimizer"] == "sgd" else set())


def test_conditional_parameters_appear_only_when_active(engine_study):
    (backend, _), workdir = engine_study
    runs = trial_runs(workdir, "contract")
    assert len(runs) == 4
    for run in runs:
        assert set(run.data.params) == _expected_names(run.data.params)
    for _, params in engine_trials(workdir, backend, "contract"):
        assert set(params) == _expected_names(params) - FIXED  # fixed: no engine sees them


def test_mlflow_layout_contract_holds(engine_study):
    (backend, _), workdir = engine_study
    store = mlflow_store(workdir)
    experiment = store.get_experiment_by_name("contract")
    assert experiment.tags["backend"] == backend and experiment.tags["objective_metric"] == "val_accuracy"
    parent, = store.search_runs([experiment.experiment_id], "tags.run_kind = 'search'")
    assert parent.info.status == "FINISHED" and parent.data.tags["backend"] == backend
    assert 0 <= parent.data.metrics["test_accuracy"] <= 1 and parent.data.metrics["trials_complete"] == 4
    runs = trial_runs(workdir, "contract")
    assert [int(r.data.tags["trial_number"]) for r in runs] == [0, 1, 2, 3]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["state"] == "complete"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["backend"] == backend and run.data.tags["dataset"] == "digits"
        steps = [m.step for m in store.get_metric_history(run.info.run_id, "val_accuracy")]
        assert steps and steps == list(range(steps[0], steps[0] + len(steps))) and steps[-1] <= 3
        assert {"loss", "val_loss", "accuracy", "objective", "final_val_accuracy"} <= set(run.data.metrics)
    best = max(runs, key=lambda r: r.data.metrics["objective"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert store.get_model_version_by_alias("contract", "champion").run_id == parent.info.run_id
    states = [state for state, _ in engine_trials(workdir, backend, "contract")]
    assert states == ["complete"] * 4


def test_a_fixed_seed_repeats_the_same_first_trials(engine_study, resumed_study):
    _, workdir = engine_study
    first = [r.data.params for r in trial_runs(workdir, "contract")[:2]]
    again = [r.data.params for r in resumed_study[0]]
    assert again == first


def test_resume_keeps_completed_trials(engine_study, resumed_study):
    (backend, _), workdir = engine_study
    before, resumed = resumed_study
    assert "Resuming study again: 2 trials finished before" in resumed.output
    after = trial_runs(workdir, "again")
    assert [r.info.run_id for r in after[:2]] == [r.info.run_id for r in before]
    assert [int(r.data.tags["trial_number"]) for r in after] == [0, 1, 2]
    assert len(engine_trials(workdir, backend, "again")) == 3


def test_a_failing_trial_does_not_stop_the_sweep_but_the_cap_does(engine_study, tmp_path):
    engine, _ = engine_study
    space = write_space(tmp_path / "fail.yaml", ALL_FAIL)
    # (the l2 penalty overflows the loss to NaN on every backend)
    result = search(tmp_path, engine, "failing", 3, "--space", space, "--max-failures", 2, dataset="fashion")
    assert result.exit_code == 1, result.output
    assert "trial   0 failed" in result.output and "trial   1 failed" in result.output  # went on after one
    assert "Error: 2 trials in a row failed, so the sweep stopped (--max-failures 2); the last one: loss became" \
           in result.output
    runs = trial_runs(tmp_path, "failing")
    assert [(r.data.tags["state"], r.info.status) for r in runs] == [("failed", "FAILED")] * 2
    assert all(math.isfinite(float(r.data.params["learning_rate"])) for r in runs)
    assert [state for state, _ in engine_trials(tmp_path, engine[0], "failing")] == ["failed", "failed"]
    export = sweeper("export", "failing", "--out", tmp_path / "best", cwd=tmp_path)
    assert export.exit_code == 1 and not (tmp_path / "best").exists()
    assert export.output.strip() == "Error: study 'failing' has no completed trial with a model yet"
