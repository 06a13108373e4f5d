"""Trials on a Dask cluster: the sweep's workers run as Dask tasks, one per Dask worker process, on the study in a
shared Optuna storage and the MLflow tracking server; the submitting process shows their events as they come (Dask's
event topics) and has the last one's final model made on a Dask worker too. Dask places the tasks and reaches Slurm,
Kubernetes or a laptop; sweeper schedules nothing of its own.

- A lost Dask worker loses only its trial: the study's heartbeats fail it (and retry its parameters once); Dask may
  run that worker's task again elsewhere, which asks the study for new trials and so never runs one twice.
- Ctrl-C on the submitting process sets the sweep's stop event; each task ends its trial as interrupted at its next
  checkpoint (queued to run again on resume), then the tasks are cancelled.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from sweeper.domain.errors import SweepError, UsageError
from sweeper.domain.events import SweepListener, SweepResult
from sweeper.usecases.plan import SweepPlan

#: how long the tasks have, once stopped, to record their trials before they are cancelled
STOP_GRACE_SECONDS = 30
_ONE_LOOP_PER_PROCESS = threading.Lock()  # a Dask worker runs one sweep worker at a time, whatever its threads


def run_on_cluster(plan: SweepPlan, parent_id: str, listener: SweepListener) -> None:
    """Run `plan.jobs` sweep workers as tasks on the plan's Dask cluster until the budget or the time is spent."""
    client = _client(plan.cluster)
    try:
        addresses = check_workers(client, plan)
        if plan.jobs > len(addresses):
            raise UsageError(f"--jobs {plan.jobs} needs as many Dask worker processes, but the cluster at "
                             f"{plan.cluster} has {len(addresses)}; start more workers or ask for fewer jobs")
        topic, stop = f"sweeper-{parent_id}", f"sweeper-stop-{parent_id}"
        futures = [client.submit(_worker_task, plan, parent_id, index, topic, stop, key=f"{topic}-worker-{index}",
                                 workers=[addresses[index]], allow_other_workers=True, pure=False, retries=0)
                   for index in range(plan.jobs)]
        listeners = {index: listener.worker(index) if plan.jobs > 1 else listener for index in range(plan.jobs)}
        errors = [error for error in _follow(client, topic, stop, futures, listeners) if error]
    finally:
        client.close()
    if errors:
        raise SweepError("; ".join(errors))


def finish_on_cluster(plan: SweepPlan, parent_id: str, listener: SweepListener) -> SweepResult:
    """The sweep's final model (refit, test, registration), made on a Dask worker, its events shown here."""
    client = _client(plan.cluster)
    try:
        topic, stop = f"sweeper-{parent_id}-final", f"sweeper-stop-{parent_id}"
        future = client.submit(_finish_task, plan, parent_id, topic, stop, key=topic, pure=False, retries=0)
        _follow(client, topic, stop, [future], {0: listener})
        return future.result()
    finally:
        client.close()


def check_workers(client, plan: SweepPlan) -> list[str]:
    """The Dask workers' addresses, once each is known to have what the sweep needs: this sweeper version, the
    dataset readable, the stores reachable (an error names the worker and what it lacks)."""
    from importlib.metadata import version

    found = client.run(_worker_has, plan, version("sweeper"), on_error="return")
    if not found:
        raise SweepError(f"the Dask cluster at {plan.cluster} has no worker; start one: dask worker {plan.cluster}")
    problems = [f"{address}: {problem if isinstance(problem, str) else f'{type(problem).__name__}: {problem}'}"
                for address, problem in sorted(found.items()) if problem]
    if problems:
        raise SweepError(f"Dask workers lack what the sweep needs; {'; '.join(problems)}")
    return sorted(found)


def _worker_has(plan: SweepPlan, expected_version: str) -> str:
    """On a Dask worker: what it lacks for the sweep, in words ('' when nothing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("sweeper")
    except PackageNotFoundError:
        return "sweeper is not installed (pip install 'sweeper[cluster]')"
    if found != expected_version:
        return f"sweeper {found} is installed, but the sweep runs {expected_version}"
    from sweeper.ml.data import dataset_task

    try:
        dataset_task(plan.dataset, plan.target, plan.task, plan.impute)
    except Exception as exc:
        return f"cannot read the dataset {plan.dataset}: {exc}"
    return ""


def _client(address: str | None):
    from distributed import Client

    try:
        return Client(address, timeout="20s")
    except OSError as exc:
        raise SweepError(f"cannot reach the Dask scheduler at {address}: {exc}; start one (sweeper cluster local, or "
                         f"dask scheduler) or check --cluster") from None


def _follow(client, topic: str, stop: str, futures: list, listeners: dict) -> list[str]:
    """Show the tasks' events until every task is done; on Ctrl-C set the stop event, give the tasks
    STOP_GRACE_SECONDS to record their trials, cancel what is left and raise. Returns each task's error, or ''."""
    from distributed import Event

    events: queue.Queue = queue.Queue()
    client.subscribe_topic(topic, lambda event: events.put(event[1]))
    try:
        try:
            _drain(events, listeners, lambda: all(future.done() for future in futures))
        except KeyboardInterrupt:
            Event(stop, client=client).set()
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            _drain(events, listeners, lambda: all(f.done() for f in futures) or time.monotonic() > deadline)
            client.cancel(futures, force=True)
            raise
        return [_task_error(future) for future in futures]
    finally:
        client.unsubscribe_topic(topic)


