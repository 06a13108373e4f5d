"""Quality under budget and time to target: sweeper's default search against the plain-library anchors.

Run: .venv/bin/python bench/quality.py [--seeds 0 1 2] [--trials 12] [--max-epochs 15]
For each seed, three processes run one after another on the same machine, each timed from its
start (TensorFlow import and data loading included) to its exit:
- sweeper: `sweeper search fashion --trials N --max-epochs E --patience P --seed S`, a fresh store;
- keras-tuner: Keras Tuner RandomSearch written by hand (bench/anchors.py);
- optuna: Optuna TPE + MedianPruner written by hand (bench/anchors.py).
Same space, trial budget, epoch cap, patience and data split. Prints, per tool, the best model's
test accuracy (mean, spread over seeds), wall time, and the time until a model first reached the
target validation accuracy.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from overhead import breakdown

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOOLS = ("sweeper", "keras-tuner", "optuna")


def run_sweeper(args, seed, workdir) -> dict:
    started = time.time()
    with open(Path(workdir) / "sweeper.log", "w") as log:
        done = subprocess.run([str(BIN / "sweeper"), "search", "fashion", "--trials", str(args.trials),
                               "--max-epochs", str(args.max_epochs), "--patience", str(args.patience), "--seed",
                               str(seed)], cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"sweeper failed:\n{(Path(workdir) / 'sweeper.log').read_text()[-3000:]}")
    record = sweeper_record(Path(workdir), args.target)
    parts = breakdown(Path(workdir), started, time.time())
    record["overhead_share"] = 1 - parts["training"] / parts["wall"]
    return record


def sweeper_record(workdir: Path, target: float) -> dict:
    """Test accuracy (of the final model and of the best trial's own) and first time at target, read back
    from the sweep's own MLflow store."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fashion")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("run_kind") == "search")
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    reached = [m.timestamp / 1000 for r in trials
               for m in client.get_metric_history(r.info.run_id, "val_accuracy") if m.value >= target]
    metrics = parent.data.metrics
    return {"test_accuracy": metrics["test_accuracy"], "trials": len(trials),
            "trial_test_accuracy": metrics.get("trial_test_accuracy", metrics["test_accuracy"]),
            "target_reached_at": min(reached) if reached else None}


def run_anchor(args, tool, seed, workdir) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "anchors.py"), tool, "--seed", str(seed), "--trials",
                          str(args.trials), "--max-epochs", str(args.max_epochs), "--patience", str(args.patience),
                          "--target", str(args.target), "--workdir", workdir],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(args, tool, seed) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-{tool}-") as workdir:
        started = time.time()
        record = run_sweeper(args, seed, workdir) if tool == "sweeper" else run_anchor(args, tool, seed, workdir)
        record["wall_s"] = time.time() - started
        at = record.pop("target_reached_at")
        record["to_target_s"] = at - started if at else None
    extra = (f"; best trial's own model {record['trial_test_accuracy']:.4f}, not training "
             f"{record['overhead_share']:.1%} of wall time" if tool == "sweeper" else "")
    print(f"seed {seed} {tool:<12} test {record['test_accuracy']:.4f}  wall {record['wall_s']:6.0f} s  "
          f"to {args.target} val {_seconds(record['to_target_s'])}  ({record['trials']} trials{extra})", flush=True)
    return record


def _seconds(value) -> str:
    return "never" if value is None else f"{value:.0f} s"


def summarise(args, results: dict) -> None:
    print(f"\n{len(args.seeds)} seeds, {args.trials} trials, up to {args.max_epochs} epochs, patience {args.patience}")
    print(f"{'tool':<12} {'test accuracy mean':>18} {'spread (min-max)':>18} {'wall mean':>10} "
          f"{'to ' + str(args.target) + ' val (mean; never)':>28}")
    base = statistics.mean(r["wall_s"] for r in results["sweeper"])
    for tool, records in results.items():
        accuracies = [r["test_accuracy"] for r in records]
        reached = [r["to_target_s"] for r in records if r["to_target_s"] is not None]
        never = len(records) - len(reached)
        wall = statistics.mean(r["wall_s"] for r in records)
        to_target = f"{statistics.mean(reached):.0f} s" if reached else "-"
        print(f"{tool:<12} {statistics.mean(accuracies):>18.4f} {min(accuracies):>9.4f}-{max(accuracies):.4f} "
              f"{wall:>8.0f} s {to_target:>20}; {never} never   (wall {wall / base:.2f}x sweeper's)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.89)
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    args = parser.parse_args()
    results = {tool: [] for tool in args.tools}
    for seed in args.seeds:
        for tool in args.tools:
            results[tool].append(measure(args, tool, seed))
    if "sweeper" in results:
        summarise(args, results)
        trial_models = [r["trial_test_accuracy"] for r in results["sweeper"]]
        print(f"sweeper's best trial's own model (before the refit on train + val): mean "
              f"{statistics.mean(trial_models):.4f}, {min(trial_models):.4f}-{max(trial_models):.4f}")


if __name__ == "__main__":
    main()
