"""Nothing lost, ever: full disks (real tmpfs mounts), torn and corrupted journals, interrupts while the store
is being created, half stores, read-only stores and bad study names. What a fault needs a process of its own for
(a signal, a full disk under a running sweep, a store changed between two commands) goes through the installed
command; the steps around it run in this process."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import SPACES, here, sweeper
from .test_faults import SLOW, SWEEPER, assert_nothing_running, run, runs, start, study_trials, wait_for_running_trial

QUICK = ["search", "digits", "--max-epochs", 2, "--pruner", "none"]


def _last_line(text):
    return text.strip().splitlines()[-1]


@pytest.fixture
def mount():
    """mount(...) as root, unmounted at the end; skips the test where mounting is refused."""
    mounted = []

    def do(*args, target):
        target.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount here ({done.stderr.strip() or 'not root'})")
        mounted.append(target)
        return target

    yield do
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Write zeros into folder/filler until its file system is full, down to the last block."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 14, 512):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler


def test_a_disk_that_fills_mid_trial_stops_the_sweep_cleanly_and_the_same_command_resumes(tmp_path, mount):
    work = mount("-t", "tmpfs", "-o", "size=48m", "tmpfs", target=tmp_path / "small")
    process = start(work, *SLOW, "--trials", 3)
    wait_for_running_trial(work, process, after=1)
    filler = _fill(work)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1, err
    assert _last_line(err).startswith("Error: no space left on device writing "), err
    assert "Traceback" not in err and "JSONDecodeError" not in err
    filler.unlink()

    resumed = here(work, *SLOW, "--trials", 3, "--max-epochs", 2)
    assert resumed.returncode == 0, resumed.stderr
    assert "Warning" not in resumed.stderr or "torn record" in resumed.stderr  # the journal was never torn
    trials = study_trials(work)
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3
    stopped = [t for t in trials if t.state.name == "FAIL"]
    assert len(stopped) == 1  # the trial the full disk stopped: run again with the same parameters
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == stopped[0].number]
    assert retry.params == stopped[0].params and retry.state.name == "COMPLETE"
    assert_nothing_running(work)
    searches = sorted((r for r in runs(work) if r.data.tags["run_kind"] == "search"), key=lambda r: r.info.start_time)
    assert [r.info.status for r in searches] == ["KILLED", "FINISHED"]  # the full disk's, reaped; the resume


def test_a_model_that_cannot_be_saved_stops_the_sweep_instead_of_failing_the_improving_trial(tmp_path, mount):
    work = tmp_path / "work"
    mount("-t", "tmpfs", "-o", "size=16k", "tmpfs", target=work / "mlruns" / "artifacts")  # room for no model
    result = run(work, *QUICK, "--trials", 2)
    assert result.returncode == 1, result.stderr
    assert _last_line(result.stderr).startswith("Error: no space left on device writing mlruns/artifacts/")
    assert "/artifacts/model/model.keras; free some space" in _last_line(result.stderr)
    assert "Traceback" not in result.stderr
    trials = study_trials(work)
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]  # interrupted, and queued to run again
    assert trials[0].user_attrs["interrupted"] == "full disk" and trials[1].system_attrs["failed_trial"] == 0
    [trial_run] = [r for r in runs(work) if r.data.tags["run_kind"] == "trial"]
    assert trial_run.data.tags["state"] == "interrupted" and trial_run.info.status == "KILLED"
    assert [r.info.status for r in runs(work) if r.data.tags["run_kind"] == "search"] == ["FAILED"]

    subprocess.run(["umount", "-l", str(work / "mlruns" / "artifacts")], check=True)  # space is back
    resumed = here(work, *QUICK, "--trials", 2)
    assert resumed.returncode == 0, resumed.stderr
    trials = study_trials(work)
    assert trials[1].params == trials[0].params and trials[1].state.name == "COMPLETE"
    assert sum(t.state.name == "COMPLETE" for t in trials) == 2
    assert_nothing_running(work)
    assert "Registered in MLflow as models:/digits@champion (version 1)" in resumed.stdout


def test_a_torn_journal_tail_is_set_aside_with_a_warning_and_never_appended_after(tmp_path):
    assert here(tmp_path, *QUICK, "--trials", 1).returncode == 0
    journal = tmp_path / "mlruns" / "optuna" / "journal.log"
    size = journal.stat().st_size
    with open(journal, "ab") as f:
        f.write(b'{"o')  # what a crash or a full disk leaves in the middle of an append
    result = here(tmp_path, *QUICK, "--trials", 2)
    assert result.returncode == 0, result.stderr
    assert (f"Warning: {journal} ended in a torn record (3 bytes at byte offset {size}, left by a crash or a full "
            f"disk); set it aside in journal.log.torn-{size} and went on without it") in result.stderr
    assert (tmp_path / "mlruns" / "optuna" / f"journal.log.torn-{size}").read_bytes() == b'{"o'
    assert [t.state.name for t in study_trials(tmp_path)] == ["COMPLETE", "COMPLETE"]
    assert here(tmp_path, "doctor").stdout.startswith("ok ")


@pytest.mark.parametrize("garbage", [os.urandom(64).replace(b"\n", b"") + b"\n", b'{"op_code": 4, "worker_id\n'],
                         ids=["random bytes", "a truncated record"])
def test_a_corrupted_journal_line_is_named_and_doctor_repairs_it(tmp_path, garbage):
    assert here(tmp_path, *QUICK, "--trials", 1).returncode == 0
    journal = tmp_path / "mlruns" / "optuna" / "journal.log"
    lines = journal.read_bytes().splitlines(keepends=True)
    offset = sum(len(line) for line in lines[:-1])
    journal.write_bytes(b"".join(lines[:-1]) + garbage + lines[-1])  # a stray line, then a record after it
    result = here(tmp_path, *QUICK, "--trials", 2)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert _last_line(result.stderr).startswith(
        f"Error: the Optuna journal {journal} is corrupted: line {len(lines)} (byte offset {offset}) is not a "
        f"journal record (")
    assert _last_line(result.stderr).endswith(
        "; `sweeper doctor --repair` sets the bad lines aside and keeps the rest, or restore the file from a backup")

    checked = here(tmp_path, "doctor")
    assert checked.returncode == 1 and checked.stdout.startswith(f"PROBLEM  {journal}: 1 bad line among ")
    repaired = here(tmp_path, "doctor", "--repair")
    assert repaired.returncode == 0 and "every study loads" in repaired.stdout, repaired.stdout
    assert list(journal.parent.glob("journal.log.before-repair-*"))  # the original is kept
    resumed = here(tmp_path, *QUICK, "--trials", 2)
    assert resumed.returncode == 0, resumed.stderr
    assert sum(t.state.name == "COMPLETE" for t in study_trials(tmp_path)) == 2


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """No empty store kept from earlier runs: the next store is built by MLflow's migrations (seconds)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _wait_for_store_creation(workdir, process):
    """Until the MLflow schema is being built (its file of its own exists, in the store's folder or the cache of
    empty stores): the moment a kill used to break it."""
    deadline = time.monotonic() + 120
    building = [(workdir / "mlruns", ".mlflow.db.new-*"), (workdir / "cache" / "sweeper", ".mlflow-*.db.new-*")]
    while not any(list(folder.glob(pattern)) for folder, pattern in building):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)


