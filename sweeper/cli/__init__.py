"""The command line, click only: parse, call a use case, print through the presentation; a SweeperError becomes one
`Error:` line (exit 1, or 2 for a usage error). Library modules are imported inside the commands, so that `--help`
and usage errors never pay for TensorFlow, MLflow or Optuna."""

from __future__ import annotations

import click

from sweeper.cli.looking import datasets, doctor, report, studies, trials, ui, validate
from sweeper.cli.models import export, predict
from sweeper.cli.sweeping import cluster, lr_find, refine, search, study


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="sweeper", prog_name="sweeper")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug):
    """Hyperparameter sweeps for Keras MLPs: Optuna or Keras Tuner trials, all in MLflow, the best exported.

    \b
    Example:
      sweeper search fashion --trials 20 --max-epochs 10
      sweeper ui
      sweeper export fashion --out best-fashion/
    """


for _command in (search, study, refine, lr_find, validate, datasets, doctor, trials, studies, report, ui, export,
                 predict, cluster):
    main.add_command(_command)


def run() -> None:
    """The `sweeper` console script: `main`, the process then ended without the interpreter's teardown (a command
    that trained or loaded a model exits seconds sooner). Tests call `main` itself, in-process."""
    from sweeper.runtime.setup import end_process

    try:
        main(prog_name="sweeper")
    except SystemExit as exc:
        end_process(exc.code)
