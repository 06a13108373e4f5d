"""Where the embedded stores live: everything under ./mlruns in the folder a sweep runs in."""

from __future__ import annotations

from pathlib import Path

STORE_ROOT = Path("mlruns")
MLFLOW_DB = STORE_ROOT / "mlflow.db"  # MLflow's SQLite tracking store and registry
MLFLOW_ARTIFACTS = STORE_ROOT / "artifacts"
OPTUNA_JOURNAL = STORE_ROOT / "optuna" / "journal.log"  # Optuna's study storage
KERAS_TUNER_DIR = STORE_ROOT / "keras-tuner"  # Keras Tuner's oracle and trial files, one folder per study
DATASETS_DIR = STORE_ROOT / "datasets"  # data given in memory (arrays, DataFrames), kept by content for its studies
