"""`sweeper report`: one self-contained HTML page of a study's figures, drawn from the store's records (the same for
every engine), written atomically and logged on the study's latest search run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.domain.errors import SweeperError
from sweeper.domain.records import StudyRecord
from sweeper.present import card as cards
from sweeper.present import figures as figs
from sweeper.present.html import render
from sweeper.store import Store


@dataclass
class Report:
    path: Path
    figures: list  # figs.Figure
    search_run_id: str | None
    read_only_store: bool = False  # so the page is not logged in MLflow


def build_report(study: str, out: str | Path, *, tracking_uri: str | None = None) -> Report:
    """Draw STUDY's figures from the MLflow store into one HTML file at `out` (replaced if it exists)."""
    out = Path(out)
    if out.is_dir():
        raise SweeperError(f"{out} is a folder; --out names the HTML file to write, e.g. report.html")
    store = Store.open(tracking_uri, create=False)
    record = store.study(study, trials=True)
    drawn = [t for t in record.trials if t.state in ("complete", "pruned")]
    histories = store.curves(drawn, record.metric)
    space = store.recorded_space(record)  # the parameters' axes: log or linear
    figures = figs.study_figures(record, histories, space) + _best_model_figures(store, record)
    _write_atomically(out, render(record, figures))
    return Report(out, figures, store.log_report(record, out), store.read_only)


def history_figure(study: str, *, tracking_uri: str | None = None) -> Any:
    """The optimisation history of a study (each trial's objective, the running best): a plotly figure."""
    store = Store.open(tracking_uri, create=False)
    record = store.study(study, trials=True)
    figure = figs.history(record)
    if figure.figure is None:
        raise SweeperError(f"study '{study}' has {figure.note}: there is no history to plot")
    return figure.figure


def _best_model_figures(store: Store, record: StudyRecord) -> list:
    title = "Confusion matrix and per-class accuracy of the best model"
    if record.best() is None:
        return [figs.Figure("confusion_matrix", title, None, "no complete trial yet")]
    from sweeper.ml.data import load_recorded

    dataset = load_recorded(record)
    if not dataset.class_names:
        return []  # a regression study: no classes to confuse
    from sweeper.ml.quiet import import_keras

    import_keras()
    best = store.best_trial(record)
    matrix = cards.confusion_matrix(store.load_trial_model(best), dataset)
    return [figs.Figure("confusion_matrix", f"Confusion matrix of the best model (trial {best.number})",
                        figs.confusion_figure(matrix, dataset.class_names)),
            figs.Figure("per_class_accuracy", "Per-class accuracy of the best model",
                        figs.per_class_figure(cards.per_class_accuracy(matrix), dataset.class_names))]


def _write_atomically(out: Path, page: str) -> None:
    """Write beside `out`, then rename: a reader never sees half a page."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        staging.write_text(page, encoding="utf-8")
        os.replace(staging, out)
    finally:
        staging.unlink(missing_ok=True)
