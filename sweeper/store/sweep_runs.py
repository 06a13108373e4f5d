"""What a sweep writes: its experiment and parent run (joined by every worker of the study), one run per trial
ended with the status its outcome deserves, the dead workers' runs reaped, and the final model logged and
registered (one version per best trial, the `champion` alias moved to it)."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sweeper.domain.errors import TrackingError, UsageError
from sweeper.domain.records import SearchRecord, StudyRecord, TrialOutcome
from sweeper.domain.space import signature_changes
from sweeper.runtime.interrupts import deferred
from sweeper.runtime.setup import keras_backend
from sweeper.runtime.workers import is_dead, this_worker
from sweeper.store import files
from sweeper.store.artifacts import log_keras
from sweeper.store.layout import (
    BUDGET_TAG,
    CHAMPION,
    FINAL_MODEL_ARTIFACT,
    MODEL_ARTIFACT,
    PARENT_TAG,
    SETTINGS_TAG,
    SPACE_ARTIFACT,
    SPACE_TAG,
    STATUS,
    SWEEP_TAG,
)
from sweeper.store.store import Store, _study_record, log_metrics, running_sweep

logger = logging.getLogger(__name__)

#: How long a worker whose trial another worker failed (it was paused past the grace period) waits for that
#: worker to end the trial's run as failed, so that its own word, `abandoned`, lands last.
TAKER_WAIT_S = 30.0


class TrialRun:
    """What a running trial writes to its own child run, and how it ends (`end`, with the trial's outcome)."""

    def __init__(self, client: Any, run_id: str):
        self.client, self.run_id = client, run_id

    def log_epoch(self, epoch: int, logs: dict) -> None:
        """The epoch's metrics, written before the next epoch trains. Synchronously: MLflow's asynchronous logging
        spared the training thread 8 ms per epoch but cost each trial about 0.7 s at its end, when ending the run
        stops MLflow's logging thread, which polls its queue once a second (bench/RESULTS.md, fifteenth session)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with deferred():  # a Ctrl-C in mid-write would leave the SQLite store locked for the trial's last words
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in logs.items()])

    def log_result(self, metrics: dict, *, objective: float, best_epoch: int, epochs: int, seconds: float,
                   **others: float) -> None:
        """The trial's model's metrics (its best epoch) as `final_*`, what it cost, and `others`, in one write
        after the epochs' own."""
        final = {f"final_{k}": v for k, v in metrics.items()}
        final.update(objective=objective, best_epoch=best_epoch, epochs=epochs, train_seconds=seconds, **others)
        self.log_metrics(final)

    def log_metrics(self, metrics: dict) -> None:
        with deferred():
            log_metrics(self.client, self.run_id, metrics)

    def log_model(self, model: Any) -> None:
        """Keep this trial's trained model (done for trials that beat the study's best)."""
        log_keras(self.client, self.run_id, model, MODEL_ARTIFACT)
        self.client.set_tag(self.run_id, "has_model", "true")

    def end(self, outcome: TrialOutcome) -> None:
        """End the run with the status `outcome` deserves (layout.STATUS); a pruned trial keeps its time in fit."""
        if outcome.state == "abandoned":
            self._wait_for_the_taker()
        with deferred():
            if outcome.state == "pruned" and outcome.seconds is not None:
                self.client.log_metric(self.run_id, "train_seconds", float(outcome.seconds))
            _end_trial(self.client, self.run_id, outcome.state, outcome.recorded_reason)


    def _wait_for_the_taker(self) -> None:
        """The worker that failed this trial in the study ends its run as failed soon after (`end_trial_runs`,
        a read then a write): ending first would let that write land on ours and hide that this worker was
        paused, not dead. So wait until its write has landed, or `TAKER_WAIT_S` passed (it may have died)."""
        deadline = time.monotonic() + TAKER_WAIT_S
        while self.client.get_run(self.run_id).info.status == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.2)


def _base_tags(study: StudyRecord) -> dict:
    """The tags every run this process writes for the study carries."""
    return {"backend": study.backend, "dataset": study.dataset, "worker": this_worker(),
            "keras_backend": keras_backend()}


