"""Faults, through the installed command in subprocesses and the real embedded store: kill -9, Ctrl-C,
SIGTERM, parallel workers. A kill waits until a trial's MLflow run is RUNNING, so it lands mid-trial. The resumes
and reads after a fault need no process of their own: they run in this one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import here, outlived_by_nothing

SWEEPER = str(Path(sys.executable).parent / "sweeper")
#: long enough trials (40 epochs, no early stop) that a signal lands inside one
SLOW = ["search", "digits", "--max-epochs", 40, "--patience", 40, "--pruner", "none", "--seed", 5]


def start(workdir, *args, env=None):
    return outlived_by_nothing(subprocess.Popen(
        [SWEEPER, *map(str, args)], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SWEEPER_OFFLINE": "1", **(env or {})}))


def run(workdir, *args):
    return subprocess.run([SWEEPER, *map(str, args)], cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "SWEEPER_OFFLINE": "1"})


def store(workdir):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")


def runs(workdir, study="digits"):
    client = store(workdir)
    experiment = client.get_experiment_by_name(study)
    return [] if experiment is None else client.search_runs([experiment.experiment_id], max_results=1000)


def study_trials(workdir, study="digits"):
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / "mlruns/optuna/journal.log")))
    return optuna.load_study(study_name=study, storage=storage).trials


def _trial_statuses(workdir):
    """Statuses of the trial runs, read with sqlite3 alone: an MlflowClient here would race the sweep's own
    creation of the store's schema."""
    import sqlite3

    # a RUNNING trial counts once it has logged an epoch: it is then inside `fit`
    query = ("SELECT CASE WHEN r.status != 'RUNNING' OR EXISTS (SELECT 1 FROM metrics m WHERE m.run_uuid = "
             "r.run_uuid) THEN r.status ELSE 'STARTING' END FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
             "WHERE t.key = 'run_kind' AND t.value = 'trial'")
    try:
        with sqlite3.connect(f"file:{workdir}/mlruns/mlflow.db?mode=ro", uri=True, timeout=5) as db:
            return [status for status, in db.execute(query)]
    except sqlite3.Error:
        return []  # not created yet


def wait_for_running_trial(workdir, process, after=0):
    """Until `after` trials have finished and the next one's run is RUNNING (the process is mid-trial)."""
    while process.poll() is None:
        statuses = _trial_statuses(workdir)
        finished = [status for status in statuses if status not in ("RUNNING", "STARTING")]
        if "RUNNING" in statuses and len(finished) >= after:
            return
        time.sleep(0.3)
    pytest.fail(f"the sweep ended before a trial was running: {process.communicate()}")


def assert_nothing_running(workdir):
    assert [r.info.run_id for r in runs(workdir) if r.info.status == "RUNNING"] == []
    assert [t.number for t in study_trials(workdir) if t.state.name == "RUNNING"] == []


def test_kill_9_mid_trial_then_resume_reaps_the_trial_and_retries_it(tmp_path):
    process = start(tmp_path, *SLOW, "--trials", 3)
    wait_for_running_trial(tmp_path, process, after=1)
    process.kill()
    process.wait()
    dead = [t for t in study_trials(tmp_path) if t.state.name == "RUNNING"]
    assert [t.number for t in dead] == [1]  # what a journal store keeps forever without reaping

    resumed = here(tmp_path, "search", "digits", "--trials", 3, "--max-epochs", 1, "--pruner", "none")
    assert resumed.returncode == 0, resumed.stderr
    assert "Marked failed: trial 1, left running by a worker that died" in resumed.stderr
    trials = study_trials(tmp_path)
    assert trials[1].state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retry) == 1 and retry[0].params == trials[1].params and retry[0].state.name == "COMPLETE"
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3 and trials[0].state.name == "COMPLETE"
    assert_nothing_running(tmp_path)
    killed = [r for r in runs(tmp_path) if r.data.tags.get("trial_number") == "1" and r.info.status == "FAILED"]
    assert len(killed) == 1 and "its worker process" in killed[0].data.tags["state_reason"]
    searches = sorted((r for r in runs(tmp_path) if r.data.tags["run_kind"] == "search"),
                      key=lambda r: r.info.start_time)
    assert [r.info.status for r in searches] == ["KILLED", "FINISHED"]


