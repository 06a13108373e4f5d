"""The store: the only code that imports MLflow or holds an MLflow client. It opens a store (the embedded SQLite file
made whole or not at all, a database, or a tracking server), names the layout's tags and artifacts, writes a
sweep's parent run and its trial runs (ended by their outcome), reaps dead workers' runs, logs and registers the
final model, and reads a study back as typed records (`sweeper.domain.records`) for every reader."""

from sweeper.store.files import check_study_exists, default_artifact_location, default_tracking_uri, describe_store
from sweeper.store.store import Store
from sweeper.store.sweep_runs import SweepRecorder, TrialRun

__all__ = ["Store", "SweepRecorder", "TrialRun", "check_study_exists", "default_artifact_location",
           "default_tracking_uri", "describe_store"]