def _end_trial(client, run_id: str, state: str, note: str = "") -> None:
    client.set_tag(run_id, "state", state)
    if note:
        client.set_tag(run_id, "state_reason", note[:4000])
    client.set_terminated(run_id, STATUS[state])


class SweepRecorder:
    """One sweep's view of the store: its study's experiment, its parent run, its trials."""

    def __init__(self, store: Store, study: str):
        self.store, self.study = store, study
        self.client, self.uri = store.client, store.uri
        self.experiment = self._existing_experiment()  # created by open_search: refusals write nothing
        self.experiment_id = self.experiment.experiment_id if self.experiment else None
        self.parent_id: str | None = None
        self.base_tags: dict = {}
        self.joined = False  # True when this process attached to a sweep run that another one started

    @classmethod
    def open(cls, study: str, tracking_uri: str | None = None) -> SweepRecorder:
        return cls(Store.open(tracking_uri), study)

    def _existing_experiment(self):
        found = self.client.get_experiment_by_name(self.study)
        if found is not None and found.lifecycle_stage == "deleted":
            raise TrackingError(f"the MLflow experiment '{self.study}' was deleted; restore it "
                                f"(mlflow experiments restore) or choose another --study")
        return found

    def record(self) -> StudyRecord | None:
        """The study as its experiment records it (None before the first search)."""
        return _study_record(self.client.get_experiment(self.experiment_id)) if self.experiment_id else None

    def _create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.study)  # another worker may have just created it
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.study,
                                                 artifact_location=files.default_artifact_location(self.uri))
        except MlflowException:  # a worker on another host won the race (a server serialises, we cannot lock)
            found = self.client.get_experiment_by_name(self.study)
            if found is None:
                raise
            return found.experiment_id

    def check_study(self, study: StudyRecord, space_signature: dict | None = None) -> None:
        """Refuse to add a search to a study recorded with another engine, dataset, objective or space."""
        tags = self.experiment.tags if self.experiment else {}
        for key, value in _identity(study).items():
            if key in tags and tags[key] != value:
                raise UsageError(f"study '{self.study}' was recorded with {key.replace('_', ' ')} {tags[key]}, "
                                 f"but this search has {value}; resume it with the same settings or choose "
                                 f"another --study")
        if space_signature is not None and SPACE_TAG in tags:
            changes = signature_changes(json.loads(tags[SPACE_TAG]), space_signature)
            if changes:
                raise UsageError(f"study '{self.study}' was run with another search space ({'; '.join(changes)}); "
                                 f"resume it with the same space or choose another --study")

    def open_search(self, study: StudyRecord, *, space_signature: dict, settings: dict, space_text: str,
                    lineage: dict | None = None, budget: dict | None = None, shared: bool = False) -> bool:
        """Attach to the study's running sweep run (one parent per sweep, however many workers on however
        many hosts), or start one with the sweep's `settings` and the space it sweeps; the experiment records
        what the study is (engine, data, objective, space; `lineage`: where it came from, e.g. refines). Call it
        under the study's lock so that workers starting together make one parent. `budget`: recorded for the
        workers of a shared study; `shared`: the run belongs to no process (`sweeper study create`). Returns
        whether it joined a running one."""
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        lineage = lineage or {}
        experiment_tags = {**_identity(study), "task": study.task, "target": study.target or "",
                           "impute": study.impute or "", SPACE_TAG: json.dumps(space_signature), **lineage}
        if budget:
            experiment_tags[BUDGET_TAG] = json.dumps(budget)
        with files.store_lock(self.uri):  # MLflow's tag upsert races between processes on SQLite
            self.experiment_id = self.experiment_id or self._create_experiment()
            for key, value in experiment_tags.items():
                _retry_once(self.client.set_experiment_tag, self.experiment_id, key, str(value))
        self.base_tags = {**_base_tags(study), **lineage}
        current = running_sweep(self.client, self.client.get_experiment(self.experiment_id))
        if current is not None:
            self.parent_id, self.joined = current, True
            return True
        owner = {"worker": "", "created_by": this_worker(), "shared": "true"} if shared else {}
        run_name = time.strftime("search-%Y%m%d-%H%M%S")
        run = self.client.create_run(self.experiment_id, tags={
            **self.base_tags, **owner, MLFLOW_RUN_NAME: run_name, "run_kind": "search",
            SETTINGS_TAG: json.dumps(settings)})
        self.parent_id = run.info.run_id
        self._log_params(self.parent_id, settings)
        self.client.log_text(self.parent_id, space_text, SPACE_ARTIFACT)  # for `refine`, wherever the file has gone
        _retry_once(self.client.set_experiment_tag, self.experiment_id, SWEEP_TAG, self.parent_id)
        return False

    def join_search(self, parent_id: str, study: StudyRecord) -> None:
        """Record trials under a search run that another process started (a `--jobs` worker)."""
        self.parent_id = parent_id
        self.experiment_id = self.client.get_run(parent_id).info.experiment_id
        self.base_tags = _base_tags(study)

    def log_probe(self, kind: str, *, params: dict, metrics: dict, series: dict[str, list[float]],
                  artifact: Path) -> str:
        """A finished run of its own (`run_kind` = kind, e.g. lr-find) in the study's experiment: params,
        metrics, per-step series (step = index) and one file."""
        from mlflow.entities import Metric
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        with files.store_lock(self.uri):
            self.experiment_id = self.experiment_id or self._create_experiment()
        run_name = time.strftime(f"{kind}-%Y%m%d-%H%M%S")
        run_id = self.client.create_run(self.experiment_id, tags={"run_kind": kind, "worker": this_worker(),
                                                                  MLFLOW_RUN_NAME: run_name}).info.run_id
        self._log_params(run_id, params)
        now = int(time.time() * 1000)
        points = [Metric(name, float(v), now, step) for name, values in series.items() for step, v in enumerate(values)]
        points += [Metric(name, float(v), now, 0) for name, v in metrics.items()]
        for i in range(0, len(points), 1000):
            self.client.log_batch(run_id, metrics=points[i:i + 1000])
        self.client.log_artifact(run_id, str(artifact))
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def trial_run_count(self) -> int:
        """How many trial runs MLflow holds for the study."""
        if self.experiment_id is None:
            return 0
        return len(self.client.search_runs([self.experiment_id], "tags.run_kind = 'trial'", max_results=50_000))

    def last_search(self) -> SearchRecord | None:
        """The study's latest sweep run (None before the first)."""
        record = self.record()
        return self.store.latest_search(record) if record else None

    def set_study_aside(self) -> str:
        """Rename the study's experiment to STUDY-set-aside-TIMESTAMP and delete it (restorable with `mlflow
        experiments restore`), so that the study starts afresh under its name; returns the new name."""
        aside = f"{self.study}-set-aside-{time.strftime('%Y%m%d-%H%M%S')}"
        with files.store_lock(self.uri):
            self.client.rename_experiment(self.experiment_id, aside)
            self.client.delete_experiment(self.experiment_id)
        logger.warning(f"set the MLflow runs of study '{self.study}' aside: experiment '{aside}' (deleted; "
                       f"`mlflow experiments restore` brings it back)")
        self.experiment, self.experiment_id = None, None
        return aside

    def claim_finish(self) -> bool:
        """Whether this process is the one to evaluate, register and end the sweep run (call under the
        study's lock, once no trial of the study runs): the first worker to ask is."""
        if "finished_by" in self.client.get_run(self.parent_id).data.tags:
            return False
        self.client.set_tag(self.parent_id, "finished_by", this_worker())
        return True

    def _log_params(self, run_id, params):
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def start_trial(self, number: int, params: dict, tags: dict | None = None) -> TrialRun:
        """A child run for one trial, RUNNING until `TrialRun.end` records its outcome."""
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

        tags = {**self.base_tags, **{k: str(v) for k, v in (tags or {}).items()}, MLFLOW_PARENT_RUN_ID: self.parent_id,
                MLFLOW_RUN_NAME: f"trial-{number:03d}",
                "trial_number": str(number), "state": "running", "run_kind": "trial"}
        with deferred():
            run_id = self.client.create_run(self.experiment_id, tags=tags).info.run_id
            self._log_params(run_id, params)
        return TrialRun(self.client, run_id)

    def reap_dead_runs(self) -> int:
        """End the RUNNING runs of this study whose worker process died (MLflow never does): a trial as
        FAILED; a search as KILLED, unless live workers still run trials under it. Returns how many."""
        if self.experiment_id is None:
            return 0
        running = self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
        trials = [run for run in running if run.data.tags.get("run_kind") == "trial"]
        dead_trials = [run for run in trials if is_dead(run.data.tags.get("worker"))]
        for run in dead_trials:
            _end_trial(self.client, run.info.run_id, "failed", f"its worker process ({run.data.tags['worker']}) died")
        ended = {run.info.run_id for run in dead_trials}
        in_use = {run.data.tags.get(PARENT_TAG) for run in trials if run.info.run_id not in ended}
        dead_searches = [run for run in running if run.data.tags.get("run_kind") == "search"
                         and is_dead(run.data.tags.get("worker")) and run.info.run_id not in in_use]
        for run in dead_searches:
            self.client.set_tag(run.info.run_id, "state_reason", f"its worker process ({run.data.tags['worker']}) died")
            self.client.set_terminated(run.info.run_id, "KILLED")
            self._fail_pending_models(run.info.run_id)
        return len(dead_trials) + len(dead_searches)

    def _fail_pending_models(self, run_id: str) -> None:
        """A model whose logging a kill cut short stays PENDING in MLflow: mark it FAILED."""
        from mlflow.entities import LoggedModelStatus

        for model in self.client.search_logged_models([self.experiment_id], f"source_run_id = '{run_id}'"):
            if model.status == LoggedModelStatus.PENDING:
                self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)

    def end_trial_runs(self, numbers: Iterable[int], note: str) -> None:
        """End as FAILED the MLflow runs of these trials, failed in the study because their worker went silent
        (on any host), and as KILLED that worker's search run. A run its worker had ended as complete or
        pruned is failed too: the worker went silent before it told the study, which retries the trial."""
        for number in numbers if self.experiment_id else ():
            query = f"tags.run_kind = 'trial' and tags.trial_number = '{number}'"
            for run in self.client.search_runs([self.experiment_id], query):
                if run.info.status not in ("RUNNING", "FINISHED"):  # failed, or abandoned by its woken worker
                    continue
                reason = note if run.info.status == "RUNNING" else \
                    f"{note}, after this run ended {run.data.tags.get('state')} and before the study recorded it"
                _end_trial(self.client, run.info.run_id, "failed", reason)
                self._end_silent_search(run, note)

    def _end_silent_search(self, trial_run, note: str) -> None:
        search_id = trial_run.data.tags.get(PARENT_TAG, "")
        if search_id == self.parent_id:  # the sweep run this process works under: the silent worker joined it
            return
        search = self.client.get_run(search_id)
        if search.info.status == "RUNNING" and search.data.tags.get("worker") == trial_run.data.tags.get("worker"):
            self.client.set_tag(search.info.run_id, "state_reason", note)
            self.client.set_terminated(search.info.run_id, "KILLED")

    def end_search(self, status: str, *, metrics: dict | None = None, tags: dict | None = None) -> None:
        if metrics:
            log_metrics(self.client, self.parent_id, metrics)
        for key, value in (tags or {}).items():
            self.client.set_tag(self.parent_id, key, str(value))
        self.client.set_terminated(self.parent_id, status)

    def log_final_model(self, model: Any, refit_epochs: int, trial_run_id: str, ensemble_of: str | None = None,
                        refit_seeds: str | None = None, shifted: bool = False) -> None:
        """Keep the final model (the refit one, or an average: of trials, `ensemble_of` their numbers, best first,
        or of retrainings, `refit_seeds` their seeds; `shifted`: with test-time shifts) on the parent run as a
        `.keras` file too (what `sweeper export` writes)."""
        log_keras(self.client, self.parent_id, model, FINAL_MODEL_ARTIFACT)
        self.client.set_tag(self.parent_id, "refit_epochs", str(refit_epochs))
        for tag, value in (("ensemble_of", ensemble_of), ("refit_seeds", refit_seeds),
                           ("test_time_shifts", "on" if shifted else None)):
            if value:
                self.client.set_tag(self.parent_id, tag, value)
        self.client.set_tag(self.parent_id, "refit_of", trial_run_id)

    def log_best_model(self, model: Any, example: Any, *, registered_from: str,
                       metadata: dict | None = None) -> str | None:
        """Log the model on the parent run as an MLflow model and register it under the study's name.

        A new registry version is made only when the study's best trial changed since the last one;
        the alias `champion` points at the version holding the study's best model. Returns that version.
        """
        import mlflow
        from mlflow.models import infer_signature

        from sweeper.ml.formats import save_keras
        from sweeper.ml.model import outputs_like

        signature = infer_signature(example, outputs_like(model, example))
        with tempfile.TemporaryDirectory() as tmp, files.fluent(self.uri), \
                mlflow.start_run(run_id=self.parent_id, experiment_id=self.experiment_id):
            saved = Path(tmp) / "model.keras"
            save_keras(model, saved)
            info = mlflow.models.Model.log(artifact_path=None, name="model", flavor=_PyfuncUnchecked,
                                           validate_serving_input=False,
                                           python_model=str(Path(__file__).with_name("mlflow_model.py")),
                                           artifacts={"keras_model": str(saved)}, signature=signature,
                                           input_example=example, pip_requirements=_requirements(),
                                           metadata={"sweeper": metadata or {}})
        with files.store_lock(self.uri), files.fluent(self.uri):  # workers ending together register one version;
            return self._register(info, registered_from)  # a models:/ source resolves in this store

    def _register(self, info, trial_run_id) -> str:
        from mlflow.exceptions import MlflowException

        client = self.client
        try:
            client.get_registered_model(self.study)
        except MlflowException:
            try:
                client.create_registered_model(self.study,
                                               description=f"Best model of the sweeper study '{self.study}'")
            except MlflowException:  # a worker on another host created it meanwhile
                client.get_registered_model(self.study)
        # One version per best trial: a sweep killed between making the version and moving the alias left one.
        versions = [v for v in client.search_model_versions(f"name = '{self.study}'")
                    if v.tags.get("trial_run_id") == trial_run_id]
        version = versions[0].version if versions else client.create_model_version(
            self.study, info.model_uri, run_id=self.parent_id, tags={"trial_run_id": trial_run_id},
            model_id=info.model_id).version
        client.set_registered_model_alias(self.study, CHAMPION, version)
        return version


