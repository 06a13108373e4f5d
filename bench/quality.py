"""Quality under a wall-clock budget and time to target: sweeper's default search against the hand anchors.

Run: .venv/bin/python bench/quality.py [--seeds 0 1 2] [--timeout 900] [--tools sweeper recipe optuna ...]
For each seed the tools run one after another on the same machine, each timed from its start (TensorFlow import
and data loading included) to its exit, each given the same wall-clock budget:
- sweeper: `sweeper search fashion --timeout Ns --seed S`, every other setting at its default (the final model
  inside the budget), a fresh store;
- recipe: the careful hand recipe trained once (bench/anchors.py), the bar to clear;
- optuna, keras-tuner, keras-tuner-hyperband: Optuna TPE + MedianPruner, Keras Tuner RandomSearch and Hyperband,
  written by hand over the same enlarged space as search_spaces/fashion.yaml (bench/anchors.py).
Prints, per tool, the best model's test accuracy (mean, spread over seeds), wall time, and the time until a model
first reached each target validation accuracy (0.89, 0.90); for sweeper also its share of wall time not training
and its worker processes' peak resident memory (read from /proc every 0.5 s, as bench/sweep_profile.py does).
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from overhead import breakdown
from sweep_profile import PeakSampler

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOOLS = ("sweeper", "recipe", "optuna", "keras-tuner", "keras-tuner-hyperband")


def run_sweeper(args, seed, workdir) -> dict:
    started, sampler = time.time(), PeakSampler()
    with open(Path(workdir) / "sweeper.log", "w") as log:
        cap = ["--trials", str(args.trials)] if args.trials else []
        done = subprocess.run([str(BIN / "sweeper"), "search", "fashion", "--timeout", f"{args.timeout:g}s",
                               "--seed", str(seed), *_smaller(args), *cap], cwd=workdir, stdout=log,
                              stderr=subprocess.STDOUT)
    ended = time.time()  # the sweep's own wall time: reading its store back below is the bench's
    peaks = sampler.stop()
    shutil.copy(Path(workdir) / "sweeper.log", f"sweeper-seed{seed}.log")  # kept: the sweep's own account of its time
    if done.returncode:
        sys.exit(f"sweeper failed:\n{(Path(workdir) / 'sweeper.log').read_text()[-3000:]}")
    record = sweeper_record(Path(workdir), args.targets)
    parts = breakdown(Path(workdir), started, ended)
    record["overhead_share"], record["wall_s"] = 1 - parts["training"] / parts["wall"], parts["wall"]
    record["worker_peak_mib"] = max(peaks.values(), default=0.0)
    return record


def sweeper_record(workdir: Path, targets: list[float]) -> dict:
    """Test accuracy (of the final model and of the best trial's own) and the first time at each target, read
    back from the sweep's own MLflow store."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fashion")
    runs = client.search_runs([experiment.experiment_id], max_results=10_000)
    parent = next(r for r in runs if r.data.tags.get("run_kind") == "search")
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    history = [m for r in trials for m in client.get_metric_history(r.info.run_id, "val_accuracy")]
    reached = {str(t): min((m.timestamp / 1000 for m in history if m.value >= t), default=None) for t in targets}
    metrics = parent.data.metrics
    return {"test_accuracy": metrics["test_accuracy"], "trials": len(trials),
            "trial_test_accuracy": metrics.get("trial_test_accuracy", metrics["test_accuracy"]),
            "unshifted_test_accuracy": metrics.get("unshifted_test_accuracy"), "targets_reached_at": reached}


def run_anchor(args, tool, seed, workdir) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "anchors.py"), tool, "--seed", str(seed),
                          "--timeout", str(args.timeout), "--targets", *map(str, args.targets), "--workdir", workdir,
                          *_smaller(args)],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _smaller(args) -> list[str]:
    """A quick look at the scripts themselves (the suite's test): fewer epochs and training images for every tool."""
    return [*(["--max-epochs", str(args.max_epochs)] if args.max_epochs else []),
            *(["--subset", str(args.subset)] if args.subset else [])]


def measure(args, tool, seed) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-{tool}-") as workdir:
        started = time.time()
        record = run_sweeper(args, seed, workdir) if tool == "sweeper" else run_anchor(args, tool, seed, workdir)
        record.setdefault("wall_s", time.time() - started)
        reached = record.pop("targets_reached_at")
        record["to_target_s"] = {t: (at - started if at else None) for t, at in reached.items()}
    unshifted = record.get("unshifted_test_accuracy")
    shifts = f"; without test-time shifts {unshifted:.4f}" if unshifted is not None else ""
    extra = (f"{shifts}; best trial's own model {record['trial_test_accuracy']:.4f}, not training "
             f"{record['overhead_share']:.1%} of wall time, worker peak {record['worker_peak_mib']:.0f} MiB"
             if tool == "sweeper" else "")
    to = "  ".join(f"to {t} val {_seconds(s)}" for t, s in record["to_target_s"].items())
    print(f"seed {seed} {tool:<22} test {record['test_accuracy']:.4f}  wall {record['wall_s']:6.0f} s  {to}  "
          f"({record['trials']} trials{extra})", flush=True)
    return record


def _seconds(value) -> str:
    return "never" if value is None else f"{value:.0f} s"


def summarise(args, results: dict) -> None:
    print(f"\n{len(args.seeds)} seeds, {args.timeout:g} s budget each")
    for tool, records in results.items():
        accuracies = [r["test_accuracy"] for r in records]
        wall = statistics.mean(r["wall_s"] for r in records)
        to = []
        for target in map(str, args.targets):
            reached = [r["to_target_s"][target] for r in records if r["to_target_s"][target] is not None]
            to.append(f"to {target}: {statistics.mean(reached):.0f} s" if reached else f"to {target}: -")
            to[-1] += f" ({len(records) - len(reached)} never)"
        print(f"{tool:<22} test mean {statistics.mean(accuracies):.4f} ({min(accuracies):.4f}-{max(accuracies):.4f})"
              f"  wall {wall:.0f} s  {'; '.join(to)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timeout", type=float, default=900, help="seconds of wall time per tool and seed")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.89, 0.90])
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--max-epochs", type=int, help="a quick look only: every tool's epoch cap")
    parser.add_argument("--subset", type=int, help="a quick look only: every tool's training images")
    parser.add_argument("--trials", type=int, help="a quick look only: sweeper's trial cap (its --timeout counts "
                                                   "its start-up, which a budget of seconds would not cover)")
    args = parser.parse_args()
    results = {tool: [] for tool in args.tools}
    for seed in args.seeds:
        for tool in args.tools:
            results[tool].append(measure(args, tool, seed))
    summarise(args, results)
    if "sweeper" in results:
        trial_models = [r["trial_test_accuracy"] for r in results["sweeper"]]
        print(f"sweeper's best trial's own model (before the refit on train + val): mean "
              f"{statistics.mean(trial_models):.4f}, {min(trial_models):.4f}-{max(trial_models):.4f}")


if __name__ == "__main__":
    main()
