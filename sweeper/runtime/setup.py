"""How an entry point sets up its process: Keras on TensorFlow, and the libraries' own logging, progress bars and
warnings kept out of the user's terminal. Library code never calls this; the command line does, and so do the worker
processes it starts."""

from __future__ import annotations

import logging
import os
import warnings

_configured = False  # whether this process's entry point asked for the libraries to be quiet


def configure_process(*, optuna: bool = False) -> None:
    """Keras trains on TensorFlow; TensorFlow's C++ code, MLflow, Alembic and TensorFlow's Python logger say errors
    only, MLflow draws no progress bar and prints no run URL; `optuna`: Optuna too (it sets its own level when
    imported, so this imports it: call it where Optuna is used). Call it before TensorFlow is imported."""
    global _configured
    _configured = True
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # MLflow sets its loggers' level from it on import
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # its "View run at" per run ended
    # TensorFlow's: a sweep builds many models, and its warning that tf.functions are retraced is about that
    for name in ("mlflow", "alembic", "alembic.runtime.migration", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # MLflow logs every database error with its traceback before raising it; sweeper reports the error once.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    # tqdm (through a library) asks for ipywidgets in a notebook; its plain bars are never shown here anyway.
    warnings.filterwarnings("ignore", message="IProgress not found")
    # sweeper runs the heartbeat thread around each trial itself (ask and tell keep the budget exact).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    if optuna:
        import optuna as optuna_library

        optuna_library.logging.set_verbosity(optuna_library.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna_library.exceptions.ExperimentalWarning)


def tensorflow_imported() -> None:
    """TensorFlow sets its logger's level again when imported in an interactive session (a notebook): keep it to
    errors, as the entry point asked (nothing when no entry point configured this process)."""
    if _configured:
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