@pytest.mark.parametrize("sig,delay", [(signal.SIGINT, 0), (signal.SIGKILL, 0), (signal.SIGINT, 1.5),
                                       (signal.SIGKILL, 1.5)])
def test_an_interrupt_while_the_store_is_created_leaves_no_broken_store(tmp_path, sig, delay, empty_cache):
    process = start(tmp_path, *QUICK, "--trials", 1)
    _wait_for_store_creation(tmp_path, process)
    time.sleep(delay)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode in ((130, 0) if sig == signal.SIGINT else (-9, 0)), err
    assert "Traceback" not in err
    after = here(tmp_path, "studies")  # every later command works
    assert after.returncode in (0, 1) and "already exists" not in after.stderr, after.stderr
    again = here(tmp_path, *QUICK, "--trials", 1)
    assert again.returncode == 0, again.stderr
    assert not list((tmp_path / "mlruns").glob(".mlflow.db.new-*"))
    assert not list((empty_cache / "sweeper").glob(".*.new-*")) and (empty_cache / "sweeper" / f"mlflow-{mlflow_version()}.db").exists()


def mlflow_version():
    import mlflow

    return mlflow.__version__


def test_new_stores_are_copies_of_one_kept_empty_store_rebuilt_when_damaged(tmp_path, empty_cache):
    from sweeper.store.files import open_client

    def new_store(name):
        client = open_client(f"sqlite:///{tmp_path / name / 'mlflow.db'}")
        return [e.name for e in client.search_experiments()]

    assert new_store("a") == ["Default"]
    kept = empty_cache / "sweeper" / f"mlflow-{mlflow_version()}.db"
    kept.write_bytes(b"not a database")  # a damaged copy is made again, never handed on
    assert new_store("b") == ["Default"] and (tmp_path / "b" / "mlflow.db").read_bytes() == kept.read_bytes()
    os.environ["XDG_CACHE_HOME"] = str(kept)  # a cache that cannot be a folder: the store is built in place
    assert new_store("c") == ["Default"]


