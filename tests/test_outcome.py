"""One trial outcome: how a trial ended becomes its outcome in one place (`outcome_of`), and the store and each
engine record it through a table of their own; an engine written in a few lines against the seam gets the same
outcomes from the real trial runner (real store, real training on a few hundred digits)."""

import errno

import pytest

from sweeper.domain.errors import SweepError, Terminated, TrialAbandoned, TrialFailed, TrialPruned
from sweeper.domain.records import OUTCOMES, TrialOutcome, empty_counts, outcome_of


def _pruned():
    exc = TrialPruned("pruned after epoch 2 (val_accuracy=0.1000)")
    exc.train_seconds = 1.5
    return exc


@pytest.mark.parametrize("raised,state,reason,recorded", [
    (None, "complete", "", ""),
    (_pruned(), "pruned", "pruned after epoch 2 (val_accuracy=0.1000)", "pruned after epoch 2 (val_accuracy=0.1000)"),
    (TrialAbandoned("failed by another worker"), "abandoned", "failed by another worker", "failed by another worker"),
    (KeyboardInterrupt(), "interrupted", "interrupted by the user", "interrupted by the user"),
    (Terminated(), "interrupted", "interrupted by the user", "interrupted by the user"),
    (OSError(errno.ENOSPC, "No space left on device", "mlruns/x"), "interrupted",
     "no space left on device writing mlruns/x; free some space and run the same command again to resume",
     "no space left on device writing mlruns/x; free some space and run the same command again to resume"),
    (TrialFailed("loss became nan at epoch 1"), "failed", "loss became nan at epoch 1",
     "TrialFailed: loss became nan at epoch 1"),
    (ValueError("bad shape"), "failed", "ValueError: bad shape", "ValueError: bad shape"),
    (SweepError("3 trials in a row failed"), "failed", "3 trials in a row failed", "SweepError: 3 trials in a row failed"),
])
def test_every_end_of_a_trial_becomes_one_outcome(raised, state, reason, recorded):
    outcome = outcome_of(raised, value=0.9 if raised is None else None, seconds=2.0)
    assert (outcome.state, outcome.reason, outcome.recorded_reason) == (state, reason, recorded)
    assert outcome.value == (0.9 if raised is None else None)
    if state == "pruned":
        assert outcome.seconds == 1.5  # its time in fit, for costing sweeps


def test_the_store_and_each_engine_have_a_row_for_every_outcome():
    from sweeper.engines.optuna_engine import _optuna_state
    from sweeper.store.layout import STATUS

    assert set(STATUS) == set(OUTCOMES)
    assert STATUS["pruned"] == "FINISHED" and STATUS["interrupted"] == STATUS["abandoned"] == "KILLED"
    for state in ("pruned", "failed", "interrupted"):
        assert _optuna_state(state).name in ("PRUNED", "FAIL")
    with pytest.raises(ValueError, match="a trial's outcome is one of"):
        TrialOutcome("lost")
    assert set(empty_counts()) == {"complete", "pruned", "failed", "interrupted", "running"}


class ReplayEngine:
    """An engine in a few lines: it runs the configurations it is given through the seam's trial function and
    keeps the outcomes it is handed (the real engines record them in their own storage)."""

    def __init__(self, configurations):
        self.configurations, self.outcomes = configurations, []

    def optimize(self, run_trial, should_prune=lambda epoch, value: False):
        from sweeper.engines.base import TrialPlan

        for number, configuration in enumerate(self.configurations):
            self.outcomes.append(run_trial(Given(configuration), number, should_prune, TrialPlan()))


class Given:
    def __init__(self, values):
        self.values = values

    def suggest_int(self, name, low, high, *, step=1, log=False):
        return self.values[name]

    suggest_float = suggest_int

    def suggest_categorical(self, name, choices):
        return self.values[name]


