"""sweeper from Python: `search` a dataset (a name, NumPy arrays or a pandas DataFrame) with the same plan, engines,
MLflow records and final model as `sweeper search`, `load` a study back, and look at either through a `Sweep`.
An entry point like the command line: it sets up its process (Keras' backend, libraries quiet),
shows progress in a notebook cell or on the terminal, and raises sweeper's own errors (`sweeper.errors`)."""

from sweeper.api.search import load, load_data, search
from sweeper.api.sweep import Sweep

__all__ = ["Sweep", "load", "load_data", "search"]