def _identity(study: StudyRecord) -> dict:
    """What a study is, as its experiment's tags say it: a resumed or joined search must match it."""
    return {"backend": study.backend, "dataset": study.dataset, "objective_metric": study.metric,
            "objective_direction": study.direction, "objective_cost": study.cost_metric}


def _retry_once(call, *args):
    """Some MLflow writes are upserts that race between hosts writing the same key; the second try finds
    the row the other host made."""
    from mlflow.exceptions import MlflowException

    try:
        call(*args)
    except MlflowException:
        time.sleep(0.5)
        call(*args)


class _PyfuncUnchecked:
    """MLflow's pyfunc flavor for `Model.log` (what `pyfunc.log_model` calls) without MLflow's check that the input
    example serves, which `pyfunc.log_model` cannot turn off (its `save_model` refuses `Model.log`'s
    `validate_serving_input`): the check loads the model just saved and predicts the example in this process, about
    2 s of a sweep's finish for an average of four models on JAX (its compiles; bench/RESULTS.md), and only warns
    when it fails. `mlflow models predict` on the champion is tested instead (tests/test_export.py)."""

    __name__ = "mlflow.pyfunc"

    @staticmethod
    def save_model(*, validate_serving_input: bool = True, **kwargs) -> None:
        import mlflow.pyfunc

        mlflow.pyfunc.save_model(**kwargs)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"keras=={version('keras')}", f"tensorflow=={version('tensorflow-cpu')}"]