@pytest.mark.parametrize("ended_first", [False, True], ids=["mid-trial", "after-its-run-ended"])
def test_kill_9_of_a_keras_tuner_sweep_then_resume_runs_that_trial_again_under_its_number(tmp_path, ended_first):
    """Keras Tuner, the second engine, keeps a killed process's trial running in its oracle and runs it again on
    resume: its first run is failed in MLflow, even one the kill left complete (landing after the run ended and
    before Keras Tuner saved the trial's end: made here by ending the run as that process would have), the second
    completes, and nothing stays running in either."""
    study, engine = "digits-keras-tuner", ["--backend", "keras-tuner"]
    process = start(tmp_path, *SLOW, *engine, "--trials", 3)
    wait_for_running_trial(tmp_path, process, after=1)
    process.kill()
    process.wait()
    if ended_first:
        [killed] = [r for r in runs(tmp_path, study) if r.info.status == "RUNNING" and r.data.tags["run_kind"] == "trial"]
        store(tmp_path).set_tag(killed.info.run_id, "state", "complete")
        store(tmp_path).set_terminated(killed.info.run_id, "FINISHED")

    resumed = here(tmp_path, "search", "digits", *engine, "--trials", 3, "--max-epochs", 1)
    assert resumed.returncode == 0, resumed.stderr
    trial_runs = sorted((r for r in runs(tmp_path, study) if r.data.tags["run_kind"] == "trial"),
                        key=lambda r: (int(r.data.tags["trial_number"]), r.info.start_time))
    assert [(r.data.tags["trial_number"], r.info.status) for r in trial_runs] == \
        [("0", "FINISHED"), ("1", "FAILED"), ("1", "FINISHED"), ("2", "FINISHED")]
    reason = trial_runs[1].data.tags["state_reason"]
    assert ("after this run ended complete and before the study recorded it" in reason) if ended_first else \
        ("its worker process" in reason)
    assert trial_runs[1].data.params == trial_runs[2].data.params  # the same trial, run again
    oracle = [json.loads(path.read_text()) for path in sorted((tmp_path / "mlruns/keras-tuner" / study).glob(
        "trial_*/trial.json"))]
    assert [trial["status"] for trial in oracle] == ["COMPLETED"] * 3
    assert [r.info.status for r in runs(tmp_path, study) if r.info.status == "RUNNING"] == []


@pytest.mark.parametrize("sig,code,said", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_an_interrupt_records_the_trial_prints_the_summary_and_resumes(tmp_path, sig, code, said):
    process = start(tmp_path, *SLOW, "--trials", 3)
    wait_for_running_trial(tmp_path, process, after=1)
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert f"Interrupted ({said}): the running trial is recorded as interrupted" in err
    assert "Study digits: 1 complete, 0 pruned, 0 failed, 1 interrupted trials." in out
    assert "Best trials by val_accuracy" in out
    assert "not yet evaluated on the test split" in out
    assert "Traceback" not in err
    assert_nothing_running(tmp_path)
    interrupted = [r for r in runs(tmp_path) if r.data.tags.get("state") == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0].info.status == "KILLED"
    assert [r.info.status for r in runs(tmp_path) if r.data.tags["run_kind"] == "search"] == ["KILLED"]
    [study] = json.loads(here(tmp_path, "studies", "--json").stdout)  # one vocabulary, the same counts
    assert (study["complete"], study["failed"], study["interrupted"]) == (1, 0, 1)

    resumed = here(tmp_path, "search", "digits", "--trials", 3, "--max-epochs", 1, "--pruner", "none")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming study digits: 1 trial finished before (0 failed, 1 interrupted)" in resumed.stderr
    assert sum(t.state.name == "COMPLETE" for t in study_trials(tmp_path)) == 3


def test_three_workers_share_one_study_and_the_budget_exactly(tmp_path):
    result = run(tmp_path, "search", "digits", "--trials", 7, "--jobs", 3, "--max-epochs", 2, "--pruner", "none")
    assert result.returncode == 0, result.stderr
    trials = study_trials(tmp_path)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 7 and [t.number for t in trials] == list(range(7))
    assert len({t.user_attrs["worker"] for t in trials}) == 3
    trial_runs = [r for r in runs(tmp_path) if r.data.tags["run_kind"] == "trial"]
    parent, = [r for r in runs(tmp_path) if r.data.tags["run_kind"] == "search"]
    assert sorted(int(r.data.tags["trial_number"]) for r in trial_runs) == list(range(7))
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent.info.run_id}
    assert all(r.info.status == "FINISHED" for r in trial_runs) and parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_complete"] == 7 and "test_accuracy" in parent.data.metrics


