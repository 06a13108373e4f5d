"""Sweeps on a Dask cluster (issue 21), all on 127.0.0.1: a real `dask scheduler` and `dask worker` processes
(one worker process of one thread each), the throwaway PostgreSQL for the study and a real MLflow server."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from .conftest import free_port, load_pg_study

BIN = Path(sys.executable).parent
SWEEPER = str(BIN / "sweeper")
QUICK = ["--subset", 200, "--max-epochs", 2, "--patience", 1, "--pruner", "none"]
SLOW = ["--subset", 300, "--max-epochs", 30, "--patience", 30, "--pruner", "none", "--grace-period", 10]
pytest.importorskip("distributed")


class Cluster:
    """A scheduler and worker processes started as a user would, each a process of its own."""

    def __init__(self, workdir: Path, workers: int = 2):
        self.workdir, self.port = workdir, free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.log = open(workdir / "dask.log", "w")
        self.scheduler = subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                                           str(self.port), "--no-dashboard"], cwd=workdir,
                                          env={**os.environ, "SWEEPER_OFFLINE": "1"},
                                          stdout=self.log, stderr=subprocess.STDOUT)
        self.workers = [self._worker(f"w{i}") for i in range(workers)]
        self.wait_for(workers)

    def _worker(self, name: str) -> subprocess.Popen:
        return subprocess.Popen([str(BIN / "dask"), "worker", self.address, "--nworkers", "1", "--nthreads", "1",
                                 "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", "--name", name],
                                cwd=self.workdir, env={**os.environ, "SWEEPER_OFFLINE": "1"}, stdout=self.log,
                                stderr=subprocess.STDOUT)

    def replace(self, index: int) -> None:
        """A new worker process in place of worker `index` (killed by a test), so that the next test has them all."""
        self.workers[index] = self._worker(f"w{index}-again")
        self.wait_for(len(self.workers), named=f"w{index}-again")

    def wait_for(self, workers: int, named: str | None = None) -> None:
        """Until the scheduler has `workers` workers (`named` among them)."""
        from distributed import Client

        deadline = time.monotonic() + 180
        while True:
            try:
                with Client(self.address, timeout="5s") as client:
                    client.wait_for_workers(workers, timeout=5)
                    names = {w["name"] for w in client.scheduler_info()["workers"].values()}
                    if named is None or named in names:
                        return
            except (OSError, TimeoutError):
                pass
            assert time.monotonic() < deadline, (self.workdir / "dask.log").read_text()[-3000:]
            time.sleep(0.2)

    def close(self) -> None:
        """Stopped at once: a Dask worker given SIGTERM took 30 s to leave, and how it leaves is not under test."""
        for process in [*self.workers, self.scheduler]:
            process.kill()
            process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster for the module's sweeps, as a user's cluster outlives them (a killed worker is replaced)."""
    started = Cluster(tmp_path_factory.mktemp("dask"))
    yield started
    started.close()


def search(workdir, cluster, storage, server, *args):
    return [SWEEPER, "search", "digits", "--cluster", cluster.address, "--storage", storage, "--tracking-uri",
            server, *map(str, args)]


def runs(server, study):
    import mlflow

    client = mlflow.MlflowClient(server)
    experiment = client.get_experiment_by_name(study)
    return client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []


def trials(storage, study):
    return load_pg_study(storage, study).trials


