"""How many retrainings of one configuration the final model should average: a finished sweep's best trial
retrained on training + validation data from each seed given, exactly as the sweep's final model retrains it
(`sweeper.usecases.final.refit_schedule` and `retrain`), then every window of consecutive seeds
averaged on the test split.

Run: [KERAS_BACKEND=jax] .venv/bin/python bench/retrainings.py --tracking-uri sqlite:///DIR/mlruns/mlflow.db
     [--study fashion] [--dataset fashion] [--seeds 0 1 2 3 4 5 6]
(e.g. the store `bench/sweep_profile.py` leaves under /tmp). A sweep run with `--seed s` averages the retrainings
from seeds s, s+1, ...: the window starting at s is what it scored. Prints each retraining's test accuracy and
seconds, then each window's accuracy when its members' probabilities are averaged (the final model's way).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--study", default="fashion")
    parser.add_argument("--dataset", default="fashion", help="the dataset the study swept")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(7)))
    args = parser.parse_args()

    from sweeper.ml.quiet import import_keras

    import_keras()
    from sweeper.domain.events import SweepListener
    from sweeper.ml.data import load_dataset
    from sweeper.store import SweepRecorder
    from sweeper.usecases.final import best_or_none, refit_schedule, retrain

    recorder = SweepRecorder.open(args.study, args.tracking_uri)
    best = best_or_none(recorder)
    trial_model = recorder.store.load_trial_model(best)
    dataset = load_dataset(args.dataset).held()
    epochs, rates = refit_schedule(recorder.store, best, dataset, None)
    print(f"trial {best.number} of study {args.study}, retrained for {epochs} epochs", flush=True)
    probabilities = {}
    for seed in args.seeds:
        retrained = retrain(dataset, best, trial_model, epochs, rates, seed, SweepListener())
        probabilities[seed] = retrained.model.predict(dataset.inputs(dataset.x_test), batch_size=1024, verbose=0)
        print(f"seed {seed}: test accuracy {_accuracy(probabilities[seed], dataset.y_test):.4f} "
              f"({retrained.seconds:.0f} s)", flush=True)
        del retrained
    seeds = list(probabilities)
    for size in range(2, len(seeds) + 1):
        windows = [seeds[start:start + size] for start in range(len(seeds) - size + 1)]
        scores = [_accuracy(sum(probabilities[s] for s in window), dataset.y_test) for window in windows]
        shown = ", ".join(f"{w[0]}-{w[-1]} {score:.4f}" for w, score in zip(windows, scores, strict=True))
        print(f"{size} averaged: {shown} (mean {sum(scores) / len(scores):.4f})")


def _accuracy(probabilities, labels) -> float:
    return float((probabilities.argmax(1) == labels).mean())


if __name__ == "__main__":
    main()