def test_separate_processes_started_together_on_a_new_store_cooperate(tmp_path):
    args = ["search", "digits", "--trials", 5, "--max-epochs", 2, "--pruner", "none"]
    processes = [start(tmp_path, *args, "--seed", seed) for seed in (1, 2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert all("database is locked" not in err for _, err in outputs)
    trials = study_trials(tmp_path)
    assert sum(t.state.name == "COMPLETE" for t in trials) == 5 and len({t.number for t in trials}) == len(trials)
    assert_nothing_running(tmp_path)
    parent, = [r for r in runs(tmp_path) if r.data.tags["run_kind"] == "search"]  # the second joined the first's
    trial_runs = [r for r in runs(tmp_path) if r.data.tags["run_kind"] == "trial"]
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent.info.run_id}
    assert len({r.data.tags["worker"] for r in trial_runs}) == 2 and parent.info.status == "FINISHED"
    assert sum("Joined the study's running sweep" in err for _, err in outputs) == 1
    assert sum("Registered in MLflow" in out for out, _ in outputs) == 1  # only the last to finish registers


def test_a_long_sweep_runs_in_worker_processes_replaced_every_few_trials(tmp_path):
    """The replacement starts while the worker it replaces runs its last trial (it imports Keras and loads the data
    meanwhile): it was started before that trial ended."""
    env = {**os.environ, "SWEEPER_OFFLINE": "1", "SWEEPER_RECYCLE_AFTER": "2"}
    result = subprocess.run([SWEEPER, "search", "digits", "--trials", "3", "--max-epochs", "20", "--patience", "20",
                             "--pruner", "none"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    trials = study_trials(tmp_path)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    workers = [t.user_attrs["worker"] for t in trials]
    assert len(set(workers)) == 2 and workers[0] == workers[1] != workers[2]
    tick = 1 / os.sysconf("SC_CLK_TCK")  # a process's start is known to a clock tick
    assert trials[1].datetime_start.timestamp() - tick < _started_at(workers[2]) < trials[1].datetime_complete.timestamp()
    assert all(f"trial   {n} complete" in result.stderr for n in range(3))  # the live lines, forwarded
    assert result.stderr.count("Data: ") == 1
    parent, = [r for r in runs(tmp_path) if r.data.tags["run_kind"] == "search"]
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_complete"] == 3


def test_a_worker_whose_memory_grows_is_replaced_before_its_count(tmp_path):
    """Each trial's model builder keeps 150 MiB: with a bound of 100 MiB, the worker's third trial (the first to begin
    with 150 MiB more than its second) is its last, though the count would allow four."""
    space = tmp_path / "leaky.yaml"
    space.write_text("objective: val_accuracy\nmodel: tests.leaky_builder:leaky_mlp\ntrials: 5\nmax_epochs: 1\n"
                     "patience: 0\nparams:\n  learning_rate: 0.01\n  width: {type: int, low: 8, high: 32}\n")
    env = {**os.environ, "SWEEPER_OFFLINE": "1", "SWEEPER_RECYCLE_AFTER": "4", "SWEEPER_RECYCLE_GROWTH_MIB": "100",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([SWEEPER, "search", "digits", "--space", space, "--pruner", "none", "--subset", "200",
                             "--no-refit"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    trials = study_trials(tmp_path)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    workers = [t.user_attrs["worker"] for t in trials]
    assert workers[0] == workers[1] == workers[2] != workers[3] == workers[4]


def _started_at(worker):
    """When the process of a trial's `worker` attribute (host:pid:start, in clock ticks since boot) started."""
    booted = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return booted + int(worker.rsplit(":", 1)[1]) / os.sysconf("SC_CLK_TCK")


def _worker_pids(workdir, study="digits"):
    """The pids of the processes that ran the study's trials (their `worker` attribute, host:pid:start)."""
    return {int(t.user_attrs["worker"].split(":")[1]) for t in study_trials(workdir, study) if "worker" in t.user_attrs}


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"


def _wait_for_trials_in_fit(workdir, process, count):
    """Until `count` trials are RUNNING and inside `fit` (each has logged an epoch)."""
    while process.poll() is None:
        if _trial_statuses(workdir).count("RUNNING") >= count:
            return
        time.sleep(0.3)
    pytest.fail(f"the sweep ended before {count} trials ran together: {process.communicate()}")


def _spawned_workers(pid):
    """The pids of the worker processes `pid` has started (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children if "spawn_main" in _cmdline(child)]


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def test_workers_started_before_the_stores_open_are_let_go_when_the_study_needs_none(tmp_path):
    """A --jobs sweep starts its workers while it opens the stores; a study already complete needs none: they are
    killed (nothing of theirs is written yet), and the command ends with the stored result."""
    args = ["search", "digits", "--trials", 2, "--jobs", 2, "--max-epochs", 1, "--pruner", "none", "--subset", 300]
    assert run(tmp_path, *args).returncode == 0
    again = subprocess.run([SWEEPER, *map(str, args)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "SWEEPER_OFFLINE": "1"})
    assert again.returncode == 0, again.stderr
    assert "nothing to run" in again.stdout + again.stderr
    assert [r.data.tags["run_kind"] for r in runs(tmp_path)].count("search") == 1


def test_an_interrupt_while_the_workers_start_kills_them_and_leaves_nothing_running(tmp_path):
    process = start(tmp_path, "search", "digits", "--trials", 4, "--jobs", 2, "--max-epochs", 1)
    deadline = time.monotonic() + 120
    while len(workers := _spawned_workers(process.pid)) < 2:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)  # a pool that waited for its workers would hang here
    assert process.returncode == 130, err
    assert "Interrupted" in err and "Traceback" not in err and "Exception ignored" not in err
    assert not any(_alive(pid) for pid in workers)
    assert [r.info.run_id for r in runs(tmp_path) if r.info.status == "RUNNING"] == []


def test_sigterm_to_a_jobs_parent_stops_every_worker_at_once_and_no_trial_starts_after_it(tmp_path):
    process = start(tmp_path, *SLOW, "--trials", 9, "--jobs", 3)
    _wait_for_trials_in_fit(tmp_path, process, 3)
    numbers_before = {t.number for t in study_trials(tmp_path)}
    workers = _worker_pids(tmp_path)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "Interrupted (SIGTERM)" in err and "Traceback" not in err and "Exception ignored" not in err
    assert not any(_alive(pid) for pid in workers)
    started_after = [t.number for t in study_trials(tmp_path) if t.number not in numbers_before
                     and t.state.name != "WAITING"]  # a retry queued for an interrupted trial waits for a resume
    assert started_after == []
    assert_nothing_running(tmp_path)
    assert [r.info.status for r in runs(tmp_path) if r.data.tags["run_kind"] == "search"] == ["KILLED"]


def test_a_killed_jobs_parent_takes_its_workers_with_it_and_the_study_resumes(tmp_path):
    process = start(tmp_path, *SLOW, "--trials", 6, "--jobs", 2)
    _wait_for_trials_in_fit(tmp_path, process, 2)
    workers = _worker_pids(tmp_path)
    assert len(workers) == 2
    maps = Path(f"/proc/{process.pid}/maps").read_text()
    assert "tensorflow" not in maps and "jaxlib" not in maps  # the parent of a --jobs sweep: no Keras backend
    for pid in workers:  # the workers train on TensorFlow, without the JAX it would import (105 MiB each)
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "libtensorflow" in maps and "jaxlib" not in maps
    process.kill()
    process.wait()
    deadline = time.monotonic() + 120
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, f"orphan workers still run: {[p for p in workers if _alive(p)]}"
        time.sleep(0.5)
    resumed = here(tmp_path, "search", "digits", "--trials", 6, "--max-epochs", 1, "--pruner", "none")
    assert resumed.returncode == 0, resumed.stderr
    assert sum(t.state.name == "COMPLETE" for t in study_trials(tmp_path)) == 6
    assert_nothing_running(tmp_path)
    searches = sorted((r for r in runs(tmp_path) if r.data.tags["run_kind"] == "search"),
                      key=lambda r: r.info.start_time)
    assert [r.info.status for r in searches] == ["KILLED", "FINISHED"]


def test_a_jobs_timeout_counts_from_when_the_workers_are_ready(tmp_path):
    """The start-up (imports, data, worker processes) outlasts the whole 2 s budget, yet trials run: the clock starts
    when the first worker is ready to train. (A second worker ready more than the budget after the first, as on a
    loaded machine, rightly starts none: so the test asks for one trial, not one per worker.)"""
    launched = time.time()
    result = run(tmp_path, "search", "digits", "--trials", 50, "--jobs", 2, "--timeout", "2s", "--max-epochs", 1,
                 "--pruner", "none")
    assert result.returncode == 0, result.stderr
    assert sum(t.state.name == "COMPLETE" for t in study_trials(tmp_path)) >= 1
    first_trial = min(r.info.start_time for r in runs(tmp_path) if r.data.tags["run_kind"] == "trial") / 1000
    assert first_trial - launched > 2  # the start-up alone took longer than the budget


@pytest.mark.parametrize("trials", [3, 30], ids=["in-process", "one-worker-process"])
def test_a_single_worker_timeout_counts_the_start_up_as_one_process_does(tmp_path, trials):
    """Without --jobs a sweep's budget is its wall time from the start, start-up included, whether its trials run in
    the command's process or (more than 20 trials) in a worker process: a budget that the start-up alone outlasts
    (Keras' import takes longer than 2 s) leaves no time for a trial, and the sweep says so."""
    result = run(tmp_path, "search", "digits", "--trials", trials, "--timeout", "2s", "--max-epochs", 1,
                 "--pruner", "none")
    assert result.returncode == 0, result.stderr
    assert "Study digits: 0 complete, 0 pruned, 0 failed trials." in result.stdout
    assert study_trials(tmp_path) == []


@pytest.mark.parametrize("sig,code,trials,recycle_after", [(signal.SIGTERM, 143, 1, "20"), (signal.SIGINT, 130, 2, "1")],
                         ids=["in-process", "the-last-pool-worker"])
def test_an_interrupt_during_the_final_model_ends_the_sweep_run_and_the_same_command_finishes(tmp_path, sig, code,
                                                                                            trials, recycle_after):
    """In the sweep's process, or in the last of its worker processes (a long sweep's), which makes it."""
    import queue
    import threading

    process = start(tmp_path, "search", "digits", "--trials", trials, "--max-epochs", 40, "--patience", 40,
                    "--pruner", "none", env={"SWEEPER_RECYCLE_AFTER": recycle_after})
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    while True:
        line = lines.get(timeout=300)
        if line.startswith("retraining trial "):
            break
    if trials > 1:  # the final model is the last worker's: this process imported no Keras backend at all
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        assert "tensorflow" not in maps and "jaxlib" not in maps
    process.send_signal(sig)
    out = process.stdout.read()
    process.wait(timeout=120)
    time.sleep(0.5)  # the reader thread's last lines
    err = "".join(lines.get() for _ in range(lines.qsize()))
    assert process.returncode == code, err
    assert f"Study digits: {trials} complete" in out and "while making the final model: every trial is kept" in err
    assert_nothing_running(tmp_path)
    assert [r.info.status for r in runs(tmp_path) if r.data.tags["run_kind"] == "search"] == ["KILLED"]
    resumed = here(tmp_path, "search", "digits", "--trials", trials, "--max-epochs", 40, "--patience", 40, "--pruner",
                  "none")
    assert resumed.returncode == 0, resumed.stderr
    assert "Registered in MLflow as models:/digits@champion (version 1)" in resumed.stdout
    searches = sorted((r for r in runs(tmp_path) if r.data.tags["run_kind"] == "search"),
                      key=lambda r: r.info.start_time)
    assert [r.info.status for r in searches] == ["KILLED", "FINISHED"]


def test_an_error_of_the_pool_worker_making_the_final_model_reaches_the_parent_as_it_was_or_in_words():
    """The last pool worker's final-model error crosses to the parent: a full disk as the OSError it is (the parent
    names the store, as for its own errors); an error that cannot be pickled as its type and words."""
    import errno
    import threading

    from sweeper.domain.errors import SweepError
    from sweeper.usecases.pool import _picklable

    full = OSError(errno.ENOSPC, "No space left on device", "mlruns/x")
    assert _picklable(full) is full

    class Holding(Exception):
        def __init__(self):
            super().__init__("holds a lock")
            self.lock = threading.Lock()  # locks cannot be pickled

    said = _picklable(Holding())
    assert isinstance(said, SweepError) and str(said) == "Holding: holds a lock"
