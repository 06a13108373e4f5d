"""Many workers on one study through a real PostgreSQL (a throwaway cluster on 127.0.0.1): the global budget,
heartbeats that fail a killed worker's trial and retry it, a paused worker that goes on, secrets kept."""

import os
import re
import signal
import subprocess
import time
from collections import Counter

import pytest

from .conftest import PG_PASSWORD, SPACES, load_pg_study, outlived_by_nothing, sweeper, write_space
from .test_faults import SWEEPER, runs

#: trials long enough (up to 40 epochs on digits, no early stop) that a signal lands inside one
SLOW = ["search", "digits", "--max-epochs", 40, "--patience", 40, "--pruner", "none", "--grace-period", 10]


def start_worker(workdir, storage, *args, env=None):
    """A `sweeper search` process that reads the storage URL (with its password) from SWEEPER_STORAGE."""
    env = {**os.environ, "SWEEPER_OFFLINE": "1", "SWEEPER_STORAGE": storage, **(env or {})}
    return outlived_by_nothing(subprocess.Popen([SWEEPER, *map(str, args)], cwd=workdir, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, text=True, env=env))


def load(storage, study="digits"):
    return load_pg_study(storage, study)


def wait_for_trial_of(storage, process, timeout=180, study="digits"):
    """The RUNNING trial of `process` (by the worker id it tags its trials with), once it is in `fit`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            trials = load(storage, study).trials
        except KeyError:  # the study is not created yet
            trials = []
        for trial in trials:
            worker = trial.user_attrs.get("worker", "")
            if trial.state.name == "RUNNING" and worker.split(":")[1:2] == [str(process.pid)] and trial.intermediate_values:
                return trial
        time.sleep(0.3)
    pytest.fail("no trial of the worker started in time")


def pause_in_a_trial(storage, process, study, epochs):
    """SIGSTOP `process` while it trains, with epochs left (whose ends check the trial is still its own); its
    RUNNING trial, read once it is stopped. A fast trial may end between the read that found it and the signal:
    then the stopped process is let go and caught again."""
    for _ in range(20):
        wait_for_trial_of(storage, process, study=study)
        process.send_signal(signal.SIGSTOP)
        for trial in load(storage, study).trials:
            if trial.state.name == "RUNNING" and trial.user_attrs.get("worker", "").split(":")[1:2] == \
                    [str(process.pid)] and len(trial.intermediate_values) < epochs - 2:
                return trial
        process.send_signal(signal.SIGCONT)
    pytest.fail("the worker was never stopped inside a trial")


def finish(processes, timeout=600):
    return [process.communicate(timeout=timeout)[0] for process in processes]


def test_three_workers_meet_the_global_budget_and_retry_a_killed_workers_trial(pg_database, tmp_path):
    workers = [start_worker(tmp_path, pg_database, *SLOW, "--trials", 6, "--max-epochs", 8, "--patience", 8,
                            "--seed", i) for i in range(3)]
    victim = pause_in_a_trial(pg_database, workers[0], "digits", epochs=8)  # stopped mid-fit: the kill lands there
    workers[0].send_signal(signal.SIGKILL)
    workers[0].wait()
    outputs = finish(workers[1:])
    assert [w.returncode for w in workers[1:]] == [0, 0], outputs
    trials = load(pg_database).trials
    states = Counter(t.state.name for t in trials)
    assert states["COMPLETE"] == 6 and states["RUNNING"] == 0  # the budget, exactly, across the workers
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # no duplicate or missing numbers
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state.name == "FAIL"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].params == victim.params and retries[0].state.name == "COMPLETE"
    trial_runs = [r for r in runs(tmp_path) if r.data.tags.get("run_kind") == "trial"]
    assert [r.info.run_id for r in runs(tmp_path) if r.info.status == "RUNNING"] == []  # MLflow repaired
    complete = sorted(int(r.data.tags["trial_number"]) for r in trial_runs if r.data.tags["state"] == "complete")
    assert complete == sorted(t.number for t in trials if t.state.name == "COMPLETE")
    [victim_run] = [r for r in trial_runs if r.data.tags["trial_number"] == str(victim.number)]
    assert victim_run.info.status == "FAILED"
    [parent] = [r for r in runs(tmp_path) if r.data.tags.get("run_kind") == "search"]  # one tree for the sweep
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_complete"] == 6
    assert sum("Registered in MLflow" in output for output in outputs) == 1  # the last worker to finish
    assert all(PG_PASSWORD not in output and "p%40ss" not in output for output in outputs)


def test_a_paused_worker_finds_its_trial_failed_warns_and_goes_on(pg_database, mlflow_server, tmp_path):
    """On a tracking server, as workers that may be paused are run: a worker paused inside a write to the embedded
    SQLite file would hold its lock, and every other worker would wait for it (README, "Scaling out")."""
    server = {"MLFLOW_TRACKING_URI": mlflow_server}
    paused, other = (start_worker(tmp_path, pg_database, *SLOW, "--study", "paused", "--trials", 3, "--max-epochs",
                                  12, "--patience", 12, "--seed", i, env=server) for i in range(2))
    trial = pause_in_a_trial(pg_database, paused, study="paused", epochs=12)
    try:
        deadline = time.monotonic() + 120  # the other worker fails it after the 10 s grace period
        while load(pg_database, "paused").trials[trial.number].state.name == "RUNNING":
            assert time.monotonic() < deadline, "the silent trial was not failed"
            time.sleep(0.5)
    finally:
        paused.send_signal(signal.SIGCONT)
    paused_output, other_output = finish([paused, other])
    assert paused.returncode == 0 and "Cannot tell" not in paused_output, paused_output
    assert f"trial {trial.number:>3} failed" in paused_output and "failed by another worker" in paused_output
    trials = load(pg_database, "paused").trials
    assert Counter(t.state.name for t in trials)["COMPLETE"] == 3
    [run] = [r for r in server_runs(mlflow_server, "paused") if r.data.tags.get("trial_number") == str(trial.number)]
    assert run.info.status == "KILLED" and run.data.tags["state"] == "abandoned"


def server_runs(server, study):
    import mlflow

    client = mlflow.MlflowClient(server)
    return client.search_runs([client.get_experiment_by_name(study).experiment_id], max_results=1000)


def test_the_storage_password_never_reaches_output_or_mlflow(pg_database, tmp_path):
    result = sweeper("search", "digits", "--trials", 1, "--max-epochs", 1, "--storage", pg_database, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    recorded = [str(r.data.params) + str(r.data.tags) for r in runs(tmp_path)]
    parent = next(r for r in runs(tmp_path) if r.data.tags.get("run_kind") == "search")
    assert parent.data.params["storage"].startswith("postgresql+psycopg://postgres:***@127.0.0.1:")
    for text in [result.output, *recorded]:
        assert PG_PASSWORD not in text and "p%40ss" not in text


def test_a_wrong_password_is_one_error_line_without_it(pg_database, tmp_path):
    wrong = pg_database.replace("p%40ss", "n0t-it")
    result = sweeper("search", "digits", "--trials", 1, "--storage", wrong, cwd=tmp_path)
    assert result.exit_code == 1 and "n0t-it" not in result.output
    assert result.output.strip().splitlines()[-1].startswith(
        "Error: cannot open the Optuna storage postgresql+psycopg://postgres:***@127.0.0.1:")


@pytest.mark.parametrize("url,line", [
    ("postgresql://me:pa{ss@127.0.0.1/db", "Error: --storage postgresql://me:***@127.0.0.1/db contains { or }; "
     "percent-encode them in the password ({ as %7B, } as %7D), as every special character (@ : / %) must be"),
    ("postgresql://me:pw@127.0.0.1:port/db", "Error: --storage postgresql://me:***@127.0.0.1:port/db is not a valid "
     "URL (Port could not be cast to integer value as 'port'); a password with @ : / % must be percent-encoded "
     "(@ as %40, : as %3A, / as %2F, % as %25)"),
])
def test_a_malformed_storage_url_is_refused_before_any_work(url, line, tmp_path):
    result = sweeper("search", "digits", "--storage", url, cwd=tmp_path)
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1] == line
    assert not (tmp_path / "mlruns").exists()


def test_four_workers_started_together_share_a_study_and_a_tracking_server(pg_database, mlflow_server, tmp_path):
    import mlflow

    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    workers = [start_worker(tmp_path, pg_database, "search", "digits", "--study", "together", "--trials", 8,
                            "--max-epochs", 2, "--pruner", "none", "--seed", i, env=env) for i in range(4)]
    outputs = finish(workers)
    assert [w.returncode for w in workers] == [0, 0, 0, 0], outputs
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # everything went to the server
    trials = load(pg_database, "together").trials
    assert Counter(t.state.name for t in trials) == {"COMPLETE": 8}
    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("together")
    found = client.search_runs([experiment.experiment_id], max_results=100)
    [search] = [r.info.run_id for r in found if r.data.tags["run_kind"] == "search"]  # joined, not raced
    trial_runs = [r for r in found if r.data.tags["run_kind"] == "trial"]
    assert sorted(int(r.data.tags["trial_number"]) for r in trial_runs) == list(range(8))
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {search}
    assert all(r.info.status == "FINISHED" for r in found)
    assert client.get_model_version_by_alias("together", "champion").tags["trial_run_id"] in {
        r.info.run_id for r in trial_runs}


def test_workers_join_a_created_study_under_one_parent_run_shown_by_the_ui(pg_database, mlflow_server, tmp_path):
    import mlflow

    env = {"SWEEPER_STORAGE": pg_database, "MLFLOW_TRACKING_URI": mlflow_server}
    created = subprocess.run([SWEEPER, "study", "create", "shared", "--dataset", "digits", "--trials", "6",
                              "--max-epochs", "2"], cwd=tmp_path, capture_output=True, text=True,
                             env={**os.environ, **env})
    assert created.returncode == 0, created.stderr
    parent_id = re.search(r"sweep run (\w+)", created.stdout).group(1)
    # No --trials or --max-epochs: the workers take the budget the study recorded.
    workers = [start_worker(tmp_path, pg_database, "search", "digits", "--study", "shared", "--pruner", "none",
                            "--seed", i, env=env) for i in range(3)]
    outputs = finish(workers)
    assert [w.returncode for w in workers] == [0, 0, 0], outputs
    assert all("Joined the study's running sweep" in output for output in outputs)
    study = load(pg_database, "shared")
    states = Counter(t.state.name for t in study.trials)
    # Exactly the budget completes; a sampled configuration whose own training diverged may fail on top (it is not
    # counted), but no trial was taken from a live worker (reaped) or interrupted.
    assert states["COMPLETE"] == 6 and set(states) <= {"COMPLETE", "FAIL"}, states
    assert not [k for k in study.user_attrs if k.startswith("reaped_")], study.user_attrs
    assert not [t.number for t in study.trials if t.user_attrs.get("interrupted")]
    assert all(len(t.intermediate_values) <= 2 for t in study.trials)
    client = mlflow.MlflowClient(mlflow_server)
    found = client.search_runs([client.get_experiment_by_name("shared").experiment_id], max_results=100)
    [parent] = [r for r in found if r.data.tags["run_kind"] == "search"]
    children = [r for r in found if r.data.tags["run_kind"] == "trial"]
    assert parent.info.run_id == parent_id and parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent_id}
    assert Counter(r.info.status for r in children) == Counter(FINISHED=6, FAILED=states["FAIL"]) - Counter()
    assert len({r.data.tags["worker"] for r in children}) > 1
    ui = sweeper("ui", "--tracking-uri", mlflow_server, "--study", "shared", cwd=tmp_path)
    assert ui.exit_code == 0 and f"{mlflow_server}/#/experiments/" in ui.output, ui.output
    _check_the_tree_in_a_browser(re.search(r"(http://\S+/runs)", ui.output).group(1), parent.info.run_name,
                                 len(children))


def _check_the_tree_in_a_browser(url, parent_name, children):
    """The MLflow UI of the tracking server: the one parent run, expanded, lists every trial."""
    from .test_report import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

    if CHROMIUM is None:
        return  # the store checks above stand; the browser check needs Debian's chromium (make test installs it)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.get_by_text(parent_name).first.wait_for(timeout=60_000)
        assert page.locator("[data-component-id*='runnamecellrenderer']").count() == 1  # one top-level run
        page.locator("[data-component-id*='runnamecellrenderer']").first.click()
        for number in range(children):
            page.get_by_text(f"trial-{number:03d}", exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "mlflow-server-one-tree.png"))
        browser.close()


def test_joining_with_another_space_or_direction_is_refused(pg_database, tmp_path):
    created = sweeper("study", "create", "strict", "--dataset", "digits", "--trials", 2, "--storage", pg_database,
                      cwd=tmp_path)
    assert created.exit_code == 0, created.output
    wider = write_space(tmp_path / "wider.yaml", (SPACES / "digits.yaml").read_text().replace(
        "units: {type: int, low: 16, high: 256", "units: {type: int, low: 16, high: 512"))
    result = sweeper("search", "digits", "--study", "strict", "--space", wider, "--storage", pg_database, cwd=tmp_path)
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1] == (
        "Error: study 'strict' was run with another search space (units: was int 16..256 log, now int 16..512 "
        "log); resume it with the same space or choose another --study")
    # Another MLflow store (a worker that forgot MLFLOW_TRACKING_URI): the study in the database still refuses.
    minimize = write_space(tmp_path / "minimize.yaml", (SPACES / "digits.yaml").read_text().replace(
        "{metric: val_accuracy, direction: maximize}", "{metric: val_loss, direction: minimize}"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for space, line in [(minimize, "Error: study 'strict' was created to maximize its objective, but the search "
                                   "space asks to minimize; use another --study"),
                        (wider, "Error: study 'strict' was created with another search space (units: was int "
                                "16..256 log, now int 16..512 log); join it with the same space or use another "
                                "--study")]:
        result = sweeper("search", "digits", "--study", "strict", "--space", space, "--storage", pg_database,
                         cwd=elsewhere)
        assert result.exit_code == 2 and result.output.strip().splitlines()[-1] == line, result.output
    assert load(pg_database, "strict").trials == []


def test_creating_a_study_twice_is_refused(pg_database, tmp_path):
    assert sweeper("study", "create", "once", "--dataset", "digits", "--storage", pg_database,
                   cwd=tmp_path).exit_code == 0
    again = sweeper("study", "create", "once", "--dataset", "digits", "--storage", pg_database, cwd=tmp_path)
    assert again.exit_code == 2 and again.output.strip().splitlines()[-1] == (
        "Error: study 'once' already exists in postgresql+psycopg://postgres:***@127.0.0.1:"
        f"{pg_database.split(':')[3].split('/')[0]}/test_creating_a_study_twice_is_refused (0 trials); "
        "workers join it with: sweeper search digits --study once")