def _drain(events: queue.Queue, listeners: dict, done) -> None:
    while True:
        try:
            index, name, args = events.get(timeout=0.3)
        except queue.Empty:
            if done():
                _flush(events, listeners)
                return
            continue
        getattr(listeners.get(index, listeners[0]), name)(*args)


def _flush(events: queue.Queue, listeners: dict) -> None:
    time.sleep(0.5)  # the last events of a task that just ended are on their way from the scheduler
    while not events.empty():
        index, name, args = events.get()
        getattr(listeners.get(index, listeners[0]), name)(*args)


def _task_error(future) -> str:
    if future.status == "error":
        error = future.exception()
        return f"a Dask task ({future.key}) failed: {type(error).__name__}: {error}"
    return future.result() or ""


class _TopicListener:
    """A Dask task's listener: every event goes to the submitting process through the scheduler's event topic."""

    def __init__(self, worker, topic: str, index: int):
        self.worker, self.topic, self.index = worker, topic, index

    def __getattr__(self, name):
        return lambda *args: self.worker.log_event(self.topic, (self.index, name, args))


def _worker_task(plan: SweepPlan, parent_id: str, index: int, topic: str, stop: str) -> str:
    """In a Dask worker: one sweep worker until the budget or the time is spent, or the stop event; returns
    '' (done), or what stopped it."""
    from distributed import get_worker

    from sweeper.usecases.pool import opened_study, ready_to_train, work_loop

    worker = get_worker()
    with _ONE_LOOP_PER_PROCESS, _stopped_by(stop, worker):
        deadline = time.monotonic() + plan.timeout if plan.timeout else None
        listener = _TopicListener(worker, topic, index)
        try:
            dataset = ready_to_train(plan, worker.state.nthreads, listener)
            with opened_study(plan, index) as study:
                work_loop(plan, parent_id, study, listener, dataset=dataset,
                          timeout=lambda: max(0.0, deadline - time.monotonic()) if deadline else None)
        except KeyboardInterrupt:
            return ""  # stopped: its trial is recorded as interrupted, to run again on resume
        except SweepError as exc:
            return f"worker {index} on {worker.address}: {exc}"
    return ""


def _finish_task(plan: SweepPlan, parent_id: str, topic: str, stop: str) -> SweepResult:
    from distributed import get_worker

    from sweeper.usecases.final import finish_joined

    worker = get_worker()
    with _ONE_LOOP_PER_PROCESS, _stopped_by(stop, worker):
        return finish_joined(plan, parent_id, _TopicListener(worker, topic, 0))


class _stopped_by:
    """For a task's duration: the process set up as its entry point asks, and a thread that turns the sweep's stop
    event into an interrupt at the task's next checkpoint."""

    def __init__(self, stop: str, worker: Any):
        self.stop, self.worker, self.done = stop, worker, threading.Event()

    def __enter__(self):
        from sweeper.runtime import interrupts
        from sweeper.runtime.setup import configure_process

        configure_process(optuna=True)  # a Dask worker is the process this task runs in: quiet, as a CLI worker
        interrupts.reset()
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def __exit__(self, *exc):
        from sweeper.runtime import interrupts

        self.done.set()
        interrupts.reset()

    def _watch(self) -> None:
        from distributed import Event

        from sweeper.runtime import interrupts

        event = Event(self.stop, client=self.worker.client)
        while not self.done.is_set():
            if event.is_set():
                interrupts.request(KeyboardInterrupt())
                return
            time.sleep(0.5)


def local_cluster(workers: int, port: int, threads: int, say) -> None:
    """A Dask cluster on 127.0.0.1 for trying `--cluster` (a scheduler and `workers` worker processes of `threads`
    threads each), until Ctrl-C."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True, host="127.0.0.1",
                           scheduler_port=port, dashboard_address=None)
    try:
        say(f"Dask scheduler on {cluster.scheduler_address} with {workers} worker process(es) of {threads} "
            f"thread(s); Ctrl-C to stop.")
        say(f"Sweep on it: sweeper search DATASET --cluster {cluster.scheduler_address} --jobs {workers} "
            f"--storage postgresql+psycopg://... --tracking-uri http://...")
        while True:
            time.sleep(1)
    finally:
        cluster.close()
