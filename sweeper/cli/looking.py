"""The commands that look: validate, datasets, doctor, trials, studies, report, ui."""

from __future__ import annotations

import sys

import click

from sweeper.cli.options import output_options, storage_option, tracking_option
from sweeper.cli.speak import check_study, print_rows, reports_errors


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@reports_errors
def validate(file):
    """Check a search-space FILE without running anything.

    \b
    Example:
      sweeper validate search_spaces/fashion.yaml
    """
    from sweeper.domain.space import load_space
    from sweeper.domain.wording import plural

    space = load_space(file)
    tuned = space.tuned()
    objectives = " and ".join(f"{o.direction}s {o.metric}" for o in space.objectives)
    tunes = f"Tunes {', '.join(tuned)}" if tuned else "Tunes nothing: every parameter is fixed, so each trial " \
                                                       "trains the same configuration"
    click.echo(f"{file}: valid. {tunes}; {objectives}; {plural(space.trials, 'trial')} of up to "
               f"{plural(space.max_epochs, 'epoch')} (patience {space.patience}).")


@click.command()
@reports_errors
def datasets():
    """List the datasets and where each one's data was found.

    \b
    Example:
      sweeper datasets
    """
    from sweeper.ml.data import DATASETS

    for info in DATASETS.values():
        found = info.locate()
        where = found or "not found; looked in: " + "; ".join(info.looked_in() or ["(nowhere)"])
        click.echo(f"{info.name:<11} {info.task:<15} {where}\n{'':<11} {info.description}")
    click.echo(f"{'csv:PATH':<11} {'either':<15} PATH, with --target COLUMN\n{'':<11} your own CSV table")


@click.command()
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
    from sweeper.runtime.setup import configure_process
    from sweeper.usecases.doctor import check

    configure_process(optuna=True)
    findings = check(storage, tracking_uri, repair=repair)
    for finding in findings:
        mark = "repaired" if finding.repaired and finding.healthy else "ok" if finding.healthy else "PROBLEM"
        click.echo(f"{mark:<8} {finding.store}: {finding.message}")
    if not all(finding.healthy for finding in findings):
        sys.exit(1)


@click.command()
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
    check_study(tracking_uri, study)
    from sweeper.present.console import trials_table
    from sweeper.usecases.studies import study_and_result

    record, result = study_and_result(study, tracking_uri)
    rows = [t.row() for t in record.sorted_trials(sort)]
    print_rows(rows, as_json, as_csv, lambda: trials_table(record, sort, result))


@click.command()
@output_options
@tracking_option
@reports_errors
def studies(as_json, as_csv, tracking_uri):
    """List every study in the store: engine, trial counts and best value.

    \b
    Example:
      sweeper studies
    """
    from sweeper.present.console import studies_table
    from sweeper.usecases.studies import all_studies

    records = all_studies(tracking_uri)
    rows = [record.row() for record in records]
    print_rows(rows, as_json, as_csv, lambda: studies_table(records))


@click.command()
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
    check_study(tracking_uri, study)
    from sweeper.domain.wording import plural
    from sweeper.runtime.setup import configure_process
    from sweeper.usecases.report import build_report

    configure_process(optuna=True)
    built = build_report(study, out, tracking_uri=tracking_uri)
    drawn = [f.key for f in built.figures if f.figure is not None]
    skipped = [f"{f.key} ({f.note})" for f in built.figures if f.figure is None]
    click.echo(f"Wrote {built.path}: " + (f"{plural(len(drawn), 'figure')} ({', '.join(drawn)})" if drawn else
                                          "no figures yet")
               + (f"; not drawn: {'; '.join(skipped)}" if skipped else "")
               + (f". Also logged on search run {built.search_run_id} (artifacts/report/)." if built.search_run_id
                  else " (not logged in MLflow: the store is read-only)." if built.read_only_store else "."))


@click.command()
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
    from sweeper.usecases.ui import serve

    sys.exit(serve(tracking_uri, port, study, open_browser, say=lambda line: click.echo(line, err=True)))
