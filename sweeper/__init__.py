"""sweeper: hyperparameter sweeps for Keras MLPs, tracked in MLflow.

The package, by role (README, "Layout"; the import rules are pyproject.toml's import-linter contracts):
`cli` (the command line) over `usecases` (plan, sweep, trial runner, worker pool, refine, export, lr-find, predict,
report, doctor, ui) over `present` (what a person sees), `store` (MLflow, and only it) and `engines` (Optuna, Keras
Tuner), over `ml` (data, model, training, formats), `runtime` (interrupts, locks, process set-up) and `domain` (the
search space, the records and events every layer shares, the errors).
"""

__version__ = "0.1.0"