def test_a_cluster_sweep_runs_every_trial_in_the_dask_workers(cluster, pg_database, mlflow_server, tmp_path):
    done = subprocess.run(search(tmp_path, cluster, pg_database, mlflow_server, "--study", "c6", "--trials", 6,
                                 "--jobs", 2, *QUICK), capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "SWEEPER_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Best trials by val_accuracy" in done.stdout and "Registered in MLflow as models:/c6@champion" in done.stdout
    assert "[worker 0] trial" in done.stderr and "[worker 1] trial" in done.stderr  # events forwarded from Dask
    assert Counter(t.state.name for t in trials(pg_database, "c6")) == {"COMPLETE": 6}
    recorded = runs(mlflow_server, "c6")
    trial_runs = [r for r in recorded if r.data.tags["run_kind"] == "trial"]
    [parent] = [r for r in recorded if r.data.tags["run_kind"] == "search"]
    assert len(trial_runs) == 6 and {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent.info.run_id}
    dask_pids = {str(worker.pid) for worker in cluster.workers}
    assert {r.data.tags["worker"].split(":")[1] for r in trial_runs} <= dask_pids  # every trial ran in a Dask worker
    assert {r.data.tags["worker"].split(":")[0] for r in trial_runs} == {socket.gethostname()}
    assert parent.info.status == "FINISHED" and parent.data.tags["final_model_by"].split(":")[1] in dask_pids
    assert all(r.info.status != "RUNNING" for r in recorded)


def _running_trial_of(storage, study, pid, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for trial in trials(storage, study):
                worker = trial.user_attrs.get("worker", "")
                if trial.state.name == "RUNNING" and worker.split(":")[1:2] == [str(pid)] and trial.intermediate_values:
                    return trial
        except KeyError:
            pass
        time.sleep(0.3)
    pytest.fail("no trial of the Dask worker started in time")


def test_a_killed_dask_worker_loses_only_its_trial(cluster, pg_database, mlflow_server, tmp_path):
    sweep = subprocess.Popen(search(tmp_path, cluster, pg_database, mlflow_server, "--study", "kill", "--trials", 4,
                                    "--jobs", 2, *SLOW), cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env={**os.environ, "SWEEPER_OFFLINE": "1"})
    victim_worker = cluster.workers[0]
    victim = _running_trial_of(pg_database, "kill", victim_worker.pid)
    victim_worker.send_signal(signal.SIGKILL)
    victim_worker.wait()
    try:
        output = sweep.communicate(timeout=900)[0]
    finally:
        cluster.replace(0)
    assert sweep.returncode == 0, output[-3000:]
    found = trials(pg_database, "kill")
    assert Counter(t.state.name for t in found)["COMPLETE"] == 4  # the budget, exactly
    assert found[victim.number].state.name == "FAIL"
    retries = [t for t in found if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].params == victim.params and retries[0].state.name == "COMPLETE"
    recorded = runs(mlflow_server, "kill")
    assert [r.info.run_id for r in recorded if r.info.status == "RUNNING"] == []
    [victim_run] = [r for r in recorded if r.data.tags.get("trial_number") == str(victim.number)]
    assert victim_run.info.status == "FAILED"


def test_ctrl_c_on_the_submitting_process_leaves_nothing_running_and_the_sweep_resumes(cluster, pg_database,
                                                                                     mlflow_server, tmp_path):
    command = search(tmp_path, cluster, pg_database, mlflow_server, "--study", "stop", "--trials", 4, "--jobs", 2,
                     *SLOW)
    env = {**os.environ, "SWEEPER_OFFLINE": "1"}
    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env)
    _running_trial_of(pg_database, "stop", cluster.workers[0].pid)
    sweep.send_signal(signal.SIGINT)
    output = sweep.communicate(timeout=300)[0]
    assert sweep.returncode == 130, output[-3000:]
    assert "Interrupted (Ctrl-C): the running trial is recorded as interrupted" in output
    assert [t.number for t in trials(pg_database, "stop") if t.state.name == "RUNNING"] == []
    assert [r.info.run_id for r in runs(mlflow_server, "stop") if r.info.status == "RUNNING"] == []
    assert any(r.data.tags.get("state") == "interrupted" for r in runs(mlflow_server, "stop"))
    resumed = subprocess.run([*command, "--max-epochs", "2"], cwd=tmp_path, capture_output=True, text=True,
                             env=env)  # the resume's trials need not be long
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert Counter(t.state.name for t in trials(pg_database, "stop"))["COMPLETE"] == 4
