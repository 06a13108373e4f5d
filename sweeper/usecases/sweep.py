"""One sweep: search space + dataset + backend + tracking -> SweepResult."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from sweeper.domain.errors import (
    StoreError,
    SweeperError,
    SweepError,
    SweepInterrupted,
    Terminated,
    TrackingError,
    TrialAbandoned,
    TrialFailed,
    TrialPruned,
    UsageError,
    disk_full,
)
from sweeper.domain.names import check_study_name, safe_study_name
from sweeper.domain.space import SearchSpace, Suggester, dump_space
from sweeper.domain.urls import mask
from sweeper.domain.wording import plural
from sweeper.engines import BackendOptions, ShouldPrune, TrialPlan, backend_class, make_backend
from sweeper.ml.data import Dataset, dataset_task, load_dataset
from sweeper.ml.train import evaluate, for_users, model_costs, refit, train_trial
from sweeper.store.tracking import (
    BUDGET_TAG,
    SPACE_ARTIFACT,
    SPACE_TAG,
    BestRun,
    Tracker,
    best_run,
    default_tracking_uri,
    describe_store,
    learning_rates,
    load_run_model,
    pareto_runs,
    trial_runs,
)

_TASK_METRICS = {"classification": ("val_accuracy", "val_loss"), "regression": ("val_loss", "val_mae", "val_rmse")}


@dataclass(frozen=True)
class SweepConfig:
    dataset: str
    space: SearchSpace
    study: str | None = None
    backend: str = "optuna"
    algorithm: str | None = None
    pruner: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    timeout: float | None = None
    subset: int | None = None
    seed: int = 0
    target: str | None = None
    task: str | None = None
    impute: str | None = None  # csv:PATH: "mean" fills missing feature values (else they are refused)
    max_failures: int = 3
    jobs: int = 1
    refit: bool = True  # retrain the best configuration on train + val before the final test
    grace_period: int = 60  # RDB storages: seconds without a heartbeat before a trial counts as dead
    budget: dict = field(default_factory=dict)  # trials, max_epochs, patience given on the command line
    warm_start: tuple = ()  # (params, objective) added to a new study as complete trials (sweeper refine)
    lineage: dict = field(default_factory=dict)  # tags saying where the study came from, e.g. refines
    start_over: bool = False  # drop what is left of a study whose engine storage or MLflow runs are gone

    def __post_init__(self):
        if self.study is not None:
            check_study_name(self.study)

    @property
    def study_name(self) -> str:
        return self.study or default_study_name(self.dataset, self.backend)

    def data_task(self) -> str:
        return dataset_task(self.dataset, self.target, self.task, self.impute)

    def load_data(self) -> Dataset:
        """The data the sweep trains on (loaded once per process)."""
        return load_dataset(self.dataset, self.target, self.task, self.impute).subset(self.subset)


def default_study_name(dataset: str, backend: str = "optuna") -> str:
    """`fashion` for Optuna, the default engine; `fashion-keras-tuner` for another engine's study."""
    name = safe_study_name(f"csv-{Path(dataset[4:]).stem}") if dataset.startswith("csv:") else dataset
    return name if backend == "optuna" else f"{name}-{backend}"


class SweepListener:
    """What a sweep tells whoever watches it (the CLI's live display); every method may be left out."""

    def search_started(self, study: str, trials: int, counts: dict, best: float | None) -> None: ...

    def trials_reaped(self, numbers: list[int]) -> None: ...

    def sweep_joined(self, parent_run_id: str) -> None: ...

    def data_loaded(self, splits: str) -> None: ...

    def trial_started(self, number: int, params: dict) -> None: ...

    def epoch_ended(self, number: int, epoch: int, logs: dict) -> None: ...

    def trial_ended(self, number: int, state: str, value: float | None, note: str = "") -> None: ...

    def refit_started(self, trial_number: int, epochs: int) -> None: ...

    def refit_epoch_ended(self, epoch: int, logs: dict) -> None: ...

    def final_step(self, what: str) -> None:
        """The final model's making moved on to `what`, e.g. "evaluating the final model on the test split"."""


