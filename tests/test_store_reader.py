"""The store's reader: a study written by the store's own writer (a real SQLite MLflow store) reads back as typed
records, the same shape for every reader; the sweep's settings through one decoder."""

import pytest

from sweeper.domain.records import StudyRecord, TrialOutcome

PARAMS = [  # trial number -> parameters as a sampler hands them over
    {"n_layers": 2, "units_0": 64, "units_1": 32, "learning_rate": 0.001, "optimizer": "adam", "nesterov": False},
    {"n_layers": 1, "units_0": 16, "learning_rate": 0.05, "optimizer": "sgd", "nesterov": True},
    {"n_layers": 1, "units_0": 128, "learning_rate": 0.0003, "optimizer": "adam", "nesterov": False},
    {"n_layers": 3, "units_0": 8, "units_1": 8, "units_2": 8, "learning_rate": 0.9, "optimizer": "sgd",
     "nesterov": False},
]
#: trial number -> (outcome, objective, parameter count, keeps its model)
ENDS = [(TrialOutcome("complete", 0.91, seconds=3.0), 0.91, 5000, True),
        (TrialOutcome("pruned", reason="pruned after epoch 1 (val_accuracy=0.2000)", seconds=1.0), None, 400, False),
        (TrialOutcome("complete", 0.90, seconds=2.0), 0.90, 900, True),
        (TrialOutcome("failed", reason="loss became nan at epoch 1", error="TrialFailed"), None, None, False)]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A study of four trials written by the store's writer, as a sweep would."""
    import keras

    from sweeper.store import SweepRecorder

    root = tmp_path_factory.mktemp("store-reader")
    uri = f"sqlite:///{root}/mlflow.db"
    recorder = SweepRecorder.open("small", uri)
    settings = {"trials": 4, "max_epochs": 3, "subset": None, "timeout_s": 90.0, "seed": 0}
    study = StudyRecord("small", "", "optuna", "digits", "val_accuracy", "maximize", cost_metric="param_count",
                        task="classification")
    recorder.open_search(study, space_signature={}, settings=settings, space_text="")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    for number, (params, (outcome, objective, cost, keeps)) in enumerate(zip(PARAMS, ENDS, strict=True)):
        run = recorder.start_trial(number, params)
        run.log_epoch(1, {"val_accuracy": 0.2 + number / 10, "loss": 1.0})
        if objective is not None:
            run.log_result({"val_accuracy": objective}, objective=objective, best_epoch=2, epochs=3, seconds=2.0)
        if cost is not None:
            run.log_metrics({"param_count": cost})
        if keeps:
            run.log_model(model)
        run.end(outcome)
    recorder.end_search("FINISHED", metrics={"test_accuracy": 0.9})
    return uri


def test_a_study_reads_back_as_typed_trial_records(written):
    from sweeper.store import Store

    store = Store.open(written, create=False)
    study = store.study("small", trials=True)
    assert (study.backend, study.dataset, study.metric, study.direction, study.cost_metric) == (
        "optuna", "digits", "val_accuracy", "maximize", "param_count")
    assert [t.state for t in study.trials] == ["complete", "pruned", "complete", "failed"]
    first = study.trials[0]
    assert first.params == PARAMS[0]  # numbers and flags, not MLflow's text
    assert (first.value, first.cost, first.has_model, first.best_epoch, first.epochs) == (0.91, 5000, True, 2, 3)
    assert study.trials[1].value is None and study.trials[1].epochs == 1  # its last reported epoch
    assert study.counts() == {"complete": 2, "pruned": 1, "failed": 1, "interrupted": 0, "running": 0}
    assert [t.number for t in study.completed()] == [0, 2]


def test_best_pareto_and_smallest_within_come_from_the_same_records(written):
    from sweeper.store import Store

    store = Store.open(written, create=False)
    study = store.study("small")
    best = store.best_trial(study)
    assert best.number == 0 and best.has_model
    assert [t.number for t in store.pareto(study)] == [2, 0]  # cheapest first; both on the front
    assert store.smallest_within(study, best, 0.02).number == 2
    assert store.smallest_within(study, best, 0.001).number == 0


def test_a_sweeps_settings_are_read_by_one_decoder_typed_as_written(written):
    import mlflow

    from sweeper.store import Store
    from sweeper.store.store import sweep_settings

    store = Store.open(written, create=False)
    search = store.latest_search(store.study("small"))
    assert search.status == "FINISHED" and search.metrics["test_accuracy"] == 0.9
    assert search.settings == {"trials": 4, "max_epochs": 3, "subset": None, "timeout_s": 90.0, "seed": 0}
    client = mlflow.MlflowClient(written)  # a sweep run from before the JSON document: params only
    old = client.create_run(store.study("small").experiment_id, tags={"run_kind": "search"})
    for key, value in {"trials": "20", "subset": "None", "timeout_s": "1800.0", "pruner": "median"}.items():
        client.log_param(old.info.run_id, key, value)
    assert sweep_settings(client.get_run(old.info.run_id)) == {"trials": 20, "subset": None, "timeout_s": 1800.0,
                                                               "pruner": "median"}
