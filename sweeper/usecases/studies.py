"""Looking at studies: whether one exists (at once, before MLflow or TensorFlow load), one study's trials, every
study of a store, the page of a study in the MLflow UI."""

from __future__ import annotations

from sweeper.domain.events import SweepResult
from sweeper.domain.records import SearchRecord, StudyRecord, TrialRecord, numbers_in
from sweeper.store import Store
from sweeper.store import check_study_exists as _check_study_exists

#: how many of the best complete trials a result shows
TOP = 5


def check_study_exists(tracking_uri: str | None, study: str, *, say_missing_store: bool = True) -> None:
    """Refuse an unknown study, or a missing embedded store, in a fraction of a second."""
    _check_study_exists(tracking_uri, study, say_missing_store=say_missing_store)


def load_study(study: str, tracking_uri: str | None = None) -> StudyRecord:
    """A study with every trial, read without writing (a read-only store can be read)."""
    return Store.open(tracking_uri, create=False).study(study, trials=True)


def all_studies(tracking_uri: str | None = None) -> list[StudyRecord]:
    """Every study of the store, with its trials."""
    return Store.open(tracking_uri, create=False).studies()


def study_result(study: str, tracking_uri: str | None = None) -> SweepResult:
    """The result of a study's latest sweep as the store holds it (for `sweeper.load`)."""
    return study_and_result(study, tracking_uri)[1]


def study_and_result(study: str, tracking_uri: str | None = None) -> tuple[StudyRecord, SweepResult]:
    """A study with every trial, and its latest sweep's result, from one read of the store."""
    store = Store.open(tracking_uri, create=False)
    record = store.study(study, trials=True)
    return record, recorded_result(store, record, store.latest_search(record), record.counts(),
                                   store.best_or_none(record))


def recorded_result(store: Store, record: StudyRecord, search: SearchRecord | None, counts: dict,
                    best: TrialRecord | None) -> SweepResult:
    """A sweep's result from what its run recorded: test metrics, the refit, the registered version."""
    metrics, tags = (search.metrics, search.tags) if search else ({}, {})
    cost = record.cost_metric or None
    result = SweepResult(record.name, store.uri, record.experiment_id, search.run_id if search else "", record.metric,
                         best, {k: v for k, v in metrics.items() if k.startswith("test_")}, counts,
                         store.complete_trials(record, limit=TOP), tags.get("model_version"), cost_metric=cost,
                         pareto=store.pareto(record) if cost else [])
    result.trial_test_metrics = {k.removeprefix("trial_"): v for k, v in metrics.items() if k.startswith("trial_test_")}
    result.refit_epochs = int(metrics["refit_epochs"]) if "refit_epochs" in metrics else None
    result.baseline, result.baseline_metrics = tags.get("baseline"), baseline_metrics(metrics)
    read_ensemble(result, metrics, tags)
    return result


def read_ensemble(result: SweepResult, metrics: dict, tags: dict) -> None:
    """The averaged final model's part of a result, from the sweep run's tags and metrics: the trials considered
    and averaged, and the best trial's final model alone."""
    result.ensemble_candidates = numbers_in(tags, "ensemble_candidates")
    result.ensemble_of = numbers_in(tags, "ensemble_of")
    result.ensemble_skipped = tags.get("ensemble_skipped") == "longer_refit"
    result.refit_seeds = numbers_in(tags, "refit_seeds")
    result.single_test_metrics = other_test_metrics("single", metrics)
    if "shifts_validation_with" in metrics:
        result.shifts_validation = (metrics["shifts_validation_without"], metrics["shifts_validation_with"])
    result.unshifted_test_metrics = other_test_metrics("unshifted", metrics)


def baseline_metrics(metrics: dict) -> dict:
    """The baseline's test metrics among a sweep run's metrics, named as the final model's."""
    return other_test_metrics("baseline", metrics)


def other_test_metrics(model: str, metrics: dict) -> dict:
    """The test metrics a sweep run logged for one of its other models (`model`: single, unshifted, baseline, as in
    `single_test_accuracy`), named as the final model's (`test_accuracy`)."""
    return {k.removeprefix(f"{model}_"): v for k, v in metrics.items() if k.startswith(f"{model}_test_")}
