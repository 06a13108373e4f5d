"""The plan of a sweep: every setting resolved once (the space file < the study's recorded budget < what the caller
gave), every engine rule checked once (which algorithm and pruner go with which engine, two objectives, the grid,
--jobs, --target), into one frozen object from which the engine's options and the recorded settings derive."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from sweeper.domain.choices import ENGINES
from sweeper.domain.errors import OptionError, StoreError, TrackingError, UsageError
from sweeper.domain.names import check_study_name, safe_study_name
from sweeper.domain.records import StudyRecord
from sweeper.domain.space import MAX_ENSEMBLE, SearchSpace, bundled_space_path, load_space
from sweeper.domain.urls import mask
from sweeper.engines import EngineOptions
from sweeper.ml.data import Dataset
from sweeper.runtime.setup import prefer_keras_backend

#: what an objective may be, by the dataset's task
TASK_METRICS = {"classification": ("val_accuracy", "val_loss"), "regression": ("val_loss", "val_mae", "val_rmse")}


@dataclass(frozen=True)
class SweepPlan:
    """One sweep, every setting resolved: what `run_sweep` runs and every worker process receives."""

    dataset: str
    space: SearchSpace  # its budget (trials, max_epochs, patience) resolved
    study: str
    backend: str
    algorithm: str
    pruner: str
    task: str  # the dataset's: classification or regression
    storage: str | None = None
    tracking_uri: str | None = None
    timeout: float | None = None
    subset: int | None = None
    seed: int = 0
    target: str | None = None
    impute: str | None = None  # csv:PATH: "mean" fills missing feature values (else they are refused)
    max_failures: int = 3
    jobs: int = 1
    refit: bool = True  # retrain the best configuration on train + val before the final test
    grace_period: int = 60  # RDB storages: seconds without a heartbeat before a trial counts as dead
    warm_start: tuple = ()  # (params, objective) added to a new study as complete trials (sweeper refine)
    lineage: dict = field(default_factory=dict)  # tags saying where the study came from, e.g. refines
    start_over: bool = False  # drop what is left of a study whose engine storage or MLflow runs are gone
    quiet_workers: bool = False  # worker processes quiet the libraries' logging, as their parent did
    cluster: str | None = None  # a Dask scheduler's address: the workers run as tasks on its cluster

    def engine_options(self, worker: int = 0) -> EngineOptions:
        """What the engine is given: the one place it is derived from the plan."""
        return EngineOptions(self.study, self.space, self.algorithm, self.pruner, self.storage, self.seed,
                             worker=worker, grace_period=self.grace_period, warm_start=self.warm_start)

    def load_data(self) -> Dataset:
        """The data the sweep trains on (loaded once per process)."""
        from sweeper.ml.data import load_dataset

        return load_dataset(self.dataset, self.target, self.task, self.impute).subset(self.subset)

    def settings(self) -> dict:
        """The sweep's settings as its MLflow run records them (one JSON document, read back by one decoder)."""
        space = self.space
        return {"backend": self.backend, "algorithm": self.algorithm, "pruner": self.pruner, "trials": space.trials,
                "max_epochs": space.max_epochs, "patience": space.patience,
                "objective": f"{space.objective.direction} {space.objective.metric}", "seed": self.seed,
                "subset": self.subset, "timeout_s": self.timeout, "space_file": space.source,
                "storage": mask(self.storage) or "embedded", "max_failures": self.max_failures,
                "warm_start_trials": len(self.warm_start), "ensemble": space.ensemble,
                "test_time_shifts": space.test_time_shifts}

    def study_record(self) -> StudyRecord:
        """What the study is (engine, data, objective): what its experiment records and a resume must match."""
        space = self.space
        return StudyRecord(self.study, "", self.backend, self.dataset, space.objective.metric,
                           space.objective.direction, cost_metric=space.cost.metric if space.cost else "",
                           task=self.task, target=self.target, impute=self.impute)

    def budget(self) -> dict:
        space = self.space
        return {"trials": space.trials, "max_epochs": space.max_epochs, "patience": space.patience}


