"""Memory of training on the full data: a worker's resident set per trial, the data as arrays against held.

Run: .venv/bin/python bench/memory_full.py [--trials 4] [--epochs 1]
Trains the hand recipe (bench/anchors.py: 784-1024-512-10, batch normalisation, batch 256) on all 55,000
Fashion-MNIST training images, --trials times in one process, evaluating each on the test split, as a
sweep's worker does; twice, each in a fresh process: once given the NumPy arrays (Keras on TensorFlow
copies them into new tensors for every fit) and once given the dataset `held()` (tensors over the arrays'
memory, what sweeper's workers do). Prints each trial's time in fit and the resident memory after it and at
its peak (sampled every 20 ms), then the ratio of the peaks. bench/memory.py (2,000-image subsets, 50
trials) shows the growth over a long sweep; this one the real case's size.
"""

import argparse
import gc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def resident_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakSampler:
    def __init__(self):
        self.peak = 0.0
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while True:
            self.peak = max(self.peak, resident_mib())
            time.sleep(0.02)


def one_process(mode: str, trials: int, epochs: int) -> None:
    sampler = PeakSampler()
    from sweeper.ml.quiet import import_keras
    from sweeper.runtime.setup import configure_process

    configure_process()
    import_keras()
    import keras
    from anchors import RECIPE

    from sweeper.domain.space import Objective
    from sweeper.ml.data import load_dataset
    from sweeper.ml.train import evaluate, train_trial

    print(f"{mode}: {resident_mib():.0f} MiB after import keras", flush=True)
    data = load_dataset("fashion")
    if mode == "held":
        data = data.held()
    print(f"{mode}: {resident_mib():.0f} MiB with the data", flush=True)
    params = {**RECIPE, "kernel_initializer": "he_normal", "l2": 0.0, "lr_schedule": "plateau"}
    for trial in range(trials):
        result = train_trial(params, data, Objective("val_accuracy", "maximize"), max_epochs=epochs,
                             patience=epochs, seed=trial)
        evaluate(result.model, data)
        seconds = result.seconds
        del result
        keras.backend.clear_session()
        gc.collect()
        print(f"{mode}: trial {trial}: fit {seconds:.1f} s, {resident_mib():.0f} MiB after, "
              f"peak {sampler.peak:.0f} MiB", flush=True)
    print(f"PEAK {mode} {sampler.peak:.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--mode", choices=["arrays", "held"], help=argparse.SUPPRESS)  # one child's part
    args = parser.parse_args()
    if args.mode:
        return one_process(args.mode, args.trials, args.epochs)
    peaks = {}
    for mode in ("arrays", "held"):
        done = subprocess.run([sys.executable, __file__, "--mode", mode, "--trials", str(args.trials), "--epochs",
                               str(args.epochs)], capture_output=True, text=True, check=True)
        for line in done.stdout.splitlines():
            if line.startswith("PEAK "):
                peaks[mode] = float(line.split()[2])
            else:
                print(line)
    print(f"peak resident memory: arrays {peaks['arrays']:.0f} MiB, held {peaks['held']:.0f} MiB "
          f"(held/arrays {peaks['held'] / peaks['arrays']:.3f}); target < 1229 MiB (1.2 GiB, as before)")


if __name__ == "__main__":
    main()
