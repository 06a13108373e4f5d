"""The report page: one self-contained HTML file of a study's figures (plotly.js inlined once, so it opens without
a network), with a panel that lists any error a figure raises in the browser."""

from __future__ import annotations

import html
import time

from sweeper.domain.records import TRIAL_STATES, StudyRecord

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
  console.error = function () {
    show(Array.prototype.join.call(arguments, " "));
    consoleError.apply(console, arguments);
  };
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
    counts = ", ".join(f"{record.count(state)} {state}" for state in TRIAL_STATES[:3])
    lines = [f"<p>Engine {html.escape(record.backend)}, dataset {html.escape(record.dataset)}, objective: "
             f"{record.direction} {html.escape(record.metric)}. Trials: {counts}.</p>"]
    if best is not None:
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in sorted(best.params.items()))
        lines.append(f"<p>Best: trial {best.number}, {html.escape(record.metric)} {best.value:.4f}.</p>"
                     f"<table>{rows}</table>")
    return "\n".join(lines)