@dataclass
class SweepResult:
    study: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    objective_metric: str
    best: BestRun | None
    test_metrics: dict
    counts: dict
    top: list = field(default_factory=list)  # best complete trial runs (mlflow Run objects)
    model_version: str | None = None
    refit_epochs: int | None = None  # the final model was retrained on train + val for this many epochs
    trial_test_metrics: dict = field(default_factory=dict)  # the best trial's own model, when refit
    finished_elsewhere: bool = False  # another worker of the study is still at work and will finish it
    cost_metric: str | None = None  # the second objective of a two-objective study
    pareto: list = field(default_factory=list)  # its complete trial runs on the Pareto front, cheapest first
    already_complete: bool = False  # the budget was spent and the final model made by an earlier sweep


_REAPED_NOTE = "its worker stopped sending heartbeats (killed, or paused past the grace period)"


class TrialRunner:
    """The objective every backend calls: sample, train, record; failures become TrialFailed."""

    def __init__(self, config: SweepConfig, dataset: Dataset, tracker: Tracker, listener: SweepListener,
                 incumbent, take_reaped=lambda: []):
        self.space, self.config, self.dataset = config.space, config, dataset
        self.tracker, self.listener, self.incumbent = tracker, listener, incumbent
        self.take_reaped = take_reaped  # trials other workers' heartbeats timed out: end their MLflow runs
        self.failures_in_a_row = 0

    def __call__(self, suggester: Suggester, number: int, should_prune: ShouldPrune,
                 plan: TrialPlan = TrialPlan()) -> float:
        self.tracker.reap_dead_runs()
        self.tracker.end_trial_runs(self.take_reaped(), _REAPED_NOTE)
        params = self.space.sample(suggester)
        self.listener.trial_started(number, params)
        try:
            value, cost = self._run(number, params, should_prune, plan)
        except TrialPruned as exc:
            self.failures_in_a_row = 0
            self.listener.trial_ended(number, "pruned", None, str(exc))
            raise
        except TrialAbandoned as exc:  # not this configuration's fault: no count toward --max-failures
            self.listener.trial_ended(number, "failed", None, str(exc))
            raise
        except (TrialFailed, Exception) as exc:  # any error inside a trial fails that trial only...
            full = disk_full(exc, describe_store(self.tracker.uri))
            if full is not None:  # ...but a full disk, which stops the sweep (the trial is rerun on resume)
                raise full from exc
            reason = str(exc) if isinstance(exc, TrialFailed) else f"{type(exc).__name__}: {exc}"
            self.listener.trial_ended(number, "failed", None, reason)
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= self.config.max_failures:
                raise SweepError(f"{self.failures_in_a_row} trials in a row failed, so the sweep stopped "
                                 f"(--max-failures {self.config.max_failures}); the last one: {reason}") from exc
            raise TrialFailed(reason) from exc
        self.failures_in_a_row = 0
        self.listener.trial_ended(number, "complete", value)
        return value if cost is None else (value, cost)

    def _run(self, number, params, should_prune, plan) -> tuple[float, float | None]:
        """Train and record one configuration: its objective and, for two objectives, its cost."""
        import keras

        space, metric = self.space, self.space.objective.metric
        tags = {"continues_trial": plan.continues, "initial_epoch": plan.initial_epoch} if plan.continues is not None \
            else {}

        def prune_hook(epoch, logs):
            if metric in logs and should_prune(epoch, float(logs[metric])):
                raise TrialPruned(f"pruned after epoch {epoch} ({metric}={logs[metric]:.4f})")

        with self.tracker.trial_run(number, params, tags) as record:
            try:
                result = train_trial(
                    params, self.dataset, space.objective, max_epochs=plan.max_epochs or space.max_epochs,
                    patience=space.patience, seed=self.config.seed * 100_003 + number,
                    initial_epoch=plan.initial_epoch, weights_in=plan.weights_in, weights_out=plan.weights_out,
                    epoch_hooks=[record.log_epoch, lambda e, logs: self.listener.epoch_ended(number, e, logs),
                                 prune_hook])
                record.log_result(result)
                costs = model_costs(result.model, self.dataset, latency=space.cost is not None
                                    and space.cost.metric == "latency_ms")
                record.log_metrics(costs)
                # Two objectives: any trial may end on the Pareto front, so every one keeps its model.
                if space.cost or space.objective.better(result.objective, self.incumbent()):
                    record.log_model(result.model)
            except TrialPruned as exc:
                record.log_train_seconds(exc.train_seconds)
                raise
            finally:
                keras.backend.clear_session()
        return result.objective, costs[space.cost.metric] if space.cost else None


