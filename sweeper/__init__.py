"""sweeper: hyperparameter sweeps for Keras MLPs, tracked in MLflow.

The package, by role (README, "Layout"; the import rules are pyproject.toml's import-linter contracts):
`cli` (the command line) over `usecases` (plan, sweep, trial runner, worker pool, refine, export, lr-find, predict,
report, doctor, ui) over `present` (what a person sees), `store` (MLflow, and only it) and `engines` (Optuna, Keras
Tuner), over `ml` (data, model, training, formats), `runtime` (interrupts, locks, process set-up) and `domain` (the
search space, the records and events every layer shares, the errors).
"""

__version__ = "0.1.0"

#: the public API, imported when first used (so that `import sweeper` and the command line's --help stay light)
_API = {"search": "sweeper.api", "load": "sweeper.api", "load_data": "sweeper.api", "Sweep": "sweeper.api",
        "SweeperError": "sweeper.domain.errors", "UsageError": "sweeper.domain.errors",
        "SearchSpaceError": "sweeper.domain.errors", "DatasetError": "sweeper.domain.errors",
        "TrackingError": "sweeper.domain.errors", "SweepError": "sweeper.domain.errors",
        "SweepInterrupted": "sweeper.domain.errors"}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'sweeper' has no attribute {name!r}")
