"""A sweep worker's start-up, piece by piece: what a fresh JAX worker process pays before its first trial.

Run: .venv/bin/python bench/worker_start.py [--repeats 5]
Each piece runs in fresh interpreters (`--repeats` of each, interleaved; the median and the range printed), done as
a worker does it (`sweeper.usecases.pool.ready_to_train` and `opened_study`): NumPy's extra number types
(`import ml_dtypes`, which JAX and TensorFlow import; its version printed), Keras on JAX with TensorFlow and Keras'
extras kept out (ml_dtypes included), Fashion-MNIST read and split, and MLflow imported with a sweep's store opened.
Their sum is most of a sweep's start-up (bench/sweep_profile.py: from the command's start to its first trial).
Compare two versions of a library as a ratio from one run (e.g. PYTHONPATH=<a folder with the other version>).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PIECES = {
    "import ml_dtypes": """
import numpy
started = time.perf_counter()
import ml_dtypes
extra = ml_dtypes.__version__
""",
    "import keras (JAX worker)": """
os.environ["KERAS_BACKEND"] = "jax"
from sweeper.runtime.setup import configure_process, keras_extras_kept_out, other_backend_kept_out
from sweeper.ml.quiet import import_keras
configure_process()
other_backend_kept_out()
started = time.perf_counter()
with keras_extras_kept_out():
    import_keras()
""",
    "Fashion-MNIST read and split": """
from sweeper.ml.data import load_dataset
started = time.perf_counter()
load_dataset("fashion")
""",
    "import mlflow, open the store": """
started = time.perf_counter()
from sweeper.store.files import open_client
open_client(STORE)
""",
}

PROLOGUE = "import os, sys, time, json\nextra = None\n"
EPILOGUE = "\nprint(json.dumps([time.perf_counter() - started, extra]))\n"


def timed(piece: str, store: str) -> tuple[float, str | None]:
    """Seconds of one piece in a fresh interpreter, and what it reports besides (a version)."""
    code = PROLOGUE + f"STORE = {store!r}\n" + PIECES[piece] + EPILOGUE
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    seconds, extra = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = f"sqlite:///{os.path.join(folder, 'mlflow.db')}"
        timed("import mlflow, open the store", store)  # the store made once, as the sweep's own process does
        times: dict[str, list[float]] = {piece: [] for piece in PIECES}
        extras = {}
        for _ in range(args.repeats):
            for piece in PIECES:
                seconds, extras[piece] = timed(piece, store)
                times[piece].append(seconds)
    for piece, seconds in times.items():
        note = f"  ({extras[piece]})" if extras[piece] else ""
        print(f"{piece:32s} {statistics.median(seconds):6.3f} s  ({min(seconds):.3f}-{max(seconds):.3f}){note}")
    print(f"{'sum of the medians':32s} {sum(statistics.median(s) for s in times.values()):6.3f} s")


if __name__ == "__main__":
    main()