def run_sweep(config: SweepConfig, listener: SweepListener | None = None) -> SweepResult:
    """Run (or resume, or join) a study until its budget is spent; the last worker to finish evaluates,
    logs and registers its best model. A full disk anywhere stops it with DiskFull."""
    try:
        return _run_sweep(config, listener or SweepListener())
    except (KeyboardInterrupt, SweeperError):
        raise
    except Exception as exc:
        full = disk_full(exc, describe_store(config.tracking_uri or default_tracking_uri()))
        if full is None:
            raise
        raise full from exc


def check_inputs(config: SweepConfig) -> str:
    """What can be refused before any store is touched (engine, data, subset) -> the dataset's task."""
    if config.jobs > 1 and config.backend != "optuna":
        raise UsageError(f"--jobs {config.jobs} needs the optuna backend: a {config.backend} study serves one "
                         f"process at a time")
    if config.space.cost and config.backend != "optuna":
        raise UsageError(f"two objectives need the optuna backend; {config.backend} optimises one")
    task = config.data_task()
    if config.subset:
        config.load_data()
    return task


def _run_sweep(config: SweepConfig, listener: SweepListener) -> SweepResult:
    task = check_inputs(config)
    tracker = Tracker(config.study_name, config.tracking_uri)
    config = with_recorded_budget(config, tracker)
    space, study = config.space, config.study_name
    _check_against_study(tracker, config, task)
    tracker.reap_dead_runs()
    with _open_backend(config, tracker) as backend:
        done = _stored_result(config, tracker, backend)
        if done is not None:
            return done
        with backend.study_lock():
            _open_search(tracker, config, task)
        reaped = backend.reap()
        tracker.end_trial_runs(backend.take_reaped(), _REAPED_NOTE)
        listener.search_started(study, space.trials, backend.counts(), backend.best_value())
        if tracker.joined:
            listener.sweep_joined(tracker.parent_id)
        if reaped:
            listener.trials_reaped(reaped)
        with _search_ended_on_error(config, tracker, backend):
            if _in_worker_processes(config, backend):
                from sweeper.usecases.pool import run_workers

                run_workers(config, tracker.parent_id, listener)  # this process loads no data nor TensorFlow
            else:
                dataset = _dataset(config)
                listener.data_loaded(dataset.describe_splits())
                runner = TrialRunner(config, dataset, tracker, listener, backend.best_value, backend.take_reaped)
                backend.optimize(runner, trials=space.trials, timeout=config.timeout)
        if not _last_to_finish(tracker, backend):
            result = _result(config, tracker, backend.counts(), _best_or_none(tracker))
            result.finished_elsewhere = True
            return result
        with _search_ended_on_error(config, tracker, backend, finishing=True):
            return _finish(config, _dataset(config), backend, tracker, listener)


def _dataset(config: SweepConfig) -> Dataset:
    """The sweep's data (loaded once per process), with TensorFlow imported quietly for what comes next."""
    from sweeper.ml.quiet import import_tensorflow

    import_tensorflow()
    return config.load_data()