def test_an_engine_written_against_the_seam_gets_outcomes_and_the_failure_cap(tmp_path, monkeypatch):
    import mlflow

    from sweeper.domain.events import SweepListener
    from sweeper.domain.space import parse_space
    from sweeper.domain.yaml_lines import load
    from sweeper.store import SweepRecorder
    from sweeper.usecases.plan import make_plan
    from sweeper.usecases.runner import TrialRunner

    monkeypatch.chdir(tmp_path)
    space = parse_space(load("objective: val_accuracy\nparams:\n  n_layers: 2\n  units: 64\n"
                             "  learning_rate: {type: categorical, choices: [0.01, 9.9]}\n  optimizer: sgd\n  batch_size: 8\n"
                             "  l2: {type: categorical, choices: [0.0, 1.0e+30]}\n"
                             "  momentum: 0.9\n  activation: elu\n  kernel_initializer: he_normal\n"), path="s.yaml")
    plan = make_plan("digits", space=space.with_budget(max_epochs=2), subset=300, max_failures=2, pruner="none")
    recorder = SweepRecorder.open("digits")
    recorder.open_search(plan.study_record(), space_signature=plan.space.signature(), settings=plan.settings(),
                         space_text="")
    runner = TrialRunner(plan, plan.load_data(), recorder, SweepListener(), lambda k: [])
    base = {"n_layers": 2, "units_0": 64, "units_1": 64, "optimizer": "sgd"}
    engine = ReplayEngine([{**base, "learning_rate": 0.01, "l2": 0.0}, {**base, "learning_rate": 9.9, "l2": 1e30},
                           {**base, "learning_rate": 9.9, "l2": 1e30}])
    with pytest.raises(SweepError, match="2 trials in a row failed"):  # the cap stops the sweep, past the outcome
        engine.optimize(runner)
    assert [o.state for o in engine.outcomes] == ["complete", "failed"]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = sorted(client.search_runs([recorder.experiment_id], "tags.run_kind = 'trial'"),
                  key=lambda r: int(r.data.tags["trial_number"]))
    assert [(r.data.tags["state"], r.info.status) for r in runs] == [
        ("complete", "FINISHED"), ("failed", "FAILED"), ("failed", "FAILED")]  # each recorded through the table
    assert runs[1].data.tags["state_reason"].startswith("TrialFailed: loss became")


#: one small configuration of the digits space, for the tests that replay it through the real trial runner
ONE_LAYER = {"n_layers": 1, "units_0": 32, "learning_rate": 0.01, "batch_size": 32, "optimizer": "adam",
             "dropout": 0.0, "activation": "relu", "kernel_initializer": "he_normal"}


def _runner_on_digits(**budget):
    """The real trial runner on 300 digits images under an open sweep run in the current folder's store (no
    pruner: the test's own `should_prune` decides). Returns (runner, recorder)."""
    from sweeper.domain.events import SweepListener
    from sweeper.store import SweepRecorder
    from sweeper.usecases.plan import make_plan
    from sweeper.usecases.runner import TrialRunner

    plan = make_plan("digits", subset=300, pruner="none", **budget)
    recorder = SweepRecorder.open("digits")
    recorder.open_search(plan.study_record(), space_signature=plan.space.signature(), settings=plan.settings(),
                         space_text="")
    return TrialRunner(plan, plan.load_data(), recorder, SweepListener(), lambda k: []), recorder


def test_a_trial_taken_away_after_its_last_epoch_ends_abandoned_not_complete(tmp_path, monkeypatch):
    """Another worker may fail a paused worker's trial after its last epoch's check: the trial function asks the
    engine once more when training has ended (value None), and the trial ends abandoned, its run KILLED."""
    import mlflow

    from sweeper.domain.errors import TrialAbandoned

    monkeypatch.chdir(tmp_path)
    runner, recorder = _runner_on_digits(max_epochs=2)
    asked = []

    def taken_away_at_the_end(epoch, value):
        asked.append(value)
        if value is None:
            raise TrialAbandoned("failed by another worker")
        return False

    engine = ReplayEngine([ONE_LAYER])
    engine.optimize(runner, taken_away_at_the_end)
    assert [o.state for o in engine.outcomes] == ["abandoned"] and asked[-1] is None and len(asked) == 3
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    [run] = client.search_runs([recorder.experiment_id], "tags.run_kind = 'trial'")
    assert (run.data.tags["state"], run.info.status) == ("abandoned", "KILLED")


@pytest.mark.parametrize("prune_at,state", [(1, "pruned"), (2, "complete")])
def test_a_trial_is_never_pruned_after_its_last_epoch(tmp_path, monkeypatch, prune_at, state):
    """Pruning after the last epoch saves no training and loses a finished trial (and its model)."""
    monkeypatch.chdir(tmp_path)
    runner, _ = _runner_on_digits(max_epochs=2, patience=2)
    engine = ReplayEngine([ONE_LAYER])
    engine.optimize(runner, lambda epoch, value: epoch == prune_at and value is not None)
    assert [o.state for o in engine.outcomes] == [state]


