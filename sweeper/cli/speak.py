"""How the command line speaks: library errors as one `Error:` line, warnings as `Warning:` lines, tables and
summaries on a console that fits the terminal, and the command name its hints use."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys

import click


def reports_errors(command):
    """Library raises, CLI speaks: SweeperError -> `Error: ...` and exit 1 (2 for usage errors)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from sweeper.domain.errors import OptionError, SweeperError, UsageError
        from sweeper.runtime.interrupts import installed
        from sweeper.runtime.setup import configure_process

        debug = (click.get_current_context().find_root().params or {}).get("debug")
        configure_process()  # the entry point sets up its process: the libraries' own logging out of the terminal
        try:
            with installed(), _warnings_shown():  # before the first store write, in every command
                return command(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except OptionError as exc:
            if debug:
                raise
            raise click.BadParameter(exc.message, param_hint=f"'{exc.option}'") from None
        except UsageError as exc:
            if debug:
                raise
            raise click.UsageError(str(exc)) from None
        except SweeperError as exc:
            if debug:
                raise
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt as exc:
            _interrupted(exc)
        except Exception as exc:
            from sweeper.runtime.interrupts import behind

            interrupt = behind(exc)
            if interrupt is not None and not debug:
                _interrupted(interrupt)
            if debug:
                raise
            raise click.ClickException(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the "
                                       f"traceback)") from None

    return wrapper


def _interrupted(exc: KeyboardInterrupt):
    from sweeper.domain.errors import Terminated

    click.echo("Interrupted.", err=True)
    sys.exit(143 if isinstance(exc, Terminated) else 130)


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


def print_summary(result):
    from sweeper.present.console import summary

    stdout_console().print(summary(result, command_name()), crop=False)  # the hints' commands stay whole


def stdout_console():
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


def check_study(tracking_uri, study, say_missing_store=True):
    """An unknown study or a missing store refused at once, before MLflow or TensorFlow is imported."""
    from sweeper.usecases.studies import check_study_exists

    check_study_exists(tracking_uri, study, say_missing_store=say_missing_store)


def error_console():
    """Rich on stderr, for what a sweep says while it runs; lines are not broken (a path stays whole)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def print_rows(rows, as_json, as_csv, table):
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
        stdout_console().print(table())