def default_study_name(dataset: str, backend: str = "optuna") -> str:
    """`fashion` for Optuna, the default engine; `fashion-keras-tuner` for another engine's study."""
    if dataset.startswith("csv:"):
        name = safe_study_name(f"csv-{Path(dataset[4:]).stem}")
    elif dataset.startswith("data:"):
        name = f"data-{dataset[5:13]}"  # data given in memory: named by its content
    else:
        name = dataset
    return name if backend == "optuna" else f"{name}-{backend}"


def make_plan(dataset: str, *, space: SearchSpace | str | Path | None = None, study: str | None = None,
              trials: int | None = None, max_epochs: int | None = None, patience: int | None = None,
              backend: str = "optuna", algorithm: str | None = None, pruner: str | None = None,
              storage: str | None = None, tracking_uri: str | None = None, timeout: float | None = None,
              subset: int | None = None, seed: int = 0, target: str | None = None, task: str | None = None,
              impute: str | None = None, max_failures: int = 3, jobs: int = 1, refit: bool = True,
              ensemble: int | None = None, test_time_shifts: bool | None = None, grace_period: int = 60,
              warm_start: tuple = (), lineage: dict | None = None,
              start_over: bool = False, quiet_workers: bool = False, recorded_budget: bool = True,
              cluster: str | None = None) -> SweepPlan:
    """Check and resolve a sweep's settings, cheapest checks first (no store is written; the data and the store
    are read only to check them). `space`: a file, a SearchSpace, or None for DATASET's bundled one.
    `recorded_budget`: take the budget `sweeper study create` recorded for the study (what the caller gave wins)."""
    from sweeper.ml.data import check_name, dataset_task, has_shiftable_images

    check_name(dataset)
    if study is not None:
        check_study_name(study)
    algorithm, pruner = _check_engine(backend, algorithm, pruner)
    _check_dataset_options(dataset, target, impute)
    _check_ensemble(ensemble)
    given = {k: v for k, v in dict(trials=trials, max_epochs=max_epochs, patience=patience).items() if v is not None}
    space = _space(dataset, space).with_budget(**given, ensemble=ensemble, test_time_shifts=test_time_shifts)
    if space.test_time_shifts and not has_shiftable_images(dataset):
        raise UsageError(f"test-time shifts move images a pixel each way, but the examples of {dataset} are not "
                         f"images of 3 x 3 pixels or more; turn them off (--no-test-time-shifts, or "
                         f"test_time_shifts: false in the space)")
    if space.cost and space.ensemble > 1:
        raise UsageError(f"--ensemble {space.ensemble} averages the best trials of one objective; with two "
                         f"objectives the final model is one trial of the Pareto front")
    if space.cost:
        pruner = "none"  # Optuna prunes single-objective studies only
        if backend != "optuna":
            raise UsageError(f"two objectives need the optuna backend; {backend} optimises one")
        if algorithm in ("cmaes", "grid"):
            raise UsageError(f"the {algorithm} algorithm takes one objective; for two use tpe (default) or nsga2")
    if algorithm == "grid":
        space.grid()  # refuse an ungriddable space before any work starts
    if jobs > 1 and backend != "optuna":
        raise UsageError(f"--jobs {jobs} needs the optuna backend: a {backend} study serves one process at a time")
    if jobs > 1 and space.model and space.model.startswith("local:"):
        raise UsageError(f"jobs={jobs} needs a model builder that worker processes can import (a function of a "
                         f"module, named module:function); {space.model[6:]} was given in memory")
    if cluster:
        _check_cluster(cluster, backend, storage, tracking_uri, space)
    if backend == "keras-tuner" and storage and "://" in storage:
        raise UsageError(f"the keras-tuner backend keeps its state in a folder, but --storage is the URL {storage}; "
                         f"give a folder path (default: mlruns/keras-tuner)")
    resolved_task = dataset_task(dataset, target, task, impute)
    study = study or default_study_name(dataset, backend)
    plan = SweepPlan(dataset=dataset, space=space, study=study, backend=backend, algorithm=algorithm, pruner=pruner,
                     task=resolved_task, storage=storage, tracking_uri=tracking_uri, timeout=timeout, subset=subset,
                     seed=seed, target=target, impute=impute, max_failures=max_failures, jobs=jobs, refit=refit,
                     grace_period=grace_period, warm_start=tuple(warm_start), lineage=dict(lineage or {}),
                     start_over=start_over, quiet_workers=quiet_workers, cluster=cluster)
    _check_objective(space, resolved_task, dataset)
    if subset:
        plan.load_data()  # refuses a subset larger than the training split, or missing classes
    if recorded_budget:
        recorded = _recorded_budget(tracking_uri, study)
        if recorded:
            plan = dataclasses.replace(plan, space=space.with_budget(**{**recorded, **given}))
    if space.keras_backend:  # this process and the workers it starts, unless the user chose or Keras runs already
        prefer_keras_backend(space.keras_backend)
    return plan


