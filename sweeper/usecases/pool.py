"""Worker processes: `--jobs N` workers on one study, each replaced by a fresh one every few trials.

TensorFlow keeps part of every trained model that `clear_session` does not free (6-85 MiB each, more for larger
models: bench/RESULTS.md), so a worker exits after its `RECYCLE_AFTER`-th trial, or sooner once it has grown by
`RECYCLE_GROWTH_MIB` (`Recycling`), and a fresh process takes its place: a long sweep's memory stays flat. The worker
says so as it begins its last trial, and the fresh one starts then (a standby): it has imported Keras and loaded the
data by the time it is needed, so the sweep does not wait for its start-up.

Every worker forwards its events to the caller's listener (`SweepListener.worker(i)` when there are several),
which decides how they are shown: the pool draws nothing itself.

A pool of one worker (a long sweep) has its last worker, its budget spent, wait: it makes the sweep's final model
with the Keras and the data it has loaded (`WorkerPool.finish`) or is let go (`WorkerPool.close`), so that the
caller never imports a Keras backend nor loads the data. With `--jobs N` the workers train on a share of the cores
each, and the caller makes the final model on all of them.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from sweeper.domain.budget import TimeBudget
from sweeper.domain.errors import SweeperError, SweepError, Terminated
from sweeper.domain.events import SweepListener, SweepResult
from sweeper.engines import Engine, LastTrial, make_engine
from sweeper.runtime import interrupts
from sweeper.runtime.heap import long_lived_objects_frozen, resident_mib
from sweeper.runtime.setup import configure_process, end_process, keras_extras_kept_out, other_backend_kept_out
from sweeper.store import SweepRecorder
from sweeper.usecases.plan import SweepPlan

if TYPE_CHECKING:
    from sweeper.ml.data import Dataset

#: trials a worker process runs before a fresh one replaces it (SWEEPER_RECYCLE_AFTER overrides)
RECYCLE_AFTER = int(os.environ.get("SWEEPER_RECYCLE_AFTER", "20"))
#: MiB a worker process may grow by after its first trial before a fresh one replaces it (SWEEPER_RECYCLE_GROWTH_MIB
#: overrides): a small model leaves about 6 MiB per trial, so the count decides; Fashion-MNIST's wide ones 25-85 MiB
RECYCLE_GROWTH_MIB = float(os.environ.get("SWEEPER_RECYCLE_GROWTH_MIB", "128"))
_DONE, _RECYCLE, _INTERRUPTED = "done", "recycle", "interrupted"
_FINISH, _EXIT = "finish", "exit"  # what a worker that is done is told


#: how long workers have, once interrupted, to record their trials before they are killed (their trials are
#: then reaped by the next sweep): one in-flight write and the end of a training step
STOP_GRACE_SECONDS = 20


class WorkerPool:
    """`plan.jobs` worker processes (recycled), their events shown by `listener`. `start()` lets them import Keras and
    load the data while this process opens the stores; `run(parent_id)` has them run trials under the sweep run
    `parent_id` until the study's budget or the time is spent; then `finish()` has the last worker make the final
    model where it can (`can_finish`); `close()` (or leaving the `with` block) lets it go, and kills workers started
    but never run (they have written nothing)."""

    def __init__(self, plan: SweepPlan, listener: SweepListener, started: float = 0.0):
        self.plan, self.listener = plan, listener
        self.parent_id: str | None = None
        self.context = multiprocessing.get_context("spawn")  # a fresh Keras backend per worker
        self.messages = self.context.Queue()
        # --timeout counts from: the sweep's start (`started`, time.time()) for one worker, as in one process (a
        # 15-minute sweep takes 15 minutes, its start-up included); with several, when the first is ready to train
        self.clock = self.context.Value("d", started if plan.jobs == 1 else 0.0)
        # what the workers that ended measured: the longest complete trial's wall time, the best one's value and time
        self.known = self.context.Array("d", [0.0, math.nan, 0.0])
        self.threads = max(1, (os.cpu_count() or 1) // plan.jobs)
        self.failures_in_a_row = {index: 0 for index in range(plan.jobs)}
        self.listeners = {index: listener.worker(index) if plan.jobs > 1 else listener for index in range(plan.jobs)}
        self.workers: dict[int, tuple[multiprocessing.Process, Any]] = {}  # index -> (process, its orders)
        self.standby: dict[int, tuple[multiprocessing.Process, Any]] = {}  # index -> its next process, started
        self.waiting: tuple[multiprocessing.Process, Any] | None = None  # the last worker, done, told nothing yet

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Start the workers, which get ready to train and wait for `run`."""
        for index in range(self.plan.jobs):
            self._spawn(index)

    def _spawn(self, index: int, standby: bool = False) -> None:
        """A worker process for `index` (or its standby), started: it gets ready to train, then runs trials once
        told to (`_go`). A standby says nothing until then: it may be killed unused, and a process killed while it
        writes to the pool's queue would leave the queue's lock taken."""
        orders = self.context.SimpleQueue()
        process = self.context.Process(
            target=_worker_main, name=f"sweeper-worker-{index}",
            args=(self.plan, index, self.threads, (self.clock, self.known), self.messages, orders, os.getpid(),
                  standby))
        # a signal in mid-start would leave the child half its arguments (it dies on EOFError, traceback and all),
        # and the process unknown to `close`: held until it is started and kept
        with interrupts.deferred():
            process.start()
            (self.standby if standby else self.workers)[index] = process, orders

    def _go(self, index: int) -> None:
        """Tell `index`'s worker to run trials under the sweep run (with the failures in a row so far)."""
        self.workers[index][1].put((self.parent_id, self.failures_in_a_row[index]))

    def _last_trial_begun(self, index: int, pid: int) -> None:
        """`index`'s worker began its last trial before it is replaced: its successor starts meanwhile."""
        if index in self.workers and pid == self.workers[index][0].pid and index not in self.standby:
            self._spawn(index, standby=True)

    def _replace(self, index: int) -> None:
        """`index`'s worker exited to be replaced: its standby (or, if that died, a fresh process) runs trials."""
        process, orders = self.standby.pop(index, (None, None))
        if process is not None and process.is_alive():
            self.workers[index] = process, orders
        else:
            self._spawn(index)
        self._go(index)

    def _dismiss_standby(self, index: int | None = None) -> None:
        """Kill standbys that will not be needed (they have written nothing)."""
        for key in [index] if index is not None else list(self.standby):
            process, _ = self.standby.pop(key, (None, None))
            if process is not None:
                process.kill()
                process.join()

    def run(self, parent_id: str) -> None:
        """Run the workers under the sweep run `parent_id` until the study's budget or the time is spent (the last
        one then waits, see `finish`)."""
        self.parent_id = parent_id
        if not self.workers:
            self.start()
        for index in self.workers:
            self._go(index)
        errors = []
        try:
            while self.workers:
                try:
                    kind, index, *payload = self.messages.get(timeout=0.5)
                except queue.Empty:
                    errors += _vanished(self.workers)
                    continue
                if kind == "last":
                    self._last_trial_begun(index, *payload)
                    continue
                if kind == "event":
                    name, args = payload
                    getattr(self.listeners[index], name)(*args)
                    continue
                status, failures, pid = payload
                if index not in self.workers or pid != self.workers[index][0].pid:
                    continue  # a standby that stopped before it was needed (an interrupt, an error)
                self.failures_in_a_row[index] = failures
                process, orders = self.workers.pop(index)
                if status != _RECYCLE:
                    self._dismiss_standby(index)
                if status == _DONE and not self.workers and not errors and self.plan.jobs == 1:
                    self.waiting = process, orders
                    continue
                if status == _DONE:
                    orders.put(_EXIT)
                # the successor goes first: the replaced process's exit (its threads, MLflow's exit handlers) need
                # not hold up its first trial
                if status == _RECYCLE:
                    self._replace(index)
                process.join()
                if status not in (_DONE, _RECYCLE, _INTERRUPTED):
                    errors.append((index, status))
        except KeyboardInterrupt as exc:
            stop([process for process, _ in self.workers.values()],
                 signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
            raise
        finally:
            self._dismiss_standby()
        if errors:
            raise SweepError("; ".join(f"worker {index}: {message}" for index, message in sorted(errors)))

    @property
    def can_finish(self) -> bool:
        """Whether a worker waits, with Keras and the data loaded, to make the final model."""
        return self.waiting is not None and self.waiting[0].is_alive()

    def time_left(self) -> float | None:
        """What is left of the sweep's --timeout, counted from when the first worker was ready to train."""
        return _time_left(self.plan.timeout, self.clock)

    def finish(self) -> SweepResult:
        """The sweep's final model made by the waiting worker, its events shown here; its error raised here."""
        process, orders = self.waiting
        orders.put(_FINISH)
        try:
            kind, payload = self._final_message(process)
        except KeyboardInterrupt as exc:
            stop([process], signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
            self.waiting = None
            raise
        process.join()
        self.waiting = None
        if kind == "error":
            raise payload
        return payload

    def _final_message(self, process: multiprocessing.Process) -> tuple[str, Any]:
        """The waiting worker's result or error, its events shown on the way."""
        while True:
            try:
                kind, _, *payload = self.messages.get(timeout=0.5)
            except queue.Empty:
                if process.is_alive():
                    continue
                raise SweepError(f"the worker making the final model exited with code {process.exitcode}") from None
            if kind in ("result", "error"):
                return kind, payload[0]
            if kind != "event":
                continue  # an exit word of a worker already gone
            name, args = payload
            getattr(self.listener, name)(*args)

    def close(self) -> None:
        """Let a waiting worker go; kill workers never run."""
        self._dismiss_standby()
        if self.parent_id is None:
            for process, _ in self.workers.values():
                process.kill()
                process.join()
            self.workers.clear()
        if self.waiting is not None:
            process, orders = self.waiting
            self.waiting = None
            if process.is_alive():
                orders.put(_EXIT)
            process.join()


def _vanished(workers: dict) -> list:
    """Workers that died without a word (killed, out of memory)."""
    gone = [(index, process) for index, (process, _) in workers.items() if not process.is_alive()]
    for index, _ in gone:
        del workers[index]
    return [(index, f"exited with code {process.exitcode}") for index, process in gone]


def stop(processes: Iterable[multiprocessing.Process], signum: int, grace: float = STOP_GRACE_SECONDS) -> None:
    """Pass the interrupt to every worker at once (a worker ignores a second one: Ctrl-C in a terminal has
    reached them already), give them `grace` seconds together to record their trials, then kill the rest."""
    processes = [process for process in processes if process.is_alive()]
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()


class _ForwardingListener:
    """A worker's listener that hands every event to the parent process's listener."""

    def __init__(self, messages, index):
        self.messages, self.index = messages, index

    def __getattr__(self, name):
        return lambda *args: self.messages.put(("event", self.index, name, args))


def _worker_main(plan, index, threads, clocks, messages, orders, parent_pid, standby) -> None:
    """One worker process: its own Keras backend threads, data, engine and trial runs under the sweep run whose id
    (and the failures in a row so far) it is sent once ready to train; it ends with its parent. Done with the
    budget, it waits to be told whether to make the final model."""
    if plan.quiet_workers:  # a process of its own: it quiets the libraries as its parent did
        configure_process(optuna=True)
    other_backend_kept_out()
    with interrupts.installed():
        _die_with_parent(parent_pid)
        status, failures, parent_id = _DONE, 0, None
        try:
            listener = _ForwardingListener(messages, index)
            dataset = ready_to_train(plan, threads, SweepListener() if standby else listener)
            with _told(plan, index, orders, standby) as ((parent_id, failures), study):
                recycling = Recycling(announce=lambda: messages.put(("last", index, os.getpid())))
                status, failures = _work(plan, parent_id, dataset, study, clocks, failures, listener, recycling)
        except KeyboardInterrupt:
            status = _INTERRUPTED  # its trial is recorded as interrupted; the parent process reports the interruption
        except SweeperError as exc:
            status = str(exc)
        messages.put(("exit", index, status, failures, os.getpid()))
        if status == _DONE:
            with contextlib.suppress(KeyboardInterrupt):  # the parent ends the sweep run
                _when_told(plan, parent_id, orders, messages, time_left=lambda: _time_left(plan.timeout, clocks[0]))
    messages.close()
    messages.join_thread()  # every word sent before the process ends
    end_process(0)  # the parent waits for this process: not for TensorFlow's teardown too


@contextlib.contextmanager
def _told(plan: SweepPlan, index: int, orders, standby: bool):
    """The orders (the sweep run's id, the failures in a row so far) and the sweep's store and study, opened. A
    standby opens them while it waits (they exist by then: the sweep has run trials), so that its first trial
    starts as soon as it is told; a first worker once told (the sweep's process may still be creating them)."""
    told = None if standby else orders.get()
    with opened_study(plan, index) as study:
        yield told or orders.get(), study


def _when_told(plan, parent_id, orders, messages, time_left) -> None:
    """Make the sweep's final model if told to (in this process Keras and the data are loaded already)."""
    if orders.get() != _FINISH:
        return
    from sweeper.usecases.final import finish_joined

    try:
        result = finish_joined(plan, parent_id, _ForwardingListener(messages, None), time_left)
    except Exception as exc:
        messages.put(("error", None, _picklable(exc)))
    else:
        messages.put(("result", None, result))


def _picklable(exc: Exception) -> Exception:
    """`exc` as it can cross to the parent process (its type and words, when it cannot be pickled)."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return SweepError(f"{type(exc).__name__}: {exc}")


def _work(plan, parent_id, dataset, study, clocks, failures_in_a_row, listener, recycling) -> tuple[str, int]:
    clock, known = clocks
    _, more, failures = work_loop(plan, parent_id, study, listener, dataset=dataset,
                                  timeout=lambda: _time_left(plan.timeout, clock),
                                  failures_in_a_row=failures_in_a_row, last_trial=recycling, known=known)
    return (_RECYCLE if recycling.last and more else _DONE), failures


class Recycling:
    """Whether the trial a worker process begins is its last before a fresh process replaces it: its
    `after`-th, or the first to begin once the process holds more than `growth` MiB over what it held as its second
    began (the first trial's share is the process's own start: TensorFlow's kernels, the data's first pass).
    `announce()` is called as the last begins, so that the pool starts the replacement meanwhile."""

    def __init__(self, announce: Callable[[], None], *, after: int = RECYCLE_AFTER,
                 growth: float = RECYCLE_GROWTH_MIB, resident: Callable[[], float | None] = resident_mib):
        self.announce, self.after, self.growth, self.resident = announce, after, growth, resident
        self.baseline: float | None = None  # MiB as the second trial began
        self.last = False

    def __call__(self, ran: int) -> bool:
        memory = self.resident()
        if ran == 1:
            self.baseline = memory
        grown = memory is not None and self.baseline is not None and memory - self.baseline > self.growth
        self.last = ran + 1 >= self.after or grown
        if self.last:
            self.announce()
        return self.last


def ready_to_train(plan: SweepPlan, threads: int, listener: SweepListener) -> Dataset:
    """This process (or Dask task) made a sweep's worker: Keras on `threads` threads, the data loaded."""
    from sweeper.ml.quiet import import_keras
    from sweeper.usecases.final import load_data

    _threads(threads)
    with keras_extras_kept_out():
        import_keras()
    _tensorflow_threads(threads)
    dataset = load_data(plan)
    listener.data_loaded(dataset.describe_splits())
    return dataset


@contextlib.contextmanager
def opened_study(plan: SweepPlan, index: int) -> Iterator[tuple[SweepRecorder, Engine]]:
    """Worker `index`'s recorder on the sweep's MLflow store and its engine on the sweep's study."""
    recorder = SweepRecorder.open(plan.study, plan.tracking_uri)
    with make_engine(plan.backend, plan.engine_options(worker=index)) as engine:
        yield recorder, engine


def work_loop(plan: SweepPlan, parent_id: str, study: tuple[SweepRecorder, Engine], listener: SweepListener, *,
              dataset: Dataset, timeout: Callable[[], float | None], failures_in_a_row: int = 0,
              last_trial: LastTrial | None = None, known=None) -> tuple[int, bool, int]:
    """One worker of a sweep, ready to train on `dataset` (`ready_to_train`) with the `study` it opened
    (`opened_study`): trials run under the sweep run `parent_id` until the study's budget or the time (`timeout()`,
    asked once the worker is ready to train) is spent, or `last_trial` (see `Engine.optimize`) ended it; `known`
    (a shared array) carries the longest complete trial and the best one from one worker process to its replacement,
    whose budget would otherwise start blind and run trials up to the deadline. Returns (trials run, budget left,
    failures in a row)."""
    from sweeper.usecases.runner import TrialRunner

    space, (recorder, engine) = plan.space, study
    recorder.join_search(parent_id, plan.study_record())
    budget = TimeBudget(timeout(), retrainings=space.retrainings, objective=space.objective, **_measured(known))
    runner = TrialRunner(plan, dataset, recorder, listener, engine.top_values, engine.take_reaped,
                         out_of_time=budget.out_of_time)
    runner.failures_in_a_row = failures_in_a_row
    try:
        with long_lived_objects_frozen():
            ran = engine.optimize(runner, trials=space.trials, budget=budget, last_trial=last_trial)
    finally:
        failures_in_a_row = runner.failures_in_a_row
        _keep_measured(known, budget)
    counts = engine.counts()
    return ran, counts["complete"] + counts["pruned"] < space.trials, failures_in_a_row


def _measured(known) -> dict:
    """TimeBudget's arguments for what the workers before this one measured (`WorkerPool.known`)."""
    if known is None:
        return {}
    with known.get_lock():
        longest, best_value, best_seconds = known[:]
    return {"longest_known": longest, "best_known": None if math.isnan(best_value) else (best_value, best_seconds)}


def _keep_measured(known, budget: TimeBudget) -> None:
    """What this worker's `budget` measured, added to `known` for the workers after it."""
    if known is None:
        return
    with known.get_lock():
        known[0] = max(known[0], budget.longest_trial())
        if budget.best and budget.objective.better(budget.best[0], known[1]):  # NaN: none known yet
            known[1], known[2] = budget.best


def _threads(threads: int) -> None:
    """JAX's CPU thread pool, set once per process before JAX is imported (XLA reads its flags then)."""
    if os.environ.get("KERAS_BACKEND") == "jax" and "jax" not in sys.modules and threads < (os.cpu_count() or 1):
        flags = f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


def _tensorflow_threads(threads: int) -> None:
    """TensorFlow's thread pools, set once per process (before it runs anything; later calls keep the first)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised by an earlier task of this process: its threads stay
        pass


def _time_left(timeout: float | None, clock) -> float | None:
    """What is left of the sweep's --timeout, counted from the shared clock: the sweep's start (one worker), or
    when the first worker was ready to train (several: their start-up excluded)."""
    if timeout is None:
        return None
    with clock.get_lock():
        if not clock.value:
            clock.value = time.time()
        started = clock.value
    return max(0.0, started + timeout - time.time())


def _die_with_parent(parent_pid: int) -> None:
    """A worker whose parent dies (kill -9 included) gets SIGTERM, records its trial and exits (Linux: the
    kernel's parent-death signal; elsewhere a thread that watches the parent)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGTERM, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # it died before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)
