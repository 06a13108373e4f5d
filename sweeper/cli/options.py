"""What several commands share: parameter types and options, each checked before any work."""

from __future__ import annotations

import click


class Duration(click.ParamType):
    """`90`, `90s`, `30m`, `2h`, `1h30m` -> seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
        from sweeper.domain.errors import UsageError
        from sweeper.domain.wording import parse_duration

        try:
            return parse_duration(value)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


class DatasetName(click.ParamType):
    name = "dataset"

    def convert(self, value, param, ctx):
        from sweeper.domain.errors import DatasetError
        from sweeper.ml.data import check_name

        try:
            return check_name(value)
        except DatasetError as exc:
            self.fail(str(exc), param, ctx)


class StudyName(click.ParamType):
    """A study name every store accepts (sweeper.names), refused before any work."""

    name = "name"

    def convert(self, value, param, ctx):
        from sweeper.domain.errors import UsageError
        from sweeper.domain.names import check_study_name

        try:
            return check_study_name(value)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


def checked_url(ctx, param, value):
    """A store URL that SQLAlchemy and MLflow will read as the user meant (see sweeper.urls)."""
    from sweeper.domain.errors import UsageError
    from sweeper.domain.urls import check_url

    try:
        return check_url(value, param.opts[0])
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None


def tracking_option(command):
    return click.option("--tracking-uri", metavar="URL", envvar="MLFLOW_TRACKING_URI", callback=checked_url,
                        help="MLflow tracking URI, or $MLFLOW_TRACKING_URI (default: sqlite:///mlruns/mlflow.db "
                             "under the current directory).")(command)


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


def _chosen_backend(ctx, param, value):
    if value is not None:
        from sweeper.domain.errors import UsageError
        from sweeper.runtime.setup import choose_keras_backend

        try:
            choose_keras_backend(value)
        except UsageError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return value


def keras_backend_option(command):
    from sweeper.domain.choices import KERAS_BACKENDS

    return click.option("--keras-backend", type=click.Choice(KERAS_BACKENDS), expose_value=False,
                        callback=_chosen_backend, is_eager=True,
                        help="What Keras trains on (default: $KERAS_BACKEND, else the space file's "
                             "`keras_backend`, else tensorflow); models load on either.")(command)


def output_options(command):
    command = click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")(command)
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(command)

