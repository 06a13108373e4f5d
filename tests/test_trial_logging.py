"""A trial's per-epoch metrics are written to MLflow after each epoch: an interrupt, wherever it lands, loses none of
them and leaves no run RUNNING, even in a process that exits without the interpreter's shutdown. A real SQLite store,
a real signal; another connection's lock holds a write in flight until the process is seen waiting for it, so the
interrupt lands exactly there."""

import subprocess
import sys

import pytest

SCRIPT = r"""
import os, signal, sqlite3, sys, threading, time

from sweeper.domain.records import StudyRecord, outcome_of
from sweeper.runtime import interrupts
from sweeper.store import SweepRecorder

where, db = sys.argv[1], sys.argv[2]
recorder = SweepRecorder.open("small", f"sqlite:///{db}")
study = StudyRecord("small", "", "optuna", "digits", "val_accuracy", "maximize", task="classification")
recorder.open_search(study, space_signature={}, settings={"trials": 1, "max_epochs": 6}, space_text="")
blocker = sqlite3.connect(db, check_same_thread=False, isolation_level=None, timeout=60)

def waiting_for_the_write():
    frame, names = sys._current_frames()[threading.main_thread().ident], set()
    while frame is not None:
        names.add(frame.f_code.co_name)
        frame = frame.f_back
    return {"log_epoch", "log_batch"} <= names

def interrupt_then_let_the_write_land():
    deadline = time.monotonic() + 60
    while not waiting_for_the_write():
        if time.monotonic() > deadline:
            print("never waited for the epoch's write", flush=True)
            os._exit(3)
        time.sleep(0.005)
    os.kill(os.getpid(), signal.SIGINT)
    blocker.execute("COMMIT")

def logs(epoch):
    return {"loss": 1.0 / epoch, "val_accuracy": 0.5 + epoch / 100}

with interrupts.installed():
    run = recorder.start_trial(0, {"units": 8})
    for epoch in range(1, 5):
        run.log_epoch(epoch, logs(epoch))
    try:
        if where == "during the write":  # epoch 5's metrics wait for the lock; the interrupt lands meanwhile
            blocker.execute("BEGIN EXCLUSIVE")
            threading.Thread(target=interrupt_then_let_the_write_land).start()
            run.log_epoch(5, logs(5))
        else:  # between two writes: in the middle of epoch 6's training
            run.log_epoch(5, logs(5))
            os.kill(os.getpid(), signal.SIGINT)
        interrupts.check()  # what the training's checkpoint does after every batch
        print("no interrupt", flush=True)
        os._exit(4)
    except KeyboardInterrupt as exc:
        run.end(outcome_of(exc))
os._exit(130)  # no interpreter shutdown: nothing MLflow would do at exit runs
"""


@pytest.mark.parametrize("where", ["during the write", "between two writes"])
def test_an_interrupt_during_an_epochs_write_or_between_two_loses_no_epoch_and_leaves_nothing_running(tmp_path, where):
    import mlflow

    db = tmp_path / "mlflow.db"
    done = subprocess.run([sys.executable, "-c", SCRIPT, where, str(db)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 130, done.stdout + done.stderr

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    [trial] = [r for r in client.search_runs([client.get_experiment_by_name("small").experiment_id])
               if r.data.tags.get("run_kind") == "trial"]
    assert (trial.info.status, trial.data.tags["state"]) == ("KILLED", "interrupted")
    for metric in ("loss", "val_accuracy"):
        assert [m.step for m in client.get_metric_history(trial.info.run_id, metric)] == [1, 2, 3, 4, 5]
