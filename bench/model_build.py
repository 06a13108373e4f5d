"""Building a model on a shape not built before: Keras' initializers (a jitted random op compiled per shape on JAX)
against sweeper's NumPy draws of the same distributions (`sweeper.ml.initial`), the hand recipe's MLP through
`sweeper.ml.model.build_model`, alternately, at new widths each time, in one process.

Run: KERAS_BACKEND=jax .venv/bin/python bench/model_build.py [--widths 6]
Compare only the ratio measured in one run. JAX's persistent compilation cache is off (sweeper's own set-up is not
run), as for a sweep's first trial at each width.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends import RECIPE  # bench/, the script's own folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, default=6, help="new widths per way (default 6)")
    args = parser.parse_args()
    from sweeper.ml import initial, quiet

    quiet.import_keras()
    import keras

    from sweeper.ml.data import load_dataset
    from sweeper.ml.model import build_model

    data, numpy_drawn = load_dataset("fashion"), initial.drawn_by_numpy
    ways = {"keras": keras.initializers.get, "numpy": numpy_drawn}
    seconds = {way: [] for way in ways}
    build_model({**RECIPE, "units_0": 64, "units_1": 32}, data)  # the process's first build pays for more than shapes
    for i in range(args.widths):
        for j, (way, drawn) in enumerate(ways.items()):
            initial.drawn_by_numpy = drawn
            width = 1001 + 2 * i + j
            started = time.perf_counter()
            build_model({**RECIPE, "units_0": width, "units_1": width // 2}, data)
            seconds[way].append(time.perf_counter() - started)
    initial.drawn_by_numpy = numpy_drawn
    print(f"backend: {keras.backend.backend()}")
    for way, times in seconds.items():
        print(f"{way:>6}: median {statistics.median(times):.3f} s  ({', '.join(f'{t:.3f}' for t in times)})")
    print(f"ratio keras / numpy: {statistics.median(seconds['keras']) / statistics.median(seconds['numpy']):.1f}x")


if __name__ == "__main__":
    main()
