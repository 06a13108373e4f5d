"""Looking at studies: whether one exists (at once, before MLflow or TensorFlow load), one study's trials, every
study of a store, the page of a study in the MLflow UI."""

from __future__ import annotations

from sweeper.domain.records import StudyRecord
from sweeper.store import Store
from sweeper.store import check_study_exists as _check_study_exists


def check_study_exists(tracking_uri: str | None, study: str, *, say_missing_store: bool = True) -> None:
    """Refuse an unknown study, or a missing embedded store, in a fraction of a second."""
    _check_study_exists(tracking_uri, study, say_missing_store=say_missing_store)


def load_study(study: str, tracking_uri: str | None = None) -> StudyRecord:
    """A study with every trial, read without writing (a read-only store can be read)."""
    return Store.open(tracking_uri, create=False).study(study, trials=True)


def all_studies(tracking_uri: str | None = None) -> list[StudyRecord]:
    """Every study of the store, with its trials."""
    return Store.open(tracking_uri, create=False).studies()