def test_a_pruned_trial_leaves_its_frames_to_reference_counting_not_to_the_collector(tmp_path, monkeypatch):
    """A trial's exception, kept past its `except`, holds its traceback: every frame of the training (the model,
    Keras' copies of the data) then lives in a reference cycle until a full collection, which the next trial's
    `clear_session` paid (2.3 s in one Fashion-MNIST sweep, after a pruned trial). Nothing of it may outlive the
    trial function."""
    import gc

    monkeypatch.chdir(tmp_path)
    runner, _ = _runner_on_digits(max_epochs=3, patience=3)
    gc.collect()
    gc.disable()
    try:
        engine = ReplayEngine([ONE_LAYER])
        engine.optimize(runner, lambda epoch, value: epoch == 1 and value is not None)
        assert [o.state for o in engine.outcomes] == ["pruned"]
        alive = [o for o in gc.get_objects() if isinstance(o, TrialPruned) and "after epoch 1 " in str(o)]
        assert alive == []
    finally:
        gc.enable()


def test_an_interrupt_while_the_trials_run_is_created_is_recorded_on_that_run(tmp_path, monkeypatch):
    """A signal that lands while the trial's MLflow run is being created is held until the run exists (a store
    write is never cut short) and then raised: the trial's run must record it, not stay RUNNING or end failed."""
    import os
    import signal

    import mlflow

    from sweeper.runtime import interrupts

    monkeypatch.chdir(tmp_path)
    runner, recorder = _runner_on_digits(max_epochs=2)
    log_params = recorder._log_params

    def terminated_meanwhile(run_id, params):
        os.kill(os.getpid(), signal.SIGTERM)
        log_params(run_id, params)

    monkeypatch.setattr(recorder, "_log_params", terminated_meanwhile)
    with interrupts.installed(), pytest.raises(Terminated):
        ReplayEngine([ONE_LAYER]).optimize(runner)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    [run] = client.search_runs([recorder.experiment_id], "tags.run_kind = 'trial'")
    assert (run.data.tags["state"], run.info.status) == ("interrupted", "KILLED")
    assert run.data.params["units_0"] == "32"  # the write the signal landed in was finished first


def test_an_interrupt_that_keras_swallows_while_it_traces_the_training_step_still_ends_the_trial_interrupted(
        tmp_path, monkeypatch):
    """Keras reads a tensor's dynamic shape inside a bare `except:` while it traces the training step: a signal that
    lands there is swallowed and the trial fails later with "ValueError: None values not supported" (seen in CI:
    SIGTERM recorded the trial as failed, and a resume would never run it again). An error after an interrupt is the
    interrupt. The signal is sent from a profile hook at the call Keras guards, so it lands inside that `except:`."""
    import os
    import signal
    import sys

    import mlflow

    from sweeper.runtime import interrupts

    monkeypatch.chdir(tmp_path)
    runner, recorder = _runner_on_digits(max_epochs=2)
    sent = []

    def at_the_guarded_slice(frame, event, arg):
        if event != "call" or frame.f_code.co_name != "_slice_helper":
            return
        caller = frame.f_back
        while caller is not None and caller.f_code.co_name != "shape":  # through TensorFlow's dispatch wrappers
            caller = caller.f_back
        if caller is not None and caller.f_code.co_filename.endswith(os.path.join("tensorflow", "core.py")):
            sys.setprofile(None)
            sent.append(caller.f_lineno)
            os.kill(os.getpid(), signal.SIGTERM)

    engine = ReplayEngine([ONE_LAYER])
    with interrupts.installed(), pytest.raises(Terminated):
        sys.setprofile(at_the_guarded_slice)
        try:
            engine.optimize(runner)
        finally:
            sys.setprofile(None)
    assert sent, "Keras no longer reads a dynamic shape through core.shape: find another call it guards"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    [run] = client.search_runs([recorder.experiment_id], "tags.run_kind = 'trial'")
    assert (run.data.tags["state"], run.info.status) == ("interrupted", "KILLED"), run.data.tags.get("state_reason")
