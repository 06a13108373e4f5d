"""`sweeper.search` and `sweeper.load`: the sweep of `sweeper search`, called from Python."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweeper.api.sweep import Sweep
from sweeper.domain.errors import UsageError
from sweeper.domain.space import SearchSpace


def search(data: Any, *, target: str | None = None, task: str | None = None, class_names: list | None = None,
           validation: tuple | None = None, test: tuple | None = None, impute: str | None = None,
           space: str | Path | dict | SearchSpace | None = None, study: str | None = None,
           trials: int | None = None, timeout: float | str | None = None, max_epochs: int | None = None,
           patience: int | None = None, subset: int | None = None, backend: str = "optuna",
           algorithm: str | None = None, pruner: str | None = None, jobs: int = 1, storage: str | None = None,
           tracking_uri: str | None = None, seed: int = 0, build: Callable | str | None = None,
           max_failures: int = 3, refit: bool = True, ensemble: int | None = None,
           test_time_shifts: bool | None = None, grace_period: int = 60,
           start_over: bool = False, cluster: str | None = None, progress: bool = True) -> Sweep:
    """Sweep a search space over `data` and record every trial in MLflow, as `sweeper search` does: the same
    defaults, checks, resume (the same study name goes on where it stopped), MLflow layout and final model
    (retrained on training + validation data, evaluated on the test split, registered).

    `data`: a dataset name ("fashion", "digits", "csv:PATH" with `target`); a pair of NumPy arrays `(x, y)`
    (with `validation=(x, y)` and `test=(x, y)` if you have them, else carved with the same seeded splits as
    every table); or a pandas DataFrame with `target="column"`. The task (classification or regression) is
    inferred unless given, class names default to the labels. Images are scaled to [0, 1], tables standardised
    with the training split's statistics: recorded, so that `predict` and the registered model do the same.
    Data given in memory is kept under ./mlruns/datasets for the study's workers, export and report.

    `space`: a YAML file, a dict in the file's own schema (checked the same way; errors name the key path, e.g.
    params.units.low), a SearchSpace, or None for the dataset's bundled space. `build`: your own model, a function
    `build(params, data_info) -> keras.Model` (or its name, "package.module:function"); the parameters it reads
    are declared in the space like any other, and sweeper compiles the model with the space's optimizer and
    learning rate. `timeout`: seconds, or "30m", "2h". `cluster`: a Dask scheduler's address; the `jobs` workers
    then run as tasks on its cluster, on the study in `storage` and the MLflow server in `tracking_uri`.
    `ensemble`: the final model averages the best this many trials (the best one retrained), as one Keras model
    (None: the space's `ensemble`, else 1). `test_time_shifts`: images; the final model also averages in its outputs
    on the images shifted one pixel each way, when that does not lower the best trial's validation objective (None:
    the space's `test_time_shifts`).
    `progress`: a live display (in a notebook cell, or on the terminal).

    Example:
        >>> import sweeper
        >>> s = sweeper.search("fashion", trials=5, max_epochs=3)
        >>> s = sweeper.search((x, y), trials=10, timeout="15m")
        >>> s = sweeper.search(frame, target="price", space={"objective": "val_loss", "params": {...}})
    """
    from sweeper.domain.wording import parse_duration
    from sweeper.runtime import interrupts
    from sweeper.runtime.setup import configure_process
    from sweeper.usecases.plan import make_plan
    from sweeper.usecases.sweep import run_sweep

    configure_process(optuna=True)  # an entry point: Keras' backend, the libraries' logging quiet
    dataset, target = _dataset(data, target=target, task=task, class_names=class_names, validation=validation,
                               test=test, impute=impute)
    plan = make_plan(dataset, space=_space(space, build), study=study, trials=trials, max_epochs=max_epochs,
                     patience=patience, backend=backend, algorithm=algorithm, pruner=pruner, storage=storage,
                     tracking_uri=tracking_uri, timeout=parse_duration(timeout) if timeout is not None else None,
                     subset=subset, seed=seed, target=target, task=task if dataset.startswith("csv:") else None,
                     impute=impute if dataset.startswith("csv:") else None, max_failures=max_failures, jobs=jobs,
                     refit=refit, ensemble=ensemble, test_time_shifts=test_time_shifts, grace_period=grace_period,
                     start_over=start_over,
                     quiet_workers=True, cluster=cluster)
    listener, notebook = _listener(plan, progress)
    with interrupts.installed(), listener as shown:
        result = run_sweep(plan, shown)
    sweep = Sweep(result, tracking_uri)
    if notebook:
        from IPython.display import HTML, display

        shown.finished()
        display(HTML(sweep._repr_html_()))
    return sweep


def load(study: str, tracking_uri: str | None = None) -> Sweep:
    """A study's latest sweep, read back from the MLflow store (finished, or still running elsewhere).

    Example:
        >>> s = sweeper.load("fashion")
        >>> s.best_params, s.test_metrics
    """
    from sweeper.runtime.setup import configure_process
    from sweeper.usecases.studies import check_study_exists, study_result

    configure_process()
    check_study_exists(tracking_uri, study)
    return Sweep(study_result(study, tracking_uri), tracking_uri)


def load_data(name: str = "fashion") -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """Fashion-MNIST's (or MNIST's) arrays as Keras' `load_data()` gives them, ((x_train, y_train), (x_test,
    y_test)), read from the files sweeper finds (`sweeper datasets` says where), for notebooks that start from
    arrays."""
    from sweeper.ml.data import raw_arrays

    return raw_arrays(name)


def _dataset(data: Any, *, target: str | None, task: str | None, class_names, validation, test,
             impute: str | None) -> tuple[str, str | None]:
    """The dataset's name for the plan (data given in memory is kept, and named by its content) and the target."""
    from sweeper.ml.data import from_arrays, from_frame, keep

    if isinstance(data, str):
        if validation is not None or test is not None or class_names is not None:
            raise UsageError("validation=, test= and class_names= go with arrays; a named dataset has its splits")
        return data, target
    if _is_frame(data):
        if target is None:
            raise UsageError("a DataFrame needs target= naming the column to predict")
        if validation is not None or test is not None:
            raise UsageError("validation= and test= go with arrays; a DataFrame is split with a fixed seed")
        return keep(from_frame(data.copy(), target, task=task, impute=impute)), None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        if target is not None or impute is not None:
            raise UsageError("target= and impute= go with a DataFrame or csv:PATH; arrays give y themselves")
        x, y = data
        return keep(from_arrays(x, y, validation=validation, test=test, task=task, class_names=class_names)), None
    raise UsageError(f"data must be a dataset name, a pair of arrays (x, y) or a pandas DataFrame, but got "
                     f"{type(data).__name__}")