def test_a_background_sweep_with_sigint_ignored_still_stops_while_the_store_is_created(tmp_path, empty_cache):
    process = subprocess.Popen([SWEEPER, *map(str, QUICK), "--trials", "1"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "SWEEPER_OFFLINE": "1"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    _wait_for_store_creation(tmp_path, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Interrupted." in err, err
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # no store rather than half of one


def test_a_store_an_older_version_left_half_created_is_set_aside(tmp_path):
    import sqlite3

    (tmp_path / "mlruns").mkdir()
    with sqlite3.connect(tmp_path / "mlruns" / "mlflow.db") as db:  # what a kill during MLflow's migrations left
        db.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("CREATE TABLE runs (run_uuid TEXT PRIMARY KEY)")
        db.execute("CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER)")
    read = here(tmp_path, "studies")
    assert read.returncode == 1 and _last_line(read.stderr).startswith(
        f"Error: the MLflow store {tmp_path / 'mlruns' / 'mlflow.db'} was left half-created by an interrupted first "
        f"run (table _alembic_tmp_experiments left over from a migration) and holds no runs;")
    result = here(tmp_path, *QUICK, "--trials", 1)
    assert result.returncode == 0, result.stderr
    assert "Warning: the MLflow store" in result.stderr and "set it aside as mlflow.db.half-created-" in result.stderr
    assert len(list((tmp_path / "mlruns").glob("mlflow.db.half-created-*"))) == 1


def test_a_study_missing_half_its_store_is_refused_unless_started_over(tmp_path):
    assert here(tmp_path, *QUICK, "--trials", 2).returncode == 0
    optuna_dir = tmp_path / "mlruns" / "optuna"
    optuna_dir.rename(tmp_path / "optuna-elsewhere")
    refused = run(tmp_path, *QUICK, "--trials", 2)
    assert refused.returncode == 1 and _last_line(refused.stderr).startswith(
        "Error: the Optuna storage mlruns/optuna/journal.log holds no study 'digits', but the MLflow store "
        "mlruns/mlflow.db holds 2 trial runs of it:")
    assert not optuna_dir.exists()  # the refusal wrote nothing
    (tmp_path / "optuna-elsewhere").rename(optuna_dir)

    (tmp_path / "mlruns" / "mlflow.db").rename(tmp_path / "mlflow-elsewhere.db")
    refused = run(tmp_path, *QUICK, "--trials", 2)
    assert refused.returncode == 1 and "holds no run of study 'digits', but the Optuna storage " \
                                       "mlruns/optuna/journal.log holds 2 finished trials of it" in refused.stderr
    over = run(tmp_path, *QUICK, "--trials", 2, "--start-over")
    assert over.returncode == 0, over.stderr
    assert "Warning: deleted the Optuna study 'digits'" in over.stderr
    assert [t.number for t in study_trials(tmp_path)] == [0, 1]
    assert sorted(r.data.tags["trial_number"] for r in runs(tmp_path) if r.data.tags["run_kind"] == "trial") == ["0", "1"]


def test_a_finished_study_run_again_says_so_and_neither_refits_nor_opens_a_sweep(tmp_path):
    assert here(tmp_path, *QUICK, "--trials", 1).returncode == 0
    again = here(tmp_path, *QUICK, "--trials", 1)
    assert again.returncode == 0, again.stderr
    assert "Its budget was already spent and its final model made: nothing to run" in again.stdout
    assert "retraining" not in again.stderr and "Registered in MLflow as models:/digits@champion (version 1)" in \
        again.stdout
    assert len([r for r in runs(tmp_path) if r.data.tags["run_kind"] == "search"]) == 1


@pytest.mark.parametrize("name,bad", [("a/b", "'/'"), ("x:y@z", "':'"), ("../escape", "'.'"), ("a b", "' '")])
@pytest.mark.parametrize("backend", ["optuna", "keras-tuner"])
def test_a_study_name_no_store_accepts_is_refused_before_any_work(tmp_path, name, bad, backend):
    result = sweeper("search", "digits", "--study", name, "--backend", backend, cwd=tmp_path)
    assert result.exit_code == 2
    assert _last_line(result.output) == (
        f"Error: Invalid value for '--study': the study name '{name}' holds {bad}; a study name becomes an MLflow "
        f"experiment, a registered model (models:/NAME@champion) and a Keras Tuner folder, so it must start with a "
        f"letter or digit, hold only letters, digits, '.', '_' and '-', and have at most 100 characters")
    assert not (tmp_path / "mlruns").exists()


def test_an_empty_or_overlong_study_name_is_a_usage_error(tmp_path):
    empty = sweeper("search", "digits", "--study", "", cwd=tmp_path)
    assert empty.exit_code == 2 and "Error: Invalid value for '--study': the study name is empty;" in empty.output
    long = sweeper("study", "create", "x" * 1000, "--dataset", "digits", cwd=tmp_path)
    assert long.exit_code == 2 and "the study name 'xxxxxxxxxxxxxxxxxxxx...' has 1000 characters;" in long.output
    assert not (tmp_path / "mlruns").exists()


def test_a_read_only_store_can_be_read(fashion_study, tmp_path, mount):
    workdir, _ = fashion_study
    view = mount("--bind", "-o", "ro", str(workdir), target=tmp_path / "view")
    subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
    assert subprocess.run(["touch", str(view / "x")], capture_output=True).returncode != 0  # really read-only
    for args in (["trials", "fashion"], ["studies"]):
        result = here(view, *args)
        assert result.returncode == 0 and "fashion" in result.stdout, result.stderr
    report = here(view, "report", "fashion", "--out", tmp_path / "report.html")
    assert report.returncode == 0, report.stderr
    assert report.stdout.strip().endswith("(not logged in MLflow: the store is read-only).")
    exported = here(view, "export", "fashion", "--out", tmp_path / "best")
    assert exported.returncode == 0, exported.stderr
    assert "is read-only: this export is written but not recorded in it" in exported.stderr
    assert (tmp_path / "best" / "model.keras").is_file()


def test_an_immutable_store_file_can_be_read(tmp_path):
    assert here(tmp_path, *QUICK, "--trials", 1).returncode == 0
    database = tmp_path / "mlruns" / "mlflow.db"
    if subprocess.run(["chattr", "+i", str(database)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is refused on this file system")
    try:
        result = run(tmp_path, "trials", "digits")
        assert result.returncode == 0 and "complete" in result.stdout, result.stderr
    finally:
        subprocess.run(["chattr", "-i", str(database)], check=True)


def test_an_export_cleans_up_after_a_killed_one(fashion_study, tmp_path):
    workdir, _ = fashion_study
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".best.partial-{dead.pid}"  # what a killed export leaves: its pid is gone
    (stale / "card").mkdir(parents=True)
    result = sweeper("export", "fashion", "--out", tmp_path / "best", cwd=workdir)
    assert result.exit_code == 0, result.output
    assert not stale.exists() and (tmp_path / "best" / "model.keras").is_file()


def test_an_optuna_call_on_a_trial_another_worker_failed_abandons_it_whatever_the_timing(tmp_path):
    import optuna

    from sweeper.domain.errors import TrialAbandoned
    from sweeper.engines.optuna_engine import _OwnTrial

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    trial = study.ask()
    own = _OwnTrial(trial, lambda: TrialAbandoned("failed by another worker"), lambda: False)
    own.suggest_float("x", 0, 1)
    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)  # another worker found it silent
    with pytest.raises(TrialAbandoned):
        own.report_and_ask(0.5, 1)  # UpdateFinishedTrialError inside: not the configuration's failure
    with pytest.raises(TrialAbandoned):
        own.suggest_int("n", 1, 3)


def test_the_optuna_engine_abandons_a_trial_failed_elsewhere_when_asked_after_training(tmp_path):
    import optuna

    from sweeper.domain.errors import TrialAbandoned
    from sweeper.domain.records import TrialOutcome
    from sweeper.domain.space import load_space
    from sweeper.engines.base import EngineOptions
    from sweeper.engines.optuna_engine import OptunaEngine

    storage = f"sqlite:///{tmp_path}/s.db"
    space = load_space(SPACES / "digits.yaml").with_budget(trials=1)
    seen = []

    def run_trial(suggester, number, should_prune, plan=None):
        assert should_prune(1, 0.5) is False and should_prune(1, None) is False  # still its own: nothing reported
        elsewhere = optuna.load_study(study_name="s", storage=storage)
        elsewhere.tell(number, state=optuna.trial.TrialState.FAIL)  # another worker found it silent
        try:
            should_prune(1, None)  # the runner's question once training has ended
        except TrialAbandoned as exc:
            seen.append(str(exc))
            return TrialOutcome("abandoned")
        return TrialOutcome("complete", value=0.5)

    with OptunaEngine(EngineOptions(study="s", space=space, storage=storage, pruner="none")) as engine:
        engine.optimize(run_trial, trials=1, last_trial=lambda ran: True)
    assert seen and "failed by another worker" in seen[0]


def test_opening_an_existing_study_writes_nothing_to_its_journal(tmp_path):
    """A worker's standby opens the study while it waits and may be killed unused: opening must not append (Optuna's
    `load_if_exists` appends a creation first, which a kill mid-append would tear)."""
    from sweeper.domain.space import load_space
    from sweeper.engines.base import EngineOptions
    from sweeper.engines.optuna_engine import OptunaEngine

    journal = tmp_path / "journal.log"
    options = EngineOptions(study="s", space=load_space(SPACES / "digits.yaml"), storage=str(journal))
    with OptunaEngine(options):
        pass
    created = journal.read_bytes()
    assert b'"study_name":"s"' in created
    with OptunaEngine(options) as engine:
        assert not engine.is_new and engine.counts()["complete"] == 0
    assert journal.read_bytes() == created


@pytest.mark.parametrize("taker_writes", [True, False])
def test_a_paused_workers_abandoned_trial_run_ends_killed_whichever_worker_writes_first(tmp_path, monkeypatch,
                                                                                        taker_writes):
    """The worker that failed a paused worker's trial reads the run as RUNNING, then ends it as failed; the
    woken worker's `abandoned` must land after that write, not under it (a flake seen in CI)."""
    import threading

    from sweeper.domain.records import StudyRecord, TrialOutcome
    from sweeper.store import SweepRecorder, sweep_runs

    monkeypatch.setattr(sweep_runs, "TAKER_WAIT_S", 60.0 if taker_writes else 0.5)
    recorder = SweepRecorder.open("paused", f"sqlite:///{tmp_path}/mlflow.db")
    recorder.open_search(StudyRecord("paused", "", "optuna", "digits", "val_accuracy", "maximize"),
                         space_signature={}, settings={}, space_text="")
    run = recorder.start_trial(0, {"units": 8})
    woken = threading.Thread(target=run.end, args=(TrialOutcome("abandoned", reason="taken away"),))
    woken.start()  # the taker has read the run as RUNNING already
    woken.join(timeout=3)
    if taker_writes:
        sweep_runs._end_trial(recorder.client, run.run_id, "failed", "its worker stopped sending heartbeats")
    woken.join()
    ended = recorder.client.get_run(run.run_id)
    assert (ended.info.status, ended.data.tags["state"]) == ("KILLED", "abandoned")


@pytest.mark.parametrize("state", ["complete", "pruned"])
def test_a_trial_whose_worker_died_after_ending_its_run_but_before_telling_the_study_is_failed_in_both(tmp_path,
                                                                                                       state):
    """A kill between the trial's run ending in MLflow and Optuna's tell (a window of milliseconds the three-worker
    test once hit): the study fails the trial and retries it, so its run must not stay complete."""
    from sweeper.domain.records import StudyRecord, TrialOutcome
    from sweeper.domain.space import load_space
    from sweeper.engines.base import EngineOptions
    from sweeper.engines.optuna_engine import OptunaEngine
    from sweeper.store import SweepRecorder
    from sweeper.usecases.runner import REAPED_NOTE

    dead = subprocess.Popen(["true"])
    dead.wait()
    recorder = SweepRecorder.open("killed", f"sqlite:///{tmp_path}/mlflow.db")
    recorder.open_search(StudyRecord("killed", "", "optuna", "digits", "val_accuracy", "maximize"),
                         space_signature={}, settings={}, space_text="")
    options = EngineOptions(study="killed", space=load_space(SPACES / "digits.yaml"), storage=str(tmp_path / "j.log"))
    with OptunaEngine(options) as engine:
        trial = engine.study.ask()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}:0")  # a process that is gone
        run = recorder.start_trial(trial.number, {"units": 8})
        run.end(TrialOutcome(state, value=0.9 if state == "complete" else None))  # and then the kill
        assert engine.reap() == [trial.number]
        recorder.end_trial_runs(engine.take_reaped(), REAPED_NOTE)
        assert engine.counts()["failed"] == 1
    ended = recorder.client.get_run(run.run_id)
    assert (ended.info.status, ended.data.tags["state"]) == ("FAILED", "failed")
    assert ended.data.tags["state_reason"] == f"{REAPED_NOTE}, after this run ended {state} and before the study " \
                                              "recorded it"


def test_registration_is_one_version_per_best_trial_even_after_a_kill_between_version_and_alias(tmp_path):
    import mlflow

    from sweeper.store import SweepRecorder
    from sweeper.store.files import fluent
    from sweeper.store.layout import CHAMPION

    assert here(tmp_path, *QUICK, "--trials", 1).returncode == 0
    store = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    champion = store.get_model_version_by_alias("digits", CHAMPION)
    # what a kill right after the version was made, before the alias moved, leaves: a version nothing points at
    with fluent(f"sqlite:///{tmp_path}/mlruns/mlflow.db"):  # a models:/ source resolves in the current store
        orphan = store.create_model_version("digits", champion.source, run_id=champion.run_id,
                                            tags={"trial_run_id": "a-later-best-trial"})
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        tracker = SweepRecorder.open("digits")
        tracker.parent_id = champion.run_id

        class Info:
            model_uri, model_id = champion.source, None

        assert tracker._register(Info, "a-later-best-trial") == orphan.version  # found, not made again
        assert store.get_model_version_by_alias("digits", CHAMPION).version == orphan.version
        assert tracker._register(Info, champion.tags["trial_run_id"]) == champion.version  # and back
    finally:
        os.chdir(old)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    assert len(store.search_model_versions("name = 'digits'")) == 2
    assert store.get_model_version_by_alias("digits", CHAMPION).version == champion.version


def test_a_model_whose_logging_a_kill_cut_short_is_marked_failed_when_its_sweep_is_reaped(tmp_path):
    import mlflow
    from mlflow.entities import LoggedModelStatus

    from sweeper.store import SweepRecorder

    assert here(tmp_path, *QUICK, "--trials", 1).returncode == 0
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("digits")
    dead = subprocess.Popen(["true"])
    dead.wait()
    worker = f"{socket.gethostname()}:{dead.pid}:0"  # a process that is gone
    parent = client.create_run(experiment.experiment_id, tags={"run_kind": "search", "worker": worker})
    pending = client.create_logged_model(experiment.experiment_id, source_run_id=parent.info.run_id)
    assert pending.status == LoggedModelStatus.PENDING
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert SweepRecorder.open("digits").reap_dead_runs() == 1
    finally:
        os.chdir(old)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    assert client.get_run(parent.info.run_id).info.status == "KILLED"
    assert client.get_logged_model(pending.model_id).status == LoggedModelStatus.FAILED


def test_a_store_named_by_its_sqlite_file_keeps_its_artifacts_beside_it_not_where_the_command_runs(tmp_path,
                                                                                                  monkeypatch):
    """MLflow's default would put them under ./mlruns of whichever folder the study's first command ran in."""
    from sweeper.domain.records import StudyRecord
    from sweeper.store import SweepRecorder
    from sweeper.usecases.ui import server_command

    elsewhere, here_ = tmp_path / "stores", tmp_path / "work"
    elsewhere.mkdir()
    here_.mkdir()
    monkeypatch.chdir(here_)
    uri = f"sqlite:///{elsewhere}/team.db"
    recorder = SweepRecorder.open("placed", uri)
    recorder.open_search(StudyRecord("placed", "", "optuna", "digits", "val_accuracy", "maximize"),
                         space_signature={}, settings={}, space_text="params: {}\n")
    [logged] = (elsewhere / "artifacts").rglob("search_space.yaml")
    assert logged.read_text() == "params: {}\n"
    assert list(here_.iterdir()) == []  # nothing written where the command ran
    command = server_command(uri, 5000)
    assert command[command.index("--default-artifact-root") + 1] == (elsewhere / "artifacts").as_uri()
