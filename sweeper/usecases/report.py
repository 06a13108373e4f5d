"""`sweeper report`: one self-contained HTML page of a study's figures, also logged on its search run."""

from __future__ import annotations

import html
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sweeper.domain.errors import SweeperError
from sweeper.domain.records import StudyRecord, curves, load_study
from sweeper.ml.data import load_recorded
from sweeper.present import card as cards
from sweeper.present import figures as figs
from sweeper.store.tracking import (
    best_run,
    latest_search,
    load_run_model,
    open_client,
    recorded_space,
    store_is_read_only,
)

REPORT_ARTIFACTS = "report"  # folder on the study's latest search run


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
    client = open_client(tracking_uri, create=False)
    record = load_study(client, study)
    drawn = [t for t in record.trials if t.state in ("complete", "pruned")]
    histories = curves(client, drawn, record.metric)
    space = recorded_space(client, client.get_experiment(record.experiment_id))  # the axes: log or linear
    figures = figs.study_figures(record, histories, space) + _best_model_figures(client, record)
    page = render(record, figures)
    _write_atomically(out, page)
    search_run_id = _log_on_search_run(client, record, out)
    return Report(out, figures, search_run_id, store_is_read_only(client))


def _best_model_figures(client, record: StudyRecord) -> list:
    title = "Confusion matrix and per-class accuracy of the best model"
    if record.best() is None:
        return [figs.Figure("confusion_matrix", title, None, "no complete trial yet")]
    best = best_run(client, record.name)
    experiment = client.get_experiment(record.experiment_id)
    tags = experiment.tags
    dataset = load_recorded(tags)
    if not dataset.class_names:
        return []  # a regression study: no classes to confuse
    from sweeper.ml.quiet import import_tensorflow

    import_tensorflow()
    matrix = cards.confusion_matrix(load_run_model(client, best.run_id), dataset)
    return [figs.Figure("confusion_matrix", f"Confusion matrix of the best model (trial {best.trial_number})",
                        figs.confusion_figure(matrix, dataset.class_names)),
            figs.Figure("per_class_accuracy", "Per-class accuracy of the best model",
                        figs.per_class_figure(cards.per_class_accuracy(matrix), dataset.class_names))]


_ERROR_PANEL = """<div id="page-errors" hidden><h2>Errors while drawing this page</h2><pre></pre></div>
<script>
(function () {
  function show(message) {
    var panel = document.getElementById("page-errors");
    panel.hidden = false;
    panel.querySelector("pre").textContent += message + "\\n";
  }
  window.addEventListener("error", function (e) { show(e.message); });
  var consoleError = console.error;
  console.error = function () { show(Array.prototype.join.call(arguments, " ")); consoleError.apply(console, arguments); };
})();
</script>"""

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse}td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right}
.figure{margin:1.5em 0}.note{color:#777;font-style:italic}#page-errors{color:#b00}"""


def render(record: StudyRecord, figures: list) -> str:
    """The page: a summary, then each figure (plotly.js inlined once, so it opens without a network)."""
    from plotly.offline import get_plotlyjs

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>sweeper report: "
             f"{html.escape(record.name)}</title><style>{_STYLE}</style>",
             f"<script>{get_plotlyjs()}</script></head><body>", _ERROR_PANEL,
             f"<h1>Study {html.escape(record.name)}</h1>", _summary(record)]
    for figure in figures:
        parts.append(f"<div class='figure' id='section-{figure.key}'><h2>{html.escape(figure.title)}</h2>")
        if figure.figure is None:
            parts.append(f"<p class='note'>Not drawn: {html.escape(figure.note)}.</p>")
        else:
            parts.append(figure.figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{figure.key}"))
        parts.append("</div>")
    parts.append(f"<p class='note'>Written by sweeper on {time.strftime('%Y-%m-%d %H:%M:%S')}.</p></body></html>")
    return "\n".join(parts)


def _summary(record: StudyRecord) -> str:
    best = record.best()
    counts = ", ".join(f"{record.count(state)} {state}" for state in ("complete", "pruned", "failed"))
    lines = [f"<p>Engine {html.escape(record.backend)}, dataset {html.escape(record.dataset)}, objective: "
             f"{record.direction} {html.escape(record.metric)}. Trials: {counts}.</p>"]
    if best is not None:
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in sorted(best.params.items()))
        lines.append(f"<p>Best: trial {best.number}, {html.escape(record.metric)} {best.value:.4f}.</p>"
                     f"<table>{rows}</table>")
    return "\n".join(lines)


def _write_atomically(out: Path, page: str) -> None:
    """Write beside `out`, then rename: a reader never sees half a page."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        staging.write_text(page, encoding="utf-8")
        os.replace(staging, out)
    finally:
        staging.unlink(missing_ok=True)


def _log_on_search_run(client, record: StudyRecord, page: Path) -> str | None:
    """The page on the study's latest search run, so the MLflow UI shows the same figures (not on a read-only
    store: the page is written all the same)."""
    if store_is_read_only(client):
        return None
    search = latest_search(client, client.get_experiment(record.experiment_id))
    if search is None:
        return None
    run_id = search.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "report.html"
        copy.write_text(page.read_text(encoding="utf-8"), encoding="utf-8")
        client.log_artifact(run_id, str(copy), artifact_path=REPORT_ARTIFACTS)
    return run_id
