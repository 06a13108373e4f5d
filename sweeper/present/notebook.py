"""A sweep in a notebook cell: one block updated in place while it runs (trials done of the budget, the running
trial's epoch, the best value so far, the last trials), and the summary as an HTML table."""

from __future__ import annotations

import html
import time

from sweeper.domain.events import SweepListener, SweepResult
from sweeper.domain.wording import baseline_line, final_model_line, plural

_STYLE = "font-family:monospace;font-size:12px"
_COLORS = {"complete": "#2a7", "pruned": "#b80", "failed": "#c33", "interrupted": "#a3a"}
#: finished trials listed under the progress line
_SHOWN = 8


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (a cell can show HTML that updates in place)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class NotebookProgress(SweepListener):
    """The live display of a sweep in the cell that runs it."""

    def __init__(self, study: str, metric: str, direction: str, max_epochs: int):
        from IPython.display import HTML, display

        self.study, self.metric, self.max_epochs = study, metric, max_epochs
        self.maximize = direction == "maximize"
        self.total, self.done, self.best, self.running, self.lines = None, 0, None, "", []
        self.started, self.shown_at = {}, 0.0
        self._html = HTML
        self.handle = display(HTML(self._render()), display_id=True)

    def search_started(self, study, trials, counts, best):
        self.total, self.done, self.best = trials, counts["complete"] + counts["pruned"], best
        self._show(force=True)

    def trial_started(self, number, params):
        self.started[number] = time.perf_counter()
        self.running = f"trial {number}: starting"
        self._show()

    def epoch_ended(self, number, epoch, logs):
        value = logs.get(self.metric)
        self.running = (f"trial {number}: epoch {epoch}/{self.max_epochs}"
                        + (f", {self.metric} {value:.4f}" if value is not None else ""))
        self._show()

    def trial_ended(self, number, state, value, note=""):
        seconds = time.perf_counter() - self.started.pop(number, time.perf_counter())
        if state != "failed":
            self.done += 1
        if value is not None and (self.best is None or (value > self.best) == self.maximize):
            self.best = value
        detail = f"{self.metric} {value:.4f}" if value is not None else note
        self.lines.append((number, state, detail, seconds))
        self.running = ""
        self._show(force=True)

    def refit_started(self, trial_number, epochs, member=1):
        again = f" again (retraining {member}, another seed)" if member > 1 else ""
        self.running = (f"final model: retraining trial {trial_number}'s configuration{again} for "
                        f"{plural(epochs, 'epoch')}")
        self._show(force=True)

    def refit_epoch_ended(self, epoch, logs):
        self.running = self.running.split(" (epoch")[0] + f" (epoch {epoch})"
        self._show()

    def final_step(self, what):
        self.running = f"final model: {what}"
        self._show(force=True)

    def finished(self) -> None:
        """The sweep is over: the block says so (its summary follows)."""
        self.running = "done"
        self._show(force=True)

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.shown_at > 0.5:  # a cell redrawn at most twice a second while epochs run
            self.shown_at = now
            self.handle.update(self._html(self._render()))

    def _render(self) -> str:
        budget = f"{self.done}/{self.total}" if self.total is not None else "starting"
        best = f"best {self.metric} {self.best:.4f}" if self.best is not None else f"best {self.metric} -"
        head = (f"<b>Study {html.escape(self.study)}</b>: trials {budget} &middot; {best}"
                + (f" &middot; {html.escape(self.running)}" if self.running else ""))
        rows = "".join(f"<tr><td>trial {n}</td><td style='color:{_COLORS.get(s, '#333')}'>{s}</td>"
                       f"<td>{html.escape(d)}</td><td>{sec:.1f}s</td></tr>" for n, s, d, sec in self.lines[-_SHOWN:])
        return f"<div style='{_STYLE}'>{head}<table>{rows}</table></div>"


def summary_html(result: SweepResult) -> str:
    """The end of a sweep as a notebook shows it: counts, the best trials, the final model's test metrics."""
    counts = ", ".join(f"{result.counts.get(s, 0)} {s}" for s in ("complete", "pruned", "failed"))
    parts = [f"<p><b>Study {html.escape(result.study)}</b>: {counts}.</p>"]
    if result.best is None:
        return "".join(parts) + "<p>No trial completed, so there is no best model yet.</p>"
    names = sorted({name for trial in result.top for name in trial.params})
    header = "".join(f"<th>{html.escape(n)}</th>" for n in ["trial", result.objective_metric, "epochs", *names])
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in
                                    [t.number, t.value, t.epochs, *(t.params.get(n, "") for n in names)]) + "</tr>"
                   for t in result.top)
    parts.append(f"<table><caption>Best trials by {html.escape(result.objective_metric)}</caption>"
                 f"<tr>{header}</tr>{rows}</table>")
    single = result.alone_test_metrics
    tests = ", ".join(f"{k} {v:.4f}" for k, v in single.items()) or "not yet evaluated"
    model = (f"retrained on training + validation data for {plural(result.refit_epochs, 'epoch')}"
             if result.refit_epochs else "the trial's own model")
    parts.append(f"<p>Best model: trial {result.best.number}, {result.objective_metric} {result.best.value:.4f}; "
                 f"{model}; on the test split: {tests}"
                 + (f"; registered as models:/{html.escape(result.study)}@champion." if result.model_version else
                    ".") + "</p>")
    if final_line := final_model_line(result):
        parts.append(f"<p>{html.escape(final_line)}</p>")
    if result.baseline_metrics:
        parts.append(f"<p>{html.escape(baseline_line(result.baseline, result.baseline_metrics, result.test_metrics))}"
                     f"</p>")
    return "".join(parts)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