@contextlib.contextmanager
def _search_ended_on_error(config: SweepConfig, tracker: Tracker, backend, finishing: bool = False):
    """An interrupt ends the sweep run KILLED (SweepInterrupted carries what finished); any other error ends it
    FAILED; unless other workers still run trials under it. Never left RUNNING by this process."""
    try:
        yield
    except KeyboardInterrupt as exc:
        counts = backend.counts()
        _stop_search(tracker, backend, "KILLED", counts)
        raise SweepInterrupted(_result(config, tracker, counts, _best_or_none(tracker)),
                               terminated=isinstance(exc, Terminated), finishing=finishing) from None
    except BaseException:
        with contextlib.suppress(Exception):  # a full disk may refuse this write: the next sweep reaps the run
            _stop_search(tracker, backend, "FAILED", backend.counts())
        raise


@contextlib.contextmanager
def _open_backend(config: SweepConfig, tracker: Tracker):
    """The study's engine, once the store is known to be whole: MLflow runs without their engine study, or an
    engine study without its MLflow runs, is refused (before anything is written) unless --start-over says to
    drop the half that is left."""
    options = BackendOptions(config.study_name, config.space, config.algorithm, config.pruner, config.storage,
                             config.seed, grace_period=config.grace_period, warm_start=config.warm_start)
    engine = backend_class(config.backend)
    recorded = tracker.trial_run_count()
    where, study = f"the MLflow store {describe_store(tracker.uri)}", config.study_name
    if recorded and not engine.study_exists(options):
        if not config.start_over:
            raise StoreError(
                f"{engine.describe_storage(options)} holds no study '{study}', but {where} holds "
                f"{plural(recorded, 'trial run')} of it: the study's storage was deleted or moved, or --storage "
                f"points elsewhere, and going on would run its trials again from trial 0 beside the old runs. "
                f"Restore it (or point --storage at it), or add --start-over to set the MLflow runs aside "
                f"(experiment renamed and deleted, restorable) and sweep the study afresh")
        tracker.set_study_aside()
    backend = engine(options)
    try:
        trained = backend.finished_trials()
        if trained and not recorded:
            if not config.start_over:
                raise StoreError(
                    f"{where} holds no run of study '{study}', but {engine.describe_storage(options)} holds "
                    f"{plural(trained, 'finished trial')} of it: the MLflow store was deleted or moved, or --tracking-uri "
                    f"points elsewhere, and going on would record only new trials, without a model for the old "
                    f"ones. Restore it (or point --tracking-uri at it), or add --start-over to delete the "
                    f"engine's study and sweep it afresh")
            backend.delete_study()
            backend.close()
            backend = engine(options)
        yield backend
    finally:
        backend.close()


def _stored_result(config: SweepConfig, tracker: Tracker, backend) -> SweepResult | None:
    """A study whose budget is spent and whose last sweep ended with its best trial's final model: that sweep's
    result as MLflow holds it (running the same command again retrains nothing and opens no new sweep run)."""
    counts = backend.counts()
    if counts["complete"] + counts["pruned"] < config.space.trials or counts["running"]:
        return None
    best = _best_or_none(tracker)
    last = tracker.last_search()
    if best is None or last is None or last.info.status != "FINISHED" or \
            last.data.tags.get("best_run_id") != best.run_id:
        return None
    metrics, tags = last.data.metrics, last.data.tags
    tracker.parent_id = last.info.run_id
    result = _result(config, tracker, counts, best, {k: v for k, v in metrics.items() if k.startswith("test_")},
                     tags.get("model_version"))
    result.trial_test_metrics = {k.removeprefix("trial_"): v for k, v in metrics.items() if k.startswith("trial_test_")}
    result.refit_epochs = int(metrics["refit_epochs"]) if "refit_epochs" in metrics else None
    result.already_complete = True
    return result


@dataclass
class CreatedStudy:
    study: str
    dataset: str
    space: SearchSpace
    storage: str  # masked, as every URL shown
    tracking_uri: str
    parent_run_id: str