def _is_frame(data: Any) -> bool:
    return type(data).__module__.startswith("pandas") and hasattr(data, "columns")


def _space(space, build) -> SearchSpace | str | Path | None:
    """The space to sweep, read with the model builder's name when one is given (its parameters are allowed)."""
    from sweeper.domain.space import bundled_space_path, load_space, parse_space
    from sweeper.domain.yaml_lines import from_mapping

    builder = _builder_name(build)
    if isinstance(space, SearchSpace):
        if builder and space.model != builder:
            raise UsageError("give the model builder either as build= or in the space, not both")
        return space
    if isinstance(space, dict):
        return parse_space(from_mapping(space), model=builder)
    if space is not None:
        return load_space(space, model=builder)
    return load_space(bundled_space_path("builder"), model=builder) if builder else None


def _builder_name(build) -> str | None:
    """A builder's name for the space: `package.module:function` when worker processes can import it, else a name
    this process keeps (the sweep then runs in this process)."""
    from sweeper.ml.model import importable_name, local_builder

    if build is None or isinstance(build, str):
        return build
    if not callable(build):
        raise UsageError(f"build must be a function build(params, data_info) -> keras.Model, but got "
                         f"{type(build).__name__}")
    return importable_name(build) or local_builder(build)


def _listener(plan, progress: bool):
    """The live display: in a notebook cell, else on the terminal's stderr; none when `progress` is False."""
    import contextlib

    from sweeper.domain.events import SweepListener
    from sweeper.present.notebook import NotebookProgress, in_notebook

    objective = plan.space.objective
    if not progress:
        return contextlib.nullcontext(SweepListener()), False
    if in_notebook():
        return contextlib.nullcontext(NotebookProgress(plan.study, objective.metric, objective.direction,
                                                       plan.space.max_epochs)), True
    from rich.console import Console

    from sweeper.present.console import LiveProgress

    return LiveProgress(Console(stderr=True, soft_wrap=True), objective.metric, objective.direction,
                        plan.space.max_epochs, budget=plan.timeout), False
