"""The command line: parse, call the library, print. The one place that talks to the user.

Library modules are imported inside the commands so that `--help` and usage errors never pay for
TensorFlow, MLflow or Optuna.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import sys
from pathlib import Path

import click

from . import __version__
from .backends import CHOICES as BACKENDS
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


class Duration(click.ParamType):
    """`90`, `90s`, `30m`, `2h`, `1h30m` -> seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        match = _DURATION.match(str(value).strip())
        if not str(value).strip() or not match or not any(match.groups()):
            self.fail(f"'{value}' is not a duration; expected e.g. 90s, 30m, 2h or 1h30m", param, ctx)
        hours, minutes, seconds = (float(g or 0) for g in match.groups())
        total = hours * 3600 + minutes * 60 + seconds
        if total <= 0:
            self.fail(f"'{value}' must be longer than zero", param, ctx)
        return total


class DatasetName(click.ParamType):
    name = "dataset"

    def convert(self, value, param, ctx):
        from .data import check_name
        from .errors import DatasetError

        try:
            return check_name(value)
        except DatasetError as exc:
            self.fail(str(exc), param, ctx)


class StudyName(click.ParamType):
    """A study name every store accepts (sweeper.names), refused before any work."""

    name = "name"

    def convert(self, value, param, ctx):
        from .errors import UsageError
        from .names import check_study_name

        try:
            return check_study_name(value)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


def reports_errors(command):
    """Library raises, CLI speaks: SweeperError -> `Error: ...` and exit 1 (2 for usage errors)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from .errors import SweeperError, UsageError
        from .interrupts import installed

        debug = (click.get_current_context().find_root().params or {}).get("debug")
        try:
            with installed(), _warnings_shown():  # before the first store write, in every command
                return command(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except UsageError as exc:
            if debug:
                raise
            raise click.UsageError(str(exc)) from None
        except SweeperError as exc:
            if debug:
                raise
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt as exc:
            from .errors import Terminated

            click.echo("Interrupted.", err=True)
            sys.exit(143 if isinstance(exc, Terminated) else 130)
        except Exception as exc:  # noqa: BLE001 - a bug, not a user mistake: say so, briefly
            if debug:
                raise
            raise click.ClickException(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the "
                                       f"traceback)") from None

    return wrapper


class _WarningLines(logging.Handler):
    """The library's warnings (logger `sweeper`) as `Warning: ...` lines on stderr."""

    def emit(self, record):
        click.echo(f"Warning: {record.getMessage()}", err=True)


