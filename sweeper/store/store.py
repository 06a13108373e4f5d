"""One MLflow store, read back as typed records: its studies, their trials, sweeps and models. Every reader (the
summary, `trials`, `studies`, `report`, `export`, `refine`, `ui`, `predict`) goes through this class; nothing
outside the store sees an MLflow run or client."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sweeper.domain.errors import ExportError, TrackingError
from sweeper.domain.records import FinalModel, SearchRecord, StudyRecord, TrialRecord, numbers_in
from sweeper.domain.space import SearchSpace
from sweeper.domain.urls import mask
from sweeper.runtime.workers import this_worker
from sweeper.store import files
from sweeper.store.artifacts import load_keras_artifact, log_keras
from sweeper.store.layout import (
    BUDGET_TAG,
    FINAL_MODEL_ARTIFACT,
    MODEL_ARTIFACT,
    PARENT_TAG,
    REPORT_ARTIFACTS,
    SETTINGS_TAG,
    SPACE_ARTIFACT,
    SPACE_TAG,
    SWEEP_TAG,
)


def parse_param(text: str) -> Any:
    """A param as MLflow stores it (text) back to the number or flag it was."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(text, text)


class Store:
    """An MLflow tracking store (the embedded SQLite file, a database, or a tracking server)."""

    def __init__(self, client: Any, uri: str):
        self.client, self.uri = client, uri

    @classmethod
    def open(cls, tracking_uri: str | None = None, *, create: bool = True) -> Store:
        """The store at `tracking_uri` (default: ./mlruns/mlflow.db); `create=False` to only read (a missing store
        is then an error, and nothing is written, so a read-only store can be read)."""
        uri = tracking_uri or files.default_tracking_uri()
        return cls(files.open_client(uri, create=create), uri)

    @property
    def read_only(self) -> bool:
        return files.is_read_only(self.uri)

    def describe(self) -> str:
        """The store for messages: its URL, password masked."""
        return mask(self.client.tracking_uri)

    # -- studies -----------------------------------------------------------------------------------------------

    def _experiment(self, study: str):
        experiment = self.client.get_experiment_by_name(study)
        if experiment is None or experiment.lifecycle_stage == "deleted":
            names = [e.name for e in self.client.search_experiments() if e.name != "Default"]
            raise files.no_study(study, self.client.tracking_uri, names)
        return experiment

    def study(self, name: str, *, trials: bool = False) -> StudyRecord:
        """The study as its experiment records it (with `trials`: every trial too); TrackingError when absent."""
        record = _study_record(self._experiment(name))
        if trials:
            runs = self.client.search_runs([record.experiment_id], "tags.run_kind = 'trial'", max_results=50_000)
            record.trials = sorted((self._trial(run, record) for run in runs), key=lambda t: (t.number, t.run_id))
        return record

    def study_names(self) -> list[str]:
        """The studies in the store (experiments that sweeper tagged with an engine), by name."""
        return sorted(e.name for e in self.client.search_experiments() if "backend" in e.tags)

    def studies(self) -> list[StudyRecord]:
        """Every study in the store, with its trials."""
        return [self.study(name, trials=True) for name in self.study_names()]

    def _trial(self, run, study: StudyRecord) -> TrialRecord:
        tags, metrics, info = run.data.tags, run.data.metrics, run.info
        seconds = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
        state = tags.get("state", "running")
        return TrialRecord(int(tags.get("trial_number", -1)), state,
                           metrics.get("objective") if state == "complete" else None, seconds,
                           self._epochs(run, study.metric), {k: parse_param(v) for k, v in run.data.params.items()},
                           info.run_id, tags.get(PARENT_TAG, ""), metrics.get(study.cost_metric) if study.cost_metric
                           else None, dict(metrics), tags.get("has_model") == "true",
                           tags.get("keras_backend", "tensorflow"))

    def _epochs(self, run, metric: str) -> int | None:
        """Epochs trained: logged at the end of a complete trial, else the last epoch it reported."""
        if "epochs" in run.data.metrics:
            return int(run.data.metrics["epochs"])
        steps = [m.step for m in self.client.get_metric_history(run.info.run_id, metric)]
        return max(steps) if steps else None

    def complete_trials(self, study: StudyRecord, limit: int = 1000) -> list[TrialRecord]:
        """Complete trials, best objective first."""
        order = "DESC" if study.maximize else "ASC"
        runs = self.client.search_runs([study.experiment_id], "tags.run_kind = 'trial' and tags.state = 'complete'",
                                       order_by=[f"metrics.objective {order}"], max_results=limit)
        return [self._trial(run, study) for run in runs]

    def best_trial(self, study: StudyRecord) -> TrialRecord:
        """The study's best complete trial that kept its model; TrackingError when there is none yet."""
        for trial in self.complete_trials(study, limit=50):
            if trial.has_model:
                return trial
        raise TrackingError(f"study '{study.name}' has no completed trial with a model yet")

    def best_or_none(self, study: StudyRecord) -> TrialRecord | None:
        try:
            return self.best_trial(study)
        except TrackingError:
            return None

    def smallest_within(self, study: StudyRecord, best: TrialRecord, margin: float) -> TrialRecord:
        """The complete trial with a model and the fewest parameters whose objective is within `margin` of
        `best`'s (`sweeper export --pick smallest-within MARGIN`)."""
        close = [t for t in self.complete_trials(study, limit=50_000)
                 if t.has_model and "param_count" in t.metrics and t.value is not None
                 and (best.value - t.value if study.maximize else t.value - best.value) <= margin]
        if not close:
            return best  # trials from before parameter counts were recorded
        return min(close, key=lambda t: (t.metrics["param_count"], -t.value if study.maximize else t.value))

    def pareto(self, study: StudyRecord) -> list[TrialRecord]:
        """The complete trials no other complete trial beats on both the objective and the cost (lower is better),
        cheapest first."""
        trials = [t for t in self.complete_trials(study, limit=50_000) if t.cost is not None and t.value is not None]

        def score(trial):  # both to be minimised
            return (-trial.value if study.maximize else trial.value, trial.cost)

        front = [t for t in trials if not any(_dominates(score(o), score(t)) for o in trials)]
        return sorted(front, key=lambda t: score(t)[::-1])

    def curves(self, trials: list[TrialRecord], metric: str) -> dict[int, list[tuple[int, float]]]:
        """Per-epoch `metric` of each trial, `number: [(epoch, value), ...]`."""
        return {t.number: sorted((m.step, m.value) for m in self.client.get_metric_history(t.run_id, metric))
                for t in trials}

    def metric_histories(self, trial: TrialRecord, names: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
        """Per-epoch values of the named metrics of a trial, `name: [(epoch, value), ...]`, for those it logged."""
        histories = {name: sorted((m.step, m.value) for m in self.client.get_metric_history(trial.run_id, name))
                     for name in names}
        return {name: points for name, points in histories.items() if points}

    def learning_rates(self, trial: TrialRecord) -> dict[int, float]:
        """A trial's learning rate per epoch (1-based), as its plateau schedule logged it."""
        return {m.step: m.value for m in self.client.get_metric_history(trial.run_id, "learning_rate")}

    def recorded_space(self, study: StudyRecord) -> SearchSpace | None:
        """The search space the study swept, from the copy on its latest sweep run that has one (None for a study
        older than those copies)."""
        from sweeper.domain.space import parse_space, yaml_lines

        for run in self._searches(study, 100):
            if SPACE_ARTIFACT in [a.path for a in self.client.list_artifacts(run.info.run_id)]:
                with tempfile.TemporaryDirectory() as tmp:
                    text = Path(self.client.download_artifacts(run.info.run_id, SPACE_ARTIFACT, tmp)).read_text("utf-8")
                return parse_space(yaml_lines.load(text, path=SPACE_ARTIFACT), path=f"{study.name}'s {SPACE_ARTIFACT}")
        return None

    def recorded_budget(self, study: str) -> dict:
        """The budget `sweeper study create` recorded for the study's workers ({} for a study it did not make, or
        none)."""
        experiment = self.client.get_experiment_by_name(study)
        tags = experiment.tags if experiment is not None and experiment.lifecycle_stage == "active" else {}
        return json.loads(tags[BUDGET_TAG]) if BUDGET_TAG in tags else {}

    def space_signature(self, study: StudyRecord) -> dict:
        """The signature of the space the study was run with ({} for a study that recorded none)."""
        return json.loads(self._experiment(study.name).tags.get(SPACE_TAG, "{}"))

    # -- sweeps ------------------------------------------------------------------------------------------------

    def _searches(self, study: StudyRecord, limit: int):
        return self.client.search_runs([study.experiment_id], "tags.run_kind = 'search'",
                                       order_by=["attributes.start_time DESC"], max_results=limit)

    def latest_search(self, study: StudyRecord) -> SearchRecord | None:
        """The study's latest sweep run (None before the first)."""
        found = self._searches(study, 1)
        return _search_record(found[0]) if found else None

    def search_of(self, trial: TrialRecord) -> SearchRecord | None:
        """The sweep run a trial ran under."""
        return _search_record(self.client.get_run(trial.search_run_id)) if trial.search_run_id else None

    def running_sweep(self, study: StudyRecord) -> str | None:
        """The id of the study's sweep run while it runs (workers join it), else None."""
        return running_sweep(self.client, self._experiment(study.name))

    # -- models ------------------------------------------------------------------------------------------------

    def load_trial_model(self, trial: TrialRecord) -> Any:
        """The Keras model a trial kept."""
        return self._load_model(trial.run_id, MODEL_ARTIFACT)

    def _load_model(self, run_id: str, artifact: str):
        return load_keras_artifact(self.client, run_id, artifact)

    def refit_of(self, study: StudyRecord, trial: TrialRecord) -> FinalModel | None:
        """The latest final model made from `trial` (retrained from its configuration by a search or an export,
        or averaged with other trials or with retrainings from other seeds), or None."""
        found = self.client.search_runs([study.experiment_id], f"tags.refit_of = '{trial.run_id}'",
                                        order_by=["attributes.start_time DESC"], max_results=1)
        if not found:
            return None
        run = found[0]
        tags = run.data.tags
        return FinalModel(self._load_model(run.info.run_id, FINAL_MODEL_ARTIFACT), int(tags["refit_epochs"]),
                          run.info.run_id, numbers_in(tags, "ensemble_of"), numbers_in(tags, "refit_seeds"),
                          tags.get("test_time_shifts") == "on")

    def start_retrain(self, study: StudyRecord, trial: TrialRecord) -> str:
        """A run for a retraining done by `sweeper export --retrain`, under the search that ran the trial."""
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

        tags = {"run_kind": "retrain", "worker": this_worker(), MLFLOW_RUN_NAME: f"retrain-trial-{trial.number:03d}",
                MLFLOW_PARENT_RUN_ID: trial.search_run_id}
        return self.client.create_run(study.experiment_id, tags=tags).info.run_id

    def log_refit_model(self, run_id: str, model: Any, refit_epochs: int, trial: TrialRecord) -> None:
        """Keep a model retrained from `trial`'s configuration on `run_id`, findable by `refit_of`."""
        log_keras(self.client, run_id, model, FINAL_MODEL_ARTIFACT)
        self.client.set_tag(run_id, "refit_epochs", str(refit_epochs))
        self.client.set_tag(run_id, "refit_of", trial.run_id)

    def end_run(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    def log_metrics(self, run_id: str, metrics: dict) -> None:
        log_metrics(self.client, run_id, metrics)

    def log_folder(self, run_id: str, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, str(folder), artifact_path=artifact_path)

    def log_report(self, study: StudyRecord, page: Path) -> str | None:
        """The report page on the study's latest search run, so the MLflow UI shows it (not on a read-only store:
        the page is written all the same); returns that run's id."""
        if self.read_only:
            return None
        search = self.latest_search(study)
        if search is None:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "report.html"
            copy.write_text(page.read_text(encoding="utf-8"), encoding="utf-8")
            self.client.log_artifact(search.run_id, str(copy), artifact_path=REPORT_ARTIFACTS)
        return search.run_id

    def load_registered(self, uri: str) -> tuple[Any, dict | None]:
        """A registered model (models:/NAME@ALIAS or models:/NAME/VERSION) as (Keras model, sweeper's metadata)."""
        import mlflow

        try:
            with files.fluent(self.client.tracking_uri):
                info = mlflow.models.get_model_info(uri)
                model = _keras_model(mlflow.pyfunc.load_model(uri))
        except Exception as exc:
            raise ExportError(f"cannot load {uri} from the MLflow store: {str(exc).splitlines()[0]}") from None
        return model, (info.metadata or {}).get("sweeper")


def _keras_model(pyfunc_model):
    """The Keras model inside a registered sweeper model (logged as code; older ones in the tensorflow flavor)."""
    from mlflow.exceptions import MlflowException

    try:
        return pyfunc_model.unwrap_python_model().keras_model
    except MlflowException:  # not a python model: MLflow's tensorflow flavor wraps the Keras model itself
        return pyfunc_model._model_impl.keras_model


def _study_record(experiment) -> StudyRecord:
    """What a study's experiment tags say: the one place they are read."""
    tags = experiment.tags
    return StudyRecord(experiment.name, experiment.experiment_id, tags.get("backend", "?"), tags.get("dataset", "?"),
                       tags.get("objective_metric", "objective"), tags.get("objective_direction", "maximize"),
                       cost_metric=tags.get("objective_cost", ""), task=tags.get("task", ""),
                       target=tags.get("target") or None, impute=tags.get("impute") or None)


def _search_record(run) -> SearchRecord:
    return SearchRecord(run.info.run_id, run.info.status, dict(run.data.metrics), dict(run.data.tags),
                        sweep_settings(run))


def sweep_settings(run: Any) -> dict:
    """A sweep run's settings, typed: the one decoder (the JSON document the run keeps; its params, for runs
    from before that document)."""
    if SETTINGS_TAG in run.data.tags:
        return json.loads(run.data.tags[SETTINGS_TAG])
    return {k: parse_param(v) for k, v in run.data.params.items()}


def running_sweep(client: Any, experiment: Any) -> str | None:
    """The id of the study's sweep run while it runs (workers join it), else None."""
    run_id = experiment.tags.get(SWEEP_TAG)
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:  # deleted by hand
        return None
    return run_id if run.info.status == "RUNNING" and run.info.lifecycle_stage == "active" else None


def log_metrics(client: Any, run_id: str, metrics: dict) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])


def _dominates(a: tuple, b: tuple) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b