def create_study(config: SweepConfig) -> CreatedStudy:
    """Make a study and its sweep run once, for workers on any host to join (`sweeper search --study NAME`):
    N workers then start together without racing to create anything, and take the budget recorded here."""
    if config.backend != "optuna":
        raise UsageError(f"only optuna studies can be shared by workers; a {config.backend} study serves one "
                         f"process at a time")
    study = config.study_name
    task = config.data_task()
    tracker = Tracker(study, config.tracking_uri)
    _check_against_study(tracker, config, task)
    options = BackendOptions(study, config.space, storage=config.storage, grace_period=config.grace_period)
    with make_backend(config.backend, options) as backend, backend.study_lock():
        if not backend.is_new:
            raise UsageError(f"study '{study}' already exists in {mask(config.storage) or 'the embedded store'} "
                             f"({sum(backend.counts().values())} trials); workers join it with: sweeper search "
                             f"{config.dataset} --study {study}")
        _open_search(tracker, config, task, shared=True)
    return CreatedStudy(study, config.dataset, config.space, mask(config.storage) or "the embedded store",
                        mask(tracker.uri), tracker.parent_id)


def with_recorded_budget(config: SweepConfig, tracker: Tracker | None = None) -> SweepConfig:
    """A worker joining a study made by `sweeper study create` takes its budget, unless given one."""
    tracker = tracker or Tracker(config.study_name, config.tracking_uri)
    recorded = tracker.recorded_budget()
    if not recorded:
        return config
    return replace(config, space=config.space.with_budget(**{**recorded, **config.budget}))


def _stop_search(tracker: Tracker, backend, status: str, counts: dict) -> None:
    """End the sweep run on an interrupt or a fatal error, unless other workers still run trials under it."""
    if tracker.joined and backend.running_elsewhere():
        return
    tracker.end_search(status, metrics=_count_metrics(counts))


def _last_to_finish(tracker: Tracker, backend) -> bool:
    """Whether this worker evaluates, registers and ends the sweep: no trial runs anywhere, and no other
    worker has claimed it (decided under the study's lock, so exactly one worker does)."""
    backend.reap()
    tracker.end_trial_runs(backend.take_reaped(), _REAPED_NOTE)
    with backend.study_lock():
        return not backend.running_elsewhere() and tracker.claim_finish()


def _in_worker_processes(config: SweepConfig, backend) -> bool:
    """`--jobs N`, or a sweep long enough that one process would grow (TensorFlow keeps memory per model)."""
    from sweeper.usecases.pool import RECYCLE_AFTER

    counts = backend.counts()
    remaining = config.space.trials - counts["complete"] - counts["pruned"]
    return config.jobs > 1 or (config.backend == "optuna" and remaining > RECYCLE_AFTER)


def _open_search(tracker: Tracker, config: SweepConfig, task: str, shared: bool = False) -> bool:
    space = config.space
    experiment_tags = {"backend": config.backend, "dataset": config.dataset, "task": task,
                       "target": config.target or "", "impute": config.impute or "", "objective_metric": space.objective.metric,
                       "objective_direction": space.objective.direction, SPACE_TAG: json.dumps(space.signature()),
                       "objective_cost": space.cost.metric if space.cost else ""}
    if shared:
        budget = {"trials": space.trials, "max_epochs": space.max_epochs, "patience": space.patience}
        experiment_tags[BUDGET_TAG] = json.dumps(budget)
    joined = tracker.open_search(params=_search_params(config), experiment_tags={**experiment_tags, **config.lineage},
                                 shared=shared, tags={"backend": config.backend, "dataset": config.dataset,
                                                      **config.lineage})
    if not joined:  # the space itself, for `sweeper refine` to narrow later wherever the file has gone
        text = Path(space.source).read_text(encoding="utf-8") if space.source else dump_space(space)
        tracker.client.log_text(tracker.parent_id, text, SPACE_ARTIFACT)
    return joined


