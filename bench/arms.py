"""What the accuracy benchmarks share: run a sweeper command in a fresh folder, read a study's final
metrics back from its MLflow store, the budget arguments, and the summary lines."""

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def sweeper(workdir: Path, *args) -> None:
    with open(workdir / "log.txt", "a") as log:
        done = subprocess.run([str(BIN / "sweeper"), *map(str, args)], cwd=workdir, stdout=log,
                              stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"sweeper {' '.join(map(str, args))} failed:\n{(workdir / 'log.txt').read_text()[-3000:]}")


def final_metrics(workdir: Path, study: str) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(study)
    [parent] = client.search_runs([experiment.experiment_id], "tags.run_kind = 'search'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
    m = parent.data.metrics
    return {"test": m["test_accuracy"], "trial_test": m.get("trial_test_accuracy", m["test_accuracy"]),
            "best_val": m["best_val_accuracy"]}


def budget_arguments(description: str):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--max-epochs", type=int, default=10)
    return parser.parse_args()


def print_means(rows: list[dict], arms) -> None:
    """Per arm: mean test accuracy of the final model / of the best trial's own model / best val accuracy."""
    for arm in arms:
        means = [statistics.mean(r[arm][k] for r in rows) for k in ("test", "trial_test", "best_val")]
        print(f"  {arm:<14} {means[0]:.4f} / {means[1]:.4f} / {means[2]:.4f}   per seed: "
              + ", ".join(f"{r[arm]['test']:.4f}" for r in rows))