def _space(dataset: str, space: SearchSpace | str | Path | None) -> SearchSpace:
    from sweeper.ml.data import default_space

    if isinstance(space, SearchSpace):
        return space
    return load_space(space or bundled_space_path(default_space(dataset)))


def _check_engine(backend: str, algorithm: str | None, pruner: str | None) -> tuple[str, str]:
    if backend not in ENGINES:
        raise OptionError("--backend", f"'{backend}' is not an engine; expected one of {', '.join(ENGINES)}")
    algorithms, pruners = ENGINES[backend]
    algorithm, pruner = algorithm or algorithms[0], pruner or pruners[0]
    if algorithm not in algorithms:
        raise OptionError("--algorithm", f"'{algorithm}' is not an algorithm of the {backend} backend; expected one "
                                         f"of {', '.join(algorithms)}")
    if pruner not in pruners:
        raise OptionError("--pruner", f"'{pruner}' is not a pruner of the {backend} backend; expected one of "
                                      f"{', '.join(pruners)}")
    return algorithm, pruner


def _check_cluster(cluster: str, backend: str, storage: str | None, tracking_uri: str | None,
                   space: SearchSpace) -> None:
    """A cluster sweep's workers share one study and one MLflow store: both must be servers every worker reaches."""
    if backend != "optuna":
        raise UsageError(f"--cluster needs the optuna backend: a {backend} study serves one process at a time")
    problems = []
    if not storage or "://" not in storage or storage.startswith("sqlite:"):
        problems.append(f"the study would be {'in ' + storage if storage else 'the embedded journal'}")
    if not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        problems.append(f"MLflow would be {'at ' + mask(tracking_uri) if tracking_uri else 'the embedded SQLite file'}")
    if problems:
        raise UsageError(f"--cluster needs stores that every Dask worker reaches, but {' and '.join(problems)}; pass "
                         f"--storage postgresql+psycopg://USER:PASSWORD@HOST/DB (the study) and --tracking-uri "
                         f"http://HOST:5000 (an MLflow server)")
    if space.model and space.model.startswith("local:"):
        raise UsageError(f"--cluster needs a model builder Dask workers can import (module:function); "
                         f"{space.model[6:]} was given in memory")


def _check_ensemble(ensemble: int | None) -> None:
    if ensemble is not None and not 1 <= ensemble <= MAX_ENSEMBLE:
        raise OptionError("--ensemble", f"must be between 1 and {MAX_ENSEMBLE} trials, but got {ensemble}")


def _check_dataset_options(dataset: str, target: str | None, impute: str | None) -> None:
    if target and not dataset.startswith("csv:"):
        raise UsageError("--target applies to csv:PATH datasets only")
    if impute and not dataset.startswith("csv:"):
        raise UsageError("--impute applies to csv:PATH datasets only")
    if dataset.startswith("csv:") and not target:
        raise UsageError(f"{dataset} needs --target COLUMN naming the column to predict")


def _check_objective(space: SearchSpace, task: str, dataset: str) -> None:
    allowed = TASK_METRICS[task]
    if space.objective.metric not in allowed:
        raise UsageError(f"objective metric {space.objective.metric} does not fit {dataset}, a "
                         f"{task} dataset; expected one of {', '.join(allowed)} in {space.source}")


def _recorded_budget(tracking_uri: str | None, study: str) -> dict:
    """The budget `sweeper study create` recorded for the study ({} without a store yet or such a record)."""
    from sweeper.store import Store

    try:
        store = Store.open(tracking_uri, create=False)
    except (StoreError, TrackingError):  # no store yet, or one to be set aside: nothing recorded
        return {}
    return store.recorded_budget(study)