def _finish(config, dataset, backend, tracker, listener) -> SweepResult:
    counts = backend.counts()
    metrics, tags, version, test, trial_test, final = _count_metrics(counts), {}, None, {}, {}, None
    best = _best_or_none(tracker)
    if best is not None:
        listener.final_step(f"evaluating trial {best.trial_number}'s model on the test split")
        model = load_run_model(tracker.client, best.run_id)
        test = evaluate(model, dataset)
        final = _refit_best(config, dataset, tracker, best, model, listener)
        if final is not None:
            listener.final_step("evaluating the final model on the test split")
            model, trial_test, test = for_users(final.model), test, evaluate(final.model, dataset)
            metrics.update({f"trial_{k}": v for k, v in trial_test.items()}, refit_epochs=final.epochs,
                           refit_seconds=final.seconds)
            listener.final_step("saving the final model in MLflow")
            tracker.log_final_model(model, final.epochs, best.run_id)
        model = for_users(model)  # saved with Keras' default execution options
        listener.final_step(f"logging and registering models:/{tracker.study}@champion")
        version = tracker.log_best_model(model, dataset.x_test[:5], registered_from=best.run_id,
                                         metadata=dataset.metadata())
        metrics.update(test, **{f"best_{config.space.objective.metric}": best.objective})
        tags = {"best_trial_number": best.trial_number, "best_run_id": best.run_id, "model_version": version}
    tracker.end_search("FINISHED", metrics=metrics, tags=tags)
    result = _result(config, tracker, counts, best, test, version)
    result.refit_epochs, result.trial_test_metrics = final and final.epochs, trial_test
    return result


@dataclass
class _Refit:
    model: object  # keras.Model
    epochs: int
    seconds: float


def _refit_best(config, dataset, tracker, best: BestRun, trial_model, listener) -> _Refit | None:
    """The best configuration retrained on train + val for its trial's best epoch count (None: --no-refit)."""
    epochs = int(best.metrics.get("best_epoch", 0))
    if not config.refit or epochs < 1:
        return None
    listener.refit_started(best.trial_number, epochs)
    started = time.perf_counter()
    model = refit(trial_model, dataset, epochs=epochs, batch_size=int(best.params.get("batch_size", 32)),
                  learning_rates=learning_rates(tracker.client, best.run_id), seed=config.seed,
                  epoch_hooks=[listener.refit_epoch_ended])
    return _Refit(model, epochs, time.perf_counter() - started)


def _best_or_none(tracker) -> BestRun | None:
    try:
        return best_run(tracker.client, tracker.study)
    except TrackingError:
        return None  # no trial completed: nothing to evaluate or register


def _result(config, tracker, counts, best, test=None, version=None) -> SweepResult:
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    cost = config.space.cost
    return SweepResult(tracker.study, tracker.uri, tracker.experiment_id, tracker.parent_id,
                       config.space.objective.metric, best, test or {}, counts,
                       trial_runs(tracker.client, experiment, state="complete", limit=5), version,
                       cost_metric=cost.metric if cost else None,
                       pareto=pareto_runs(tracker.client, experiment, cost.metric) if cost else [])


def _check_against_study(tracker: Tracker, config: SweepConfig, task: str) -> None:
    """The objective fits the dataset, and engine, dataset, objectives and space match what MLflow holds."""
    space = config.space
    _check_objective(space, task, config.dataset)
    tracker.check_study(space.signature(), backend=config.backend, dataset=config.dataset,
                        objective_metric=space.objective.metric, objective_direction=space.objective.direction,
                        objective_cost=space.cost.metric if space.cost else "")


def _check_objective(space: SearchSpace, task: str, dataset: str) -> None:
    allowed = _TASK_METRICS[task]
    if space.objective.metric not in allowed:
        raise UsageError(f"objective metric {space.objective.metric} does not fit {dataset}, a "
                         f"{task} dataset; expected one of {', '.join(allowed)} in {space.source}")


def _count_metrics(counts: dict) -> dict:
    return {f"trials_{state}": n for state, n in counts.items()}


def _search_params(config: SweepConfig) -> dict:
    space = config.space
    return {"backend": config.backend, "algorithm": config.algorithm, "pruner": config.pruner,
            "trials": space.trials, "max_epochs": space.max_epochs, "patience": space.patience,
            "objective": f"{space.objective.direction} {space.objective.metric}", "seed": config.seed,
            "subset": config.subset, "timeout_s": config.timeout, "space_file": space.source,
            "storage": mask(config.storage) or "embedded", "max_failures": config.max_failures,
            "warm_start_trials": len(config.warm_start)}


