"""Worker processes: `--jobs N` workers on one study, each replaced by a fresh one every few trials.

TensorFlow keeps about 6 MiB per trained model that `clear_session` does not free (bench/RESULTS.md),
so a worker that ran `RECYCLE_AFTER` trials exits and a fresh process takes its place: a long sweep's
memory stays flat. A single worker forwards its events to the caller's listener (the live display);
several workers print a line per trial each.
"""

from __future__ import annotations

import os
import queue
import time

from .backends import BackendOptions, make_backend
from .data import load_dataset
from .errors import SweepError, SweeperError, Terminated
from .tracking import Tracker

#: trials a worker process runs before a fresh one replaces it (SWEEPER_RECYCLE_AFTER overrides)
RECYCLE_AFTER = int(os.environ.get("SWEEPER_RECYCLE_AFTER", "20"))
_DONE, _RECYCLE = "done", "recycle"


def run_workers(config, parent_id: str, listener) -> None:
    """Run `config.jobs` workers (recycled) until the study's budget or the time is spent."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # a fresh TensorFlow per worker
    messages = context.Queue()
    deadline = None if config.timeout is None else time.time() + config.timeout
    threads = max(1, (os.cpu_count() or 1) // config.jobs)
    failures_in_a_row = {index: 0 for index in range(config.jobs)}

    def spawn(index):
        process = context.Process(target=_worker_main, name=f"sweeper-worker-{index}",
                                  args=(config, parent_id, index, threads, deadline, failures_in_a_row[index],
                                        messages, config.jobs == 1))
        process.start()
        return process

    workers = {index: spawn(index) for index in range(config.jobs)}
    errors = []
    try:
        while workers:
            try:
                kind, index, *payload = messages.get(timeout=0.5)
            except queue.Empty:
                errors += _vanished(workers)
                continue
            if kind == "event":
                name, args = payload
                getattr(listener, name)(*args)
                continue
            status, failures_in_a_row[index] = payload
            workers.pop(index).join()
            if status == _RECYCLE:
                workers[index] = spawn(index)
            elif status != _DONE:
                errors.append((index, status))
    except KeyboardInterrupt as exc:
        _stop(workers.values(), terminate=isinstance(exc, Terminated))
        raise
    if errors:
        raise SweepError("; ".join(f"worker {index}: {message}" for index, message in sorted(errors)))


def _vanished(workers: dict) -> list:
    """Workers that died without a word (killed, out of memory)."""
    gone = [(index, process) for index, process in workers.items() if not process.is_alive()]
    for index, process in gone:
        del workers[index]
    return [(index, f"exited with code {process.exitcode}") for index, process in gone]


def _stop(processes, terminate: bool) -> None:
    # Ctrl-C reaches the workers too (one process group) and they record their trials; a signal sent to
    # this process alone is passed on to them as SIGTERM.
    for process in processes:
        if terminate:
            process.terminate()
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()
            process.join()


class _ForwardingListener:
    """A worker's listener that hands every event to the parent process's listener."""

    def __init__(self, messages, index):
        self.messages, self.index = messages, index

    def __getattr__(self, name):
        return lambda *args: self.messages.put(("event", self.index, name, args))


def _worker_main(config, parent_id, index, threads, deadline, failures_in_a_row, messages, forward) -> None:
    """One worker process: its own TensorFlow threads, data, backend and trial runs."""
    import signal

    from .quiet import import_tensorflow
    from .report import worker_progress
    from .sweep import TrialRunner

    def terminate(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)
    import_tensorflow()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    space = config.space
    listener = _ForwardingListener(messages, index) if forward else \
        worker_progress(index, space.objective.metric, space.objective.direction, space.max_epochs)
    status, runner = _DONE, None
    try:
        dataset = load_dataset(config.dataset, config.target, config.task).subset(config.subset)
        tracker = Tracker(config.study_name, config.tracking_uri)
        tracker.join_search(parent_id, {"backend": config.backend, "dataset": config.dataset})
        options = BackendOptions(config.study_name, space, config.algorithm, config.pruner, config.storage,
                                 config.seed, worker=index, grace_period=config.grace_period)
        with make_backend(config.backend, options) as backend:
            runner = TrialRunner(config, dataset, tracker, listener, backend.best_value, backend.take_reaped)
            runner.failures_in_a_row = failures_in_a_row
            timeout = None if deadline is None else max(0.0, deadline - time.time())
            ran = backend.optimize(runner, trials=space.trials, timeout=timeout, max_runs=RECYCLE_AFTER)
            counts = backend.counts()
            more = counts["complete"] + counts["pruned"] < space.trials
            status = _RECYCLE if ran >= RECYCLE_AFTER and more else _DONE
    except KeyboardInterrupt:
        pass  # its trial is recorded as failed; the parent process reports the interruption
    except SweeperError as exc:
        status = str(exc)
    messages.put(("exit", index, status, runner.failures_in_a_row if runner else failures_in_a_row))