@contextlib.contextmanager
def _warnings_shown():
    logger, handler = logging.getLogger("sweeper"), _WarningLines(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def checked_url(ctx, param, value):
    """A store URL that SQLAlchemy and MLflow will read as the user meant (see sweeper.urls)."""
    from .errors import UsageError
    from .urls import check_url

    try:
        return check_url(value, param.opts[0])
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None


def tracking_option(command):
    return click.option("--tracking-uri", metavar="URL", envvar="MLFLOW_TRACKING_URI", callback=checked_url,
                        help="MLflow tracking URI, or $MLFLOW_TRACKING_URI (default: sqlite:///mlruns/mlflow.db "
                             "under the current directory).")(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sweeper")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug):
    """Hyperparameter sweeps for Keras MLPs: Optuna or Keras Tuner trials, all in MLflow, the best exported.

    \b
    Example:
      sweeper search fashion --trials 20 --max-epochs 10
      sweeper ui
      sweeper export fashion --out best-fashion/
    """


def space_options(command):
    """The search space and its budget: --space, --trials, --max-epochs, --patience."""
    for option in reversed([
        click.option("--space", "space_file", type=click.Path(dir_okay=False), metavar="FILE",
                     help="Search-space YAML (default: the bundled one for DATASET)."),
        click.option("--trials", type=click.IntRange(min=1), help="Finished trials the study should hold (default: "
                                                                   "the study's, else the space file's)."),
        click.option("--max-epochs", type=click.IntRange(min=1), help="Epoch cap per trial (default: the study's, "
                                                                      "else the space file's)."),
        click.option("--patience", type=click.IntRange(min=0), help="Early-stopping patience (default: the "
                                                                    "study's, else the space file's)."),
    ]):
        command = option(command)
    return command


def storage_option(command):
    return click.option("--storage", metavar="URL", envvar="SWEEPER_STORAGE", callback=checked_url,
                        help="optuna: an RDB URL (e.g. postgresql+psycopg://...) or a journal file (default: "
                             "mlruns/optuna/journal.log); keras-tuner: a folder (default: mlruns/keras-tuner). "
                             "Also from $SWEEPER_STORAGE, so a password need not be typed on a command "
                             "line.")(command)


def csv_options(command):
    command = click.option("--impute", type=click.Choice(["mean"]),
                           help="csv:PATH: fill missing feature values with the training split's mean (the "
                                "same at prediction); without it a table with gaps is refused.")(command)
    command = click.option("--task", type=click.Choice(["classification", "regression"]),
                           help="Task of a csv:PATH dataset (default: inferred from the target).")(command)
    return click.option("--target", metavar="COLUMN", help="Column to predict (csv:PATH datasets).")(command)


def grace_option(command):
    return click.option("--grace-period", type=click.IntRange(min=4), default=60, show_default=True,
                        metavar="SECONDS", help="RDB storages: a trial whose worker sent no heartbeat for this "
                                                "long is failed by the others and retried once.")(command)


def _load_space(dataset, space_file, trials, max_epochs, patience):
    """The space file (or DATASET's bundled one) with the budget options given -> (space, explicit budget)."""
    from .search_space import bundled_space_path, load_space

    budget = {k: v for k, v in dict(trials=trials, max_epochs=max_epochs, patience=patience).items()
              if v is not None}
    return load_space(space_file or bundled_space_path(dataset)).with_budget(**budget), budget


def _check_dataset_options(dataset, target, impute=None):
    if target and not dataset.startswith("csv:"):
        raise click.UsageError("--target applies to csv:PATH datasets only")
    if impute and not dataset.startswith("csv:"):
        raise click.UsageError("--impute applies to csv:PATH datasets only")
    if dataset.startswith("csv:") and not target:
        raise click.UsageError(f"{dataset} needs --target COLUMN naming the column to predict")


@main.command()
@click.argument("dataset", type=DatasetName())
@space_options
@click.option("--study", type=StudyName(), metavar="NAME", help="Study name; the same name resumes it, or joins it while other "
                                               "workers run it (default: the dataset's name, plus -keras-tuner "
                                               "for that backend).")
@click.option("--timeout", type=Duration(), metavar="DURATION", help="Stop starting trials after this long, e.g. 30m or 2h.")
@click.option("--subset", type=click.IntRange(min=1), metavar="N", help="Train on only N training examples (quick looks).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampler and of every trial.")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="optuna", show_default=True,
              help="Search engine: Optuna or Keras Tuner.")
@click.option("--algorithm", metavar="NAME", help="optuna: tpe (default), random, grid, cmaes, nsga2 (two objectives); "
                                                  "keras-tuner: random (default), bayesian, hyperband.")
@click.option("--pruner", metavar="NAME", help="optuna: median (default), hyperband, none; keras-tuner: none.")
@storage_option
@tracking_option
@csv_options
@click.option("--max-failures", type=click.IntRange(min=1), default=3, show_default=True,
              help="Stop after this many failed trials in a row.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Worker processes sharing the study (optuna); the budget counts across them.")
@grace_option
@click.option("--refit/--no-refit", default=True, show_default=True,
              help="Retrain the best configuration on training + validation data for its best epoch count "
                   "before the final test; that model is the one registered.")
@click.option("--start-over", is_flag=True, help="When the study's MLflow runs or its engine storage are gone, "
                                                 "drop the half that is left and sweep the study afresh.")
@reports_errors
def search(dataset, space_file, study, trials, timeout, max_epochs, patience, subset, seed, backend, algorithm,
           pruner, storage, tracking_uri, target, task, impute, max_failures, jobs, grace_period, refit,
           start_over):
    """Sweep DATASET's search space and record every trial in MLflow.

    DATASET is fashion, mnist, digits, california or csv:PATH (with --target COLUMN).
    Running the same command again resumes the study: finished trials count toward --trials.

    \b
    Example:
      sweeper search fashion --trials 20 --max-epochs 10
      sweeper search digits --algorithm random --pruner none --trials 20
      sweeper search fashion --backend keras-tuner --algorithm hyperband
      sweeper search fashion --trials 12 --jobs 2
      sweeper search csv:houses.csv --target price --timeout 30m
    """
    algorithm, pruner = _check_engine(backend, algorithm, pruner)
    _check_dataset_options(dataset, target, impute)
    from rich.console import Console

    from .report import banner
    from .sweep import SweepConfig, check_inputs, with_recorded_budget

    space, budget = _load_space(dataset, space_file, trials, max_epochs, patience)
    if space.cost:
        pruner = "none"  # Optuna prunes single-objective studies only
    config = SweepConfig(dataset=dataset, space=space, study=study, backend=backend, algorithm=algorithm,
                         pruner=pruner, storage=storage, tracking_uri=tracking_uri, timeout=timeout, subset=subset,
                         seed=seed, target=target, task=task, impute=impute, max_failures=max_failures,
                         jobs=jobs, refit=refit, grace_period=grace_period, budget=budget, start_over=start_over)
    if algorithm == "grid":
        space.grid()  # refuse an ungriddable space before any work starts
    check_inputs(config)
    config = with_recorded_budget(config)
    space = config.space
    err = Console(stderr=True, soft_wrap=True)
    err.print(banner(dataset, config))
    if not space.tuned():
        err.print(f"Note: every parameter of {space.source} is fixed: each trial trains the same configuration (with "
                  f"its own seed); give parameters a range or choices to search them.")
    if space.start and backend != "optuna":
        err.print(f"Note: the space's `start` configurations are tried first by the optuna backend only; "
                  f"{backend}'s oracles draw every trial themselves.")
    _sweep_with_progress(config, err)


def _sweep_with_progress(config, err):
    """Run the sweep under the live display; Ctrl-C and SIGTERM end it cleanly; print the summary."""
    from .errors import SweepInterrupted
    from .report import LiveProgress
    from .sweep import run_sweep

    space = config.space
    try:
        with LiveProgress(err, space.objective.metric, space.objective.direction, space.max_epochs) as progress:
            result = run_sweep(config, progress)
    except SweepInterrupted as stop:
        _print_summary(stop.result)
        signal_name = "SIGTERM" if stop.terminated else "Ctrl-C"
        if stop.finishing:
            err.print(f"Interrupted ({signal_name}) while making the final model: every trial is kept. Run the "
                      f"same command to make it.")
        else:
            err.print(f"Interrupted ({signal_name}): the running trial is recorded as interrupted; finished trials "
                      f"are kept. Run the same command to resume.")
        sys.exit(143 if stop.terminated else 130)
    _print_summary(result)
    return result


@main.command()
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
    from rich.console import Console

    _check_study(tracking_uri, study)
    from .refine import prepare
    from .wording import plural

    refinement, config = prepare(study, top=top, margin=margin, trials=trials, out=Path(out) if out else None,
                                 name=name, space_file=space_file, force=force, storage=storage,
                                 tracking_uri=tracking_uri, seed=seed)
    err = Console(stderr=True, soft_wrap=True)
    err.print(f"Refining [bold]{study}[/] around its top {len(refinement.top)} trials (best "
              f"{refinement.top[0].value:.4f}): wrote {config.space.source}")
    for change in refinement.changes:
        err.print(f"  {change}")
    err.print(f"Study [bold]{config.study_name}[/]: {len(refinement.top)} warm-start trials + "
              f"{config.space.trials - len(refinement.top)} new, up to {plural(config.space.max_epochs, 'epoch')} "
              f"each")
    result = _sweep_with_progress(config, err)
    first = refinement.top[0]
    if result.best is not None:
        better = config.space.objective.better(result.best.objective, first.value)
        click.echo(f"First stage: {study}'s best {result.objective_metric} {first.value:.4f} (trial {first.number}); "
                   f"refined: {result.best.objective:.4f} (trial {result.best.trial_number}). The better model is "
                   f"{config.study_name + ' (refined)' if better else study + ' (first stage)'}'s: sweeper export "
                   f"{config.study_name if better else study} --out best/")


@main.group()
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
    _check_dataset_options(dataset, target, impute)
    from .sweep import SweepConfig, create_study
    from .wording import plural

    space, _ = _load_space(dataset, space_file, trials, max_epochs, patience)
    created = create_study(SweepConfig(dataset=dataset, space=space, study=name, storage=storage,
                                       tracking_uri=tracking_uri, target=target, task=task,
                                       impute=impute))
    space = created.space
    click.echo(f"Created study '{name}' in {created.storage}: {plural(space.trials, 'trial')} of up to "
               f"{plural(space.max_epochs, 'epoch')} (patience {space.patience}), {space.objective.direction} {space.objective.metric}.\n"
               f"MLflow: experiment '{name}', sweep run {created.parent_run_id} at {created.tracking_uri}.\n"
               f"Start workers on any host (same sweeper version, {dataset} available locally, the same "
               f"SWEEPER_STORAGE and MLFLOW_TRACKING_URI):\n  {command_name()} search {dataset} --study {name}")


@main.command("lr-find")
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
    from .lr_find import lr_find as run_lr_find
    from .quiet import import_tensorflow
    from .search_space import bundled_space_path, load_space

    space = load_space(space_file or bundled_space_path(dataset))
    import_tensorflow()
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


def _print_summary(result):
    from .report import summary

    _stdout_console().print(summary(result, command_name()))


def _stdout_console():
    """Rich on stdout: a terminal's width (or $COLUMNS); a pipe or a log file gets 140 columns, not 80."""
    import os

    from rich.console import Console

    out = Console()
    if not out.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        out.width = 140
    return out


def command_name() -> str:
    """How this shell runs sweeper, for the commands that messages suggest: `sweeper` when that is on PATH, else
    the path it was started by (e.g. `.venv/bin/sweeper` after `make search`), so that they work as typed."""
    import os
    import shutil

    started = sys.argv[0] if sys.argv else ""
    if os.path.basename(started) != "sweeper":
        return "sweeper"  # python -m sweeper, or a test runner
    on_path = shutil.which("sweeper")
    if on_path and os.path.exists(started) and os.path.samefile(on_path, started):
        return "sweeper"
    relative = os.path.relpath(started)
    return relative if not relative.startswith("..") else os.path.abspath(started)


def _check_engine(backend, algorithm, pruner):
    algorithms, pruners = BACKENDS[backend]
    algorithm, pruner = algorithm or algorithms[0], pruner or pruners[0]
    if algorithm not in algorithms:
        raise click.BadParameter(f"'{algorithm}' is not an algorithm of the {backend} backend; expected one of "
                                 f"{', '.join(algorithms)}", param_hint="'--algorithm'")
    if pruner not in pruners:
        raise click.BadParameter(f"'{pruner}' is not a pruner of the {backend} backend; expected one of "
                                 f"{', '.join(pruners)}", param_hint="'--pruner'")
    return algorithm, pruner


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@reports_errors
def validate(file):
    """Check a search-space FILE without running anything.

    \b
    Example:
      sweeper validate search_spaces/fashion.yaml
    """
    from .search_space import load_space

    from .wording import plural

    space = load_space(file)
    tuned = space.tuned()
    objectives = " and ".join(f"{o.direction}s {o.metric}" for o in space.objectives)
    tunes = f"Tunes {', '.join(tuned)}" if tuned else "Tunes nothing: every parameter is fixed, so each trial " \
                                                       "trains the same configuration"
    click.echo(f"{file}: valid. {tunes}; {objectives}; {plural(space.trials, 'trial')} of up to "
               f"{plural(space.max_epochs, 'epoch')} (patience {space.patience}).")


@main.command()
@click.option("--repair", is_flag=True, help="Mend what can be mended without losing a record (the originals are "
                                             "kept beside).")
@storage_option
@tracking_option
@reports_errors
def doctor(repair, storage, tracking_uri):
    """Check the Optuna journal and the MLflow store of this folder's sweeps (or --storage, --tracking-uri).

    A journal line that is not a whole record (a crash, a full disk, stray bytes) is found by its line and
    byte offset; --repair keeps the good lines. A store an interrupted first run left half-created is set
    aside. Exit 1 when something is still wrong.

    \b
    Example:
      sweeper doctor
      sweeper doctor --repair
    """
    from .doctor import check

    findings = check(storage, tracking_uri, repair=repair)
    for finding in findings:
        mark = "repaired" if finding.repaired and finding.healthy else "ok" if finding.healthy else "PROBLEM"
        click.echo(f"{mark:<8} {finding.store}: {finding.message}")
    if not all(finding.healthy for finding in findings):
        sys.exit(1)


@main.command()
@reports_errors
def datasets():
    """List the datasets and where each one's data was found.

    \b
    Example:
      sweeper datasets
    """
    from .data import DATASETS

    for info in DATASETS.values():
        found = info.locate()
        where = found or "not found; looked in: " + "; ".join(info.looked_in() or ["(nowhere)"])
        click.echo(f"{info.name:<11} {info.task:<15} {where}\n{'':<11} {info.description}")
    click.echo(f"{'csv:PATH':<11} {'either':<15} PATH, with --target COLUMN\n{'':<11} your own CSV table")


@main.command()
@tracking_option
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--study", metavar="NAME", help="Print the URL of this study's experiment page.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser.")
@reports_errors
def ui(tracking_uri, port, study, open_browser):
    """Browse every study and trial in the MLflow UI, on 127.0.0.1 only.

    \b
    Example:
      sweeper ui --port 5000 --study fashion --open
      optuna-dashboard mlruns/optuna/journal.log   # the Optuna view of the same studies
    """
    from .ui import serve

    sys.exit(serve(tracking_uri, port, study, open_browser, say=lambda line: click.echo(line, err=True)))


def output_options(command):
    command = click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")(command)
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(command)


@main.command()
@click.argument("study")
@click.option("--sort", type=click.Choice(["objective", "number"]), default="objective", show_default=True,
              help="Order of the rows: best objective first, or trial number.")
@output_options
@tracking_option
@reports_errors
def trials(study, sort, as_json, as_csv, tracking_uri):
    """List STUDY's trials: state, objective, duration, epochs and the key parameters.

    \b
    Example:
      sweeper trials fashion
      sweeper trials fashion --sort number --csv > trials.csv
    """
    _check_study(tracking_uri, study)
    from .records import load_study
    from .report import trials_table
    from .tracking import open_client

    record = load_study(open_client(tracking_uri, create=False), study)
    rows = [t.row() for t in record.sorted_trials(sort)]
    _print_rows(rows, as_json, as_csv, lambda: trials_table(record, sort))


@main.command()
@output_options
@tracking_option
@reports_errors
def studies(as_json, as_csv, tracking_uri):
    """List every study in the store: engine, trial counts and best value.

    \b
    Example:
      sweeper studies
    """
    from .records import all_studies
    from .report import studies_table
    from .tracking import open_client

    records = all_studies(open_client(tracking_uri, create=False))
    rows = [record.row() for record in records]
    _print_rows(rows, as_json, as_csv, lambda: studies_table(records))


def _check_study(tracking_uri, study):
    """An unknown study or a missing store refused at once, before MLflow or TensorFlow is imported."""
    from .tracking import check_study_exists

    check_study_exists(tracking_uri, study)


def _print_rows(rows, as_json, as_csv, table):
    if as_json and as_csv:
        raise click.UsageError("--json and --csv cannot be used together")
    if as_json:
        import json

        click.echo(json.dumps(rows, indent=2))
    elif as_csv:
        import csv
        import io

        columns = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        click.echo(buffer.getvalue(), nl=False)
    else:
        _stdout_console().print(table())


@main.command()
@click.argument("study")
@click.option("--out", default="report.html", show_default=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="HTML file to write (replaced if it exists).")
@tracking_option
@reports_errors
def report(study, out, tracking_uri):
    """Write STUDY's figures into one self-contained HTML file (also logged on its search run in MLflow).

    Optimisation history, parameter importances, parallel coordinates, slices, learning curves of the top
    trials against the pruned ones, and the best model's confusion matrix and per-class accuracy.

    \b
    Example:
      sweeper report fashion --out report.html
    """
    _check_study(tracking_uri, study)
    from .html_report import build_report

    from .wording import plural

    built = build_report(study, out, tracking_uri=tracking_uri)
    drawn = [f.key for f in built.figures if f.figure is not None]
    skipped = [f"{f.key} ({f.note})" for f in built.figures if f.figure is None]
    click.echo(f"Wrote {built.path}: " + (f"{plural(len(drawn), 'figure')} ({', '.join(drawn)})" if drawn else
                                          "no figures yet")
               + (f"; not drawn: {'; '.join(skipped)}" if skipped else "")
               + (f". Also logged on search run {built.search_run_id} (artifacts/report/)." if built.search_run_id
                  else " (not logged in MLflow: the store is read-only)." if built.read_only_store else "."))


FORMAT_NAMES = ("keras", "savedmodel", "onnx", "tflite")  # sweeper.formats.FORMATS, without importing it


@main.command()
@click.argument("study")
@click.option("--out", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder to create with the model files, model.json and MODEL_CARD.md.")
@click.option("--format", "formats", type=click.Choice(FORMAT_NAMES), multiple=True, default=["keras"],
              show_default=True, help="Format to write; repeat for several (onnx and tflite need sweeper[onnx] "
                                      "and sweeper[tflite]).")
@click.option("--trial-model", is_flag=True, help="Export the best trial's own model (trained on the training split "
                                                  "only) instead of the final, registered one.")
@click.option("--retrain", is_flag=True, help="Retrain the best configuration on training + validation data for "
                                              "its best epoch count when the sweep made no such model (--no-refit, "
                                              "--pick).")
@click.option("--pick", nargs=2, type=(click.Choice(["smallest-within"]), click.FloatRange(min=0)),
              metavar="smallest-within MARGIN", help="Export the model with the fewest parameters whose objective "
                                                     "is within MARGIN of the best (default: the best).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of a retraining.")
@click.option("--force", is_flag=True, help="Replace DIR if it exists.")
@tracking_option
@reports_errors
def export(study, out, formats, trial_model, retrain, pick, seed, force, tracking_uri):
    """Export STUDY's best model to DIR, each file checked by loading it back, with a model card.

    The model is the one the sweep's summary reports and registers: the best configuration retrained on
    training + validation data (or, after --no-refit, the best trial's own model).

    \b
    Example:
      sweeper export fashion --out best-fashion/
      sweeper export fashion --format keras --format onnx --format tflite --out best/ --force
      sweeper export fashion --trial-model --out best-trial/
      sweeper export fashion-small --pick smallest-within 0.005 --out best-small/
      sweeper predict best-fashion/ shoe.png
    """
    if trial_model and retrain:
        raise click.UsageError("--trial-model and --retrain choose different models; pass one of them")
    from .export import check_out, export_best
    from .quiet import import_tensorflow

    check_out(Path(out), force)
    _check_study(tracking_uri, study)

    import_tensorflow()
    exported = export_best(study, out, formats=formats, retrain=retrain, trial_model=trial_model, tracking_uri=tracking_uri, force=force,
                           seed=seed, smallest_within_margin=pick[1] if pick else None,
                           say=lambda line: click.echo(line, err=True))
    card = exported.card
    tests = ", ".join(f"{k} {v:.4f}" for k, v in card["test_metrics"].items())
    files = ", ".join(path.name for path, _ in exported.files.values())
    click.echo(f"Exported {card['model']} (study '{study}') to {exported.directory}/: {files}, model.json, "
               f"MODEL_CARD.md; on the test split: {tests}")


@main.command()
@click.argument("model", metavar="MODEL")
@click.argument("inputs", metavar="INPUT", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per input) instead of a table.")
@tracking_option
@reports_errors
def predict(model, inputs, as_json, tracking_uri):
    """Predict with MODEL (an export folder or a models:/ URI) on INPUT.

    INPUT is a PNG/JPEG image or a folder of them (grey-scaled and resized to the model's input), a .npy
    array of raw values (one example or a batch), or a CSV table with the model's feature columns.

    \b
    Example:
      sweeper predict best-fashion/ shoe.png
      sweeper predict models:/fashion@champion images/ --json
    """
    import json

    from .predict import load_predictor, read_inputs
    from .quiet import import_tensorflow

    import_tensorflow()
    predictor = load_predictor(model, tracking_uri)
    rows = predictor.predict(*read_inputs(inputs, predictor))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*rows[0].keys(), title=f"Predictions of {predictor.source}")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console(width=120 if not sys.stdout.isatty() else None).print(table)


if __name__ == "__main__":
    main()
