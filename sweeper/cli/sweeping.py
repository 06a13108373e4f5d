"""The commands that train: search, study create, refine, lr-find."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sweeper.cli.options import (
    DatasetName,
    Duration,
    StudyName,
    csv_options,
    grace_option,
    keras_backend_option,
    space_options,
    storage_option,
    tracking_option,
)
from sweeper.cli.speak import check_study, command_name, error_console, print_summary, reports_errors
from sweeper.domain.choices import ENGINES
from sweeper.domain.wording import plural
from sweeper.present.console import banner


@click.command()
@click.argument("dataset", type=DatasetName())
@space_options
@click.option("--study", type=StudyName(), metavar="NAME",
              help="Study name; the same name resumes it, or joins it while other workers run it (default: the "
                   "dataset's name, plus -keras-tuner for that backend).")
@click.option("--timeout", type=Duration(), metavar="DURATION",
              help="The whole sweep's time, final model included, e.g. 15m or 2h: a trial starts only "
                   "while it and the final model fit.")
@click.option("--subset", type=click.IntRange(min=1), metavar="N",
              help="Train on only N training examples (quick looks).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampler and of every trial.")
@click.option("--backend", type=click.Choice(list(ENGINES)), default="optuna", show_default=True,
              help="Search engine: Optuna or Keras Tuner.")
@click.option("--algorithm", metavar="NAME", help="optuna: tpe (default), random, grid, cmaes, nsga2 (two objectives); "
                                                  "keras-tuner: random (default), bayesian, hyperband.")
@click.option("--pruner", metavar="NAME", help="optuna: median (default), hyperband, none; keras-tuner: none.")
@storage_option
@tracking_option
@keras_backend_option
@csv_options
@click.option("--max-failures", type=click.IntRange(min=1), default=3, show_default=True,
              help="Stop after this many failed trials in a row.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Worker processes sharing the study (optuna); the budget counts across them.")
@grace_option
@click.option("--refit/--no-refit", default=True, show_default=True,
              help="Retrain the best configuration on training + validation data for its best epoch count "
                   "before the final test; that model is the one registered.")
@click.option("--ensemble", type=int, metavar="K",
              help="The final model averages the predictions of up to K models, as one Keras model that exports, "
                   "registers and predicts as a single one does: K retrainings of a best trial still improving as "
                   "its cosine schedule ended (from K seeds), else the best K trials (the best one retrained) "
                   "(default: the space file's `ensemble`, else 1).")
@click.option("--test-time-shifts/--no-test-time-shifts", default=None,
              help="Images: the final model also averages in its outputs on the images shifted one pixel each way "
                   "(a third of its output; five predictions per image), when that does not lower the best trial's "
                   "validation objective (default: the space file's `test_time_shifts`; fashion.yaml: on).")
@click.option("--start-over", is_flag=True, help="When the study's MLflow runs or its engine storage are gone, "
                                                 "drop the half that is left and sweep the study afresh.")
@click.option("--cluster", metavar="ADDRESS", envvar="SWEEPER_CLUSTER",
              help="Run the --jobs workers as tasks on this Dask cluster (tcp://HOST:8786; or $SWEEPER_CLUSTER), on "
                   "the study in --storage and the MLflow server in --tracking-uri.")
@reports_errors
def search(dataset, space_file, study, trials, timeout, max_epochs, patience, subset, seed, backend, algorithm,
           pruner, storage, tracking_uri, target, task, impute, max_failures, jobs, grace_period, refit,
           ensemble, test_time_shifts, start_over, cluster):
    """Sweep DATASET's search space and record every trial in MLflow.

    DATASET is fashion, mnist, digits, california or csv:PATH (with --target COLUMN).
    Running the same command again resumes the study: finished trials count toward --trials.

    \b
    Example:
      sweeper search fashion --trials 20 --max-epochs 10
      sweeper search digits --algorithm random --pruner none --trials 20
      sweeper search fashion --backend keras-tuner --algorithm hyperband
      sweeper search fashion --trials 12 --jobs 2
      sweeper search fashion --timeout 15m --ensemble 3
      sweeper search csv:houses.csv --target price --timeout 30m
      sweeper search fashion --study big --cluster tcp://scheduler:8786 --jobs 8 \\
        --storage postgresql+psycopg://... --tracking-uri http://mlflow-host:5000
    """
    from sweeper.usecases.plan import make_plan

    plan = make_plan(dataset, space=space_file, study=study, trials=trials, max_epochs=max_epochs, patience=patience,
                     backend=backend, algorithm=algorithm, pruner=pruner, storage=storage, tracking_uri=tracking_uri,
                     timeout=timeout, subset=subset, seed=seed, target=target, task=task, impute=impute,
                     max_failures=max_failures, jobs=jobs, refit=refit, ensemble=ensemble,
                     test_time_shifts=test_time_shifts, grace_period=grace_period, start_over=start_over,
                     quiet_workers=True, cluster=cluster)
    err = error_console()
    err.print(banner(plan))
    space = plan.space
    if not space.tuned():
        err.print(f"Note: every parameter of {space.source} is fixed: each trial trains the same configuration (with "
                  f"its own seed); give parameters a range or choices to search them.")
    if space.start and backend != "optuna":
        err.print(f"Note: the space's `start` configurations are tried first by the optuna backend only; "
                  f"{backend}'s oracles draw every trial themselves.")
    sweep_with_progress(plan, err)


def sweep_with_progress(plan, err):
    """Run the sweep under the live display; Ctrl-C and SIGTERM end it cleanly; print the summary."""
    from sweeper.domain.errors import SweepInterrupted
    from sweeper.present.console import LiveProgress
    from sweeper.runtime.setup import configure_process
    from sweeper.usecases.sweep import run_sweep

    configure_process(optuna=True)
    objective = plan.space.objective
    try:
        with LiveProgress(err, objective.metric, objective.direction, plan.space.max_epochs,
                          budget=plan.timeout) as progress:
            result = run_sweep(plan, progress)
    except SweepInterrupted as stop:
        print_summary(stop.result)
        signal_name = "SIGTERM" if stop.terminated else "Ctrl-C"
        if stop.finishing:
            err.print(f"Interrupted ({signal_name}) while making the final model: every trial is kept. Run the "
                      f"same command to make it.")
        else:
            err.print(f"Interrupted ({signal_name}): the running trial is recorded as interrupted; finished trials "
                      f"are kept. Run the same command to resume.")
        sys.exit(143 if stop.terminated else 130)
    print_summary(result)
    return result


@click.command()
@click.argument("study")
@click.option("--top", type=click.IntRange(min=2), default=5, show_default=True,
              help="Narrow around this many of STUDY's best complete trials (they also warm-start the new study).")
@click.option("--margin", type=click.FloatRange(min=0, max=2), default=0.25, show_default=True,
              help="Room left beyond the top trials' values, as a share of their spread (log ranges: in log space).")
@click.option("--trials", type=click.IntRange(min=1), help="New trials to run (default: as many as STUDY's sweep).")
@click.option("--name", type=StudyName(), metavar="NAME", help="Name of the new study (default: STUDY-refined).")
@click.option("--out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Where to write the narrowed space (default: NAME.yaml).")
@click.option("--space", "space_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="The space STUDY was run with, if MLflow holds no copy of it.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--seed", type=int, default=0, show_default=True)
@storage_option
@tracking_option
@keras_backend_option
@reports_errors
def refine(study, top, margin, trials, name, out, space_file, force, seed, storage, tracking_uri):
    """Search again, narrowed around STUDY's best trials (coarse to fine).

    Each numeric range shrinks to cover the top trials' values plus a margin, each categorical keeps the
    choices they made; the new space is written as YAML (read it, edit it, reuse it with --space). A new
    Optuna study, tagged `refines` in MLflow, starts from the top trials as complete trials and runs
    --trials new ones with TPE.

    \b
    Example:
      sweeper search fashion --trials 12
      sweeper refine fashion --trials 12            # writes fashion-refined.yaml, study fashion-refined
    """
    check_study(tracking_uri, study, say_missing_store=False)
    from sweeper.usecases.refine import prepare

    refinement, plan = prepare(study, top=top, margin=margin, trials=trials, out=Path(out) if out else None,
                               name=name, space_file=space_file, force=force, storage=storage,
                               tracking_uri=tracking_uri, seed=seed, quiet_workers=True)
    err = error_console()
    err.print(f"Refining [bold]{study}[/] around its top {len(refinement.top)} trials (best "
              f"{refinement.top[0].value:.4f}): wrote {plan.space.source}")
    for change in refinement.changes:
        err.print(f"  {change}")
    err.print(f"Study [bold]{plan.study}[/]: {len(refinement.top)} warm-start trials + "
              f"{plan.space.trials - len(refinement.top)} new, up to {plural(plan.space.max_epochs, 'epoch')} each")
    result = sweep_with_progress(plan, err)
    first = refinement.top[0]
    if result.best is not None:
        better = plan.space.objective.better(result.best.value, first.value)
        click.echo(f"First stage: {study}'s best {result.objective_metric} {first.value:.4f} (trial {first.number}); "
                   f"refined: {result.best.value:.4f} (trial {result.best.number}). The better model is "
                   f"{plan.study + ' (refined)' if better else study + ' (first stage)'}'s: {command_name()} export "
                   f"{plan.study if better else study} --out best/")


@click.group()
def study():
    """Studies that workers on many hosts share (Optuna on an RDB storage, MLflow on a tracking server)."""


@study.command("create")
@click.argument("name", type=StudyName())
@click.option("--dataset", required=True, type=DatasetName(), help="Dataset every worker trains on (the same "
                                                                       "files must be on each host).")
@space_options
@storage_option
@tracking_option
@csv_options
@reports_errors
def study_create(name, dataset, space_file, trials, max_epochs, patience, storage, tracking_uri, target, task,
                 impute):
    """Create study NAME and its MLflow sweep run, for workers on any host to join.

    The study records its space, objective and budget; each `sweeper search DATASET --study NAME` then
    joins it (started together or one by one), its trials counted against one global budget and nested
    under one parent run. The last worker to finish evaluates and registers the best model.

    \b
    Example:
      export SWEEPER_STORAGE=postgresql+psycopg://sweeper:PASSWORD@db-host/sweeper
      export MLFLOW_TRACKING_URI=http://mlflow-host:5000
      sweeper study create fashion-pg --dataset fashion --trials 12 --max-epochs 10
      sweeper search fashion --study fashion-pg     # on each host
    """
    from sweeper.runtime.setup import configure_process
    from sweeper.usecases.plan import make_plan
    from sweeper.usecases.sweep import create_study

    plan = make_plan(dataset, space=space_file, study=name, trials=trials, max_epochs=max_epochs, patience=patience,
                     storage=storage, tracking_uri=tracking_uri, target=target, task=task, impute=impute,
                     recorded_budget=False)
    configure_process(optuna=True)
    created = create_study(plan)
    space = created.space
    click.echo(f"Created study '{name}' in {created.storage}: {plural(space.trials, 'trial')} of up to "
               f"{plural(space.max_epochs, 'epoch')} (patience {space.patience}), {space.objective.direction} "
               f"{space.objective.metric}.\n"
               f"MLflow: experiment '{name}', sweep run {created.parent_run_id} at {created.tracking_uri}.\n"
               f"Start workers on any host (same sweeper version, {dataset} available locally, the same "
               f"SWEEPER_STORAGE and MLFLOW_TRACKING_URI):\n  {command_name()} search {dataset} --study {name}")


@click.command("lr-find")
@click.argument("dataset", type=DatasetName())
@click.option("--space", "space_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Search space whose first `start` configuration (else its middle) is probed (default: the "
                   "bundled one for DATASET).")
@click.option("--write", type=click.Path(dir_okay=False, exists=True), metavar="SPACE",
              help="Set learning_rate's low and high in this space file to the suggested range.")
@click.option("--optimizer", metavar="NAME", help="Probe with this optimizer (the range depends on it).")
@click.option("--steps", type=click.IntRange(min=30), default=300, show_default=True, help="Batches to train.")
@click.option("--start-lr", type=click.FloatRange(min=0, min_open=True), default=1e-6, show_default=True)
@click.option("--end-lr", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), metavar="PNG", help="Plot file (default: "
                                                                           "lr-find-DATASET.png).")
@click.option("--study", type=StudyName(), metavar="NAME",
              help="MLflow experiment to record the test in (default: DATASET).")
@click.option("--subset", type=click.IntRange(min=1), metavar="N", help="Use only N training examples.")
@click.option("--seed", type=int, default=0, show_default=True)
@tracking_option
@keras_backend_option
@reports_errors
def lr_find(dataset, space_file, write, optimizer, steps, start_lr, end_lr, out, study, subset, seed, tracking_uri):
    """Find a learning-rate range: train once with the rate growing exponentially per batch.

    The loss against the learning rate is plotted (PNG, also logged in MLflow), and a log-range for
    learning_rate is suggested: from a decade below where the loss falls fastest to a third of where it
    is lowest.

    \b
    Example:
      sweeper lr-find fashion
      cp search_spaces/fashion.yaml my-space.yaml
      sweeper lr-find fashion --write my-space.yaml && sweeper search fashion --space my-space.yaml
    """
    from sweeper.domain.space import bundled_space_path, load_space
    from sweeper.ml.quiet import import_keras
    from sweeper.usecases.lr_find import lr_find as run_lr_find

    space = load_space(space_file or bundled_space_path(dataset))
    import_keras()
    found = run_lr_find(dataset, space, study=study or dataset, out=Path(out or f"lr-find-{dataset}.png"),
                        write=Path(write) if write else None, optimizer=optimizer, steps=steps, start_lr=start_lr,
                        end_lr=end_lr, subset=subset, seed=seed, tracking_uri=tracking_uri)
    test = found.test
    click.echo(f"Probed {test.params['optimizer']}, batch {test.params['batch_size']}, "
               f"{test.params['n_layers']} hidden layer(s) over {len(test.losses)} batches"
               f"{' (stopped: the loss diverged)' if test.diverged else ''}: steepest fall at "
               f"{test.lr_steepest:.1e}, lowest loss at {test.lr_min_loss:.1e}.\n"
               f"Suggested learning_rate: {{type: float, low: {test.low:g}, high: {test.high:g}, log: true}}\n"
               f"Plot: {found.plot_path} (and in MLflow, run {found.run_id})"
               + (f"\nWrote the range into {found.written}." if found.written else ""))


@click.group()
def cluster():
    """A Dask cluster to run sweeps on (search --cluster ADDRESS): one on this machine to try it."""


@cluster.command("local")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Dask worker processes.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads per worker (Keras backend's, in each trial).")
@click.option("--port", type=click.IntRange(0, 65535), default=8786, show_default=True,
              help="The scheduler's port on 127.0.0.1 (0: any free one).")
@reports_errors
def cluster_local(workers, threads, port):
    """Start a Dask scheduler and WORKERS worker processes on 127.0.0.1, until Ctrl-C.

    \b
    Example:
      sweeper cluster local --workers 2
      sweeper search fashion --cluster tcp://127.0.0.1:8786 --jobs 2 --storage postgresql+psycopg://... \\
        --tracking-uri http://127.0.0.1:5000
    """
    from sweeper.usecases.cluster import local_cluster

    local_cluster(workers, port, threads, say=lambda line: click.echo(line, err=True))
