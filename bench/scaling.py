"""Parallel scaling: trials per hour of `sweeper search --jobs 1` against `--jobs 2` on this machine's cores.

Run: .venv/bin/python bench/scaling.py [--trials 10] [--max-epochs 6] [--jobs 1 2] [--pruner NAME] [--same-trials]
                                        [--output DIR]
Runs the same default sweep (Optuna TPE + median pruning, full Fashion-MNIST; one final retraining) with each
--jobs in a fresh folder, one after the other, and prints wall time, trials and epochs trained per hour, and
the best validation and test accuracy, so that throughput is compared at the quality it bought. With --output,
each sweep's own output (its trials' lines and times) is kept in DIR/jobs-N.log, to see where a slow run's time went.
With --pruner none every trial runs its epochs (early stopping aside), so that the two sweeps are compared at equal
pruning: the median pruner stops more or fewer trials depending on the order in which parallel trials report.
With --same-trials every sweep after the first trains the first one's configurations, in its order (as the `start`
of a copy of the space file), so that the sweeps do the same work: two parallel workers ask the sampler in another
order than one, and a draw of a few wide models more or less moves the ratio (x1.51 and x1.00 in two runs of
--pruner none alone, bench/RESULTS.md).
"""

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def sweep(jobs: int, args, workdir: str, space: Path | None = None) -> dict:
    """One sweep in `workdir` (`space`: a space file instead of fashion's own): its wall time, trials, epochs and
    scores."""
    from mlflow import MlflowClient

    with contextlib.ExitStack() as stack:
        log = stack.enter_context(Path(args.output, f"jobs-{jobs}.log").open("w")) if args.output else None
        started = time.time()
        # --ensemble 1: one retraining at the end, as before the final model averaged retrainings (made by one
        # worker, it is the same serial time at every --jobs)
        subprocess.run([str(BIN / "sweeper"), "search", "fashion", "--trials", str(args.trials), "--max-epochs",
                        str(args.max_epochs), "--jobs", str(jobs), "--seed", str(args.seed), "--ensemble", "1",
                        "--pruner", args.pruner, *(["--space", str(space)] if space else [])],
                       cwd=workdir,
                       check=True, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wall = time.time() - started
    client = MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("fashion").experiment_id], max_results=10_000)
    parent = next(r for r in runs if r.data.tags.get("run_kind") == "search")
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    epochs = sum(len(client.get_metric_history(r.info.run_id, "loss")) for r in trials)
    return {"wall": wall, "trials": len(trials), "epochs": epochs,
            "best_val": parent.data.metrics["best_val_accuracy"], "test": parent.data.metrics["test_accuracy"]}


def configurations(workdir: str) -> list[dict]:
    """A finished sweep's trials' configurations in trial order, as a space file's `start` entries (the layers'
    sizes as one `units` list), read from its Optuna journal."""
    import optuna

    from sweeper.domain.places import OPTUNA_JOURNAL
    from sweeper.engines.optuna_engine import make_storage

    storage = make_storage(str(Path(workdir, OPTUNA_JOURNAL)))
    trials = optuna.load_study(study_name="fashion", storage=storage).get_trials(deepcopy=False)
    entries = []
    for trial in sorted(trials, key=lambda t: t.number):
        params = dict(trial.params)
        units = [params.pop(f"units_{i}") for i in range(params["n_layers"])]
        entries.append({**params, "units": units})
    return entries


def space_starting_with(entries: list[dict], folder: str) -> Path:
    """A copy of fashion's space file whose `start` is `entries`, written in `folder`."""
    import yaml

    from sweeper.domain.space import bundled_space_path

    space = yaml.safe_load(bundled_space_path("fashion").read_text())
    path = Path(folder, "same-trials.yaml")
    path.write_text(yaml.safe_dump({**space, "start": entries}, sort_keys=False))
    return path


def report(jobs: int, r: dict) -> None:
    print(f"--jobs {jobs}: {r['wall']:6.0f} s, {r['trials']} trials ({r['trials'] / r['wall'] * 3600:5.0f}/hour), "
          f"{r['epochs']} epochs ({r['epochs'] / r['wall'] * 3600:5.0f}/hour); best val {r['best_val']:.4f}, "
          f"test {r['test']:.4f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--max-epochs", type=int, default=6)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pruner", default="median", help="sweeper's --pruner (none: equal pruning)")
    parser.add_argument("--same-trials", action="store_true",
                        help="every sweep after the first trains the first one's configurations, in its order")
    parser.add_argument("--output", help="a folder to keep each sweep's output in (jobs-N.log)")
    args = parser.parse_args()
    if args.output:
        Path(args.output).mkdir(parents=True, exist_ok=True)
    results, space = {}, None
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as folder:
        for jobs in args.jobs:
            with tempfile.TemporaryDirectory(prefix=f"bench-jobs{jobs}-") as workdir:
                results[jobs] = sweep(jobs, args, workdir, space)
                if args.same_trials and space is None:
                    space = space_starting_with(configurations(workdir), folder)
            report(jobs, results[jobs])
    base = results[args.jobs[0]]
    for jobs, r in list(results.items())[1:]:
        trials_ratio = base['wall'] / r['wall'] * r['trials'] / base['trials']
        print(f"--jobs {jobs} over --jobs {args.jobs[0]}: trials/hour x{trials_ratio:.2f}, "
              f"epochs/hour x{(r['epochs'] / r['wall']) / (base['epochs'] / base['wall']):.2f}")


if __name__ == "__main__":
    main()
