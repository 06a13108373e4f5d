"""Where the embedded stores live: everything under ./mlruns in the folder a sweep runs in; and the user's cache
of what is costly to make again (an empty MLflow store, JAX's compiled programs)."""

from __future__ import annotations

import os
from pathlib import Path

STORE_ROOT = Path("mlruns")
MLFLOW_DB = STORE_ROOT / "mlflow.db"  # MLflow's SQLite tracking store and registry
MLFLOW_ARTIFACTS = STORE_ROOT / "artifacts"
OPTUNA_JOURNAL = STORE_ROOT / "optuna" / "journal.log"  # Optuna's study storage
KERAS_TUNER_DIR = STORE_ROOT / "keras-tuner"  # Keras Tuner's oracle and trial files, one folder per study
DATASETS_DIR = STORE_ROOT / "datasets"  # data given in memory (arrays, DataFrames), kept by content for its studies


def user_cache() -> Path:
    """~/.cache/sweeper, or $XDG_CACHE_HOME/sweeper."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sweeper"
