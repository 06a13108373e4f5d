"""Overhead: the share of a sweep's wall time that is not model training, and `sweeper --help` latency.

Run: .venv/bin/python bench/overhead.py [--trials 12] [--max-epochs 15] [--logging-only [--tracking-uri URI]]
Times `sweeper --help` (and an argument error) as a user's shell does, then runs one default
`sweeper search fashion --trials N` in a fresh folder, timed from process start to exit, and splits
its wall time with the sweep's own MLflow records: training is the time inside Keras' fit (each
trial's `train_seconds`, the final refit's `refit_seconds`); the rest is start-up (process start to
the first trial), per-trial bookkeeping (a trial run's span outside fit: building the model,
tracking, pruning, saving the best model), the gaps between trials (sampler, storage), and the
finish (after the last trial: test evaluation, model logging and registry; the refit excluded). First, the
training thread's time in per-epoch logging and in ending a trial's run, synchronous against MLflow's asynchronous
logging, on a store of its own.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def command_seconds(args: list[str], repeats: int = 5) -> float:
    """Median wall time of a command, as a shell runs it (the interpreter's start-up included)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def breakdown(workdir: Path, started: float, ended: float, study: str = "fashion") -> dict:
    """Seconds of a finished sweep's wall time by phase, from its MLflow store (epoch-second clock)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(study).experiment_id], max_results=10_000)
    parent = next(r for r in runs if r.data.tags.get("run_kind") == "search")
    trials = sorted((r for r in runs if r.data.tags.get("run_kind") == "trial"), key=lambda r: r.info.start_time)
    spans = [(r.info.start_time / 1000, r.info.end_time / 1000) for r in trials]
    fit = sum(r.data.metrics.get("train_seconds", 0.0) for r in trials)
    refit = parent.data.metrics.get("refit_seconds", 0.0)
    return {
        "wall": ended - started,
        "training": fit + refit,
        "start-up": spans[0][0] - started,
        "per-trial bookkeeping": sum(end - start for start, end in spans) - fit,
        "between trials": sum(max(0.0, spans[i + 1][0] - spans[i][1]) for i in range(len(spans) - 1)),
        "finish (refit excluded)": ended - spans[-1][1] - refit,
        "trials": len(trials),
        "outside fit, by trial": [_outside_fit(r) for r in trials],
    }


def _outside_fit(run) -> tuple[int, str, bool, float]:
    """A trial run's number, state, whether it kept its model, and its span outside fit."""
    span = (run.info.end_time - run.info.start_time) / 1000
    tags = run.data.tags
    return (int(tags["trial_number"]), tags.get("state", "?"), tags.get("has_model") == "true",
            span - run.data.metrics.get("train_seconds", 0.0))


def print_breakdown(parts: dict) -> None:
    wall = parts["wall"]
    print(f"sweep wall time {wall:.1f} s over {parts['trials']} trials; training (inside fit) "
          f"{parts['training']:.1f} s = {parts['training'] / wall:.1%}")
    for phase in ("start-up", "per-trial bookkeeping", "between trials", "finish (refit excluded)"):
        print(f"  {phase:<26} {parts[phase]:7.1f} s = {parts[phase] / wall:6.2%} of wall time")
    other = wall - parts["training"]
    print(f"  {'not training, in all':<26} {other:7.1f} s = {other / wall:6.2%} of wall time")
    print("  outside fit, trial by trial: " + ", ".join(
        f"{number} {state}{' +model' if kept else ''} {seconds:.2f} s"
        for number, state, kept, seconds in parts["outside fit, by trial"]))


def epoch_logging(epochs: int = 100, rounds: int = 3, tracking_uri: str | None = None) -> None:
    """The training thread's time in per-epoch MLflow logging and in ending the run: `TrialRun.log_epoch` (a
    synchronous `log_batch`, sweeper's way) against MLflow's asynchronous logging (each epoch's batch queued once
    the previous one has landed, sweeper's way on 2026-12-04), on a fresh SQLite store (or the tracking server at
    `tracking_uri`), the epochs stood in for by the same numpy work; `rounds` of each, in alternating order,
    medians printed."""
    import numpy as np
    from mlflow.entities import Metric

    from sweeper.domain.records import StudyRecord, TrialOutcome
    from sweeper.store import SweepRecorder

    logs = {"loss": 0.3, "accuracy": 0.9, "val_loss": 0.3, "val_accuracy": 0.9, "learning_rate": 1e-3}
    matrix = np.random.default_rng(0).random((500, 500))
    in_flight = {}

    def asynchronous(run, epoch):
        if run.run_id in in_flight:
            in_flight.pop(run.run_id).wait()
        now = int(time.time() * 1000)
        in_flight[run.run_id] = run.client.log_batch(
            run.run_id, metrics=[Metric(k, v, now, epoch) for k, v in logs.items()], synchronous=False)

    ways = {"synchronous": lambda run, epoch: run.log_epoch(epoch, logs), "asynchronous": asynchronous}
    seconds = {name: [] for name in ways}
    with tempfile.TemporaryDirectory(prefix="bench-logging-") as root:
        recorder = SweepRecorder.open(f"logging-{os.getpid()}", tracking_uri or f"sqlite:///{root}/mlflow.db")
        study = StudyRecord(recorder.study, "", "optuna", "fashion", "val_accuracy", "maximize", task="classification")
        recorder.open_search(study, space_signature={}, settings={}, space_text="")
        for number in range(2 * rounds):
            name = list(ways)[(number + number // 2) % 2]  # sync, async, async, sync, sync, async, ...
            run, in_logging, started = recorder.start_trial(number, {}), 0.0, time.perf_counter()
            for epoch in range(1, epochs + 1):
                for _ in range(20):  # an epoch's stand-in (about 50 ms here)
                    matrix @ matrix
                before = time.perf_counter()
                ways[name](run, epoch)
                in_logging += time.perf_counter() - before
            before = time.perf_counter()
            if run.run_id in in_flight:
                in_flight.pop(run.run_id).wait()
            run.end(TrialOutcome("complete", 0.9))  # MLflow stops its logging thread here, when one runs
            ending = time.perf_counter() - before
            seconds[name].append((in_logging, ending, time.perf_counter() - started))
    (sync_log, sync_end, sync_all), (async_log, async_end, async_all) = (
        tuple(statistics.median(s[i] for s in seconds[name]) for i in range(3)) for name in ways)
    print(f"per-epoch logging to {tracking_uri or 'a SQLite store'}, {epochs} epochs, medians of {rounds}: "
          f"on the training thread {1000 * sync_log / epochs:.1f} ms per epoch synchronous, "
          f"{1000 * async_log / epochs:.1f} ms asynchronous; ending the run {1000 * sync_end:.0f} ms against "
          f"{1000 * async_end:.0f} ms; whole loop {sync_all:.2f} s against {async_all:.2f} s "
          f"({async_all / sync_all:.3f}x)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("--logging-only", action="store_true", help="only the per-epoch logging comparison")
    parser.add_argument("--tracking-uri", help="the logging comparison against this tracking server instead")
    args = parser.parse_args()
    epoch_logging(tracking_uri=args.tracking_uri)
    if args.logging_only:
        return
    sweeper = str(BIN / "sweeper")
    help_s = command_seconds([sweeper, "--help"])
    error_s = command_seconds([sweeper, "search", "fashion", "--trials", "0"])
    python_s = command_seconds([sys.executable, "-c", "pass"])
    print(f"`sweeper --help` {help_s:.3f} s; an argument error {error_s:.3f} s; a bare `python -c pass` "
          f"{python_s:.3f} s (medians of 5)")
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as workdir:
        started = time.time()
        subprocess.run([sweeper, "search", "fashion", "--trials", str(args.trials), "--max-epochs",
                        str(args.max_epochs)], cwd=workdir, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        print_breakdown(breakdown(Path(workdir), started, time.time()))


if __name__ == "__main__":
    main()
