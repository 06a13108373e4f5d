"""What the user sees: the live display of a sweep, and the tables printed at the end."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .sweep import SweepListener, SweepResult

_SHOWN_PARAMS = ("n_layers", "learning_rate", "batch_size", "optimizer", "dropout", "activation")


class LiveProgress(SweepListener):
    """Trials done of the budget, the running trial's epoch, the best value so far; a line per trial."""

    def __init__(self, console: Console, metric: str, direction: str, max_epochs: int, prefix: str = ""):
        self.console, self.metric, self.max_epochs, self.prefix = console, metric, max_epochs, prefix
        self.maximize = direction == "maximize"
        self.best = None
        self.splits_said = False
        self.started = {}
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console,
                                 transient=True, disable=not console.is_terminal)
        self.trials = self.progress.add_task("trials", total=None, note="")
        self.epochs = self.progress.add_task("epochs", total=max_epochs, note="")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def search_started(self, study, trials, counts, best):
        self.best = best
        done = counts["complete"] + counts["pruned"]
        if done:
            trials_done = f"{done} trial{'s' if done > 1 else ''}"
            self.console.print(f"Resuming study [bold]{study}[/]: {trials_done} finished before "
                               f"({_unfinished(counts)}), best {self.metric} {_fmt(best)}")
        self.progress.update(self.trials, total=trials, completed=min(done, trials), note=self._best_note())

    def sweep_joined(self, parent_run_id):
        self.console.print(f"Joined the study's running sweep (MLflow run {parent_run_id}): trials count against "
                           f"one budget across every worker, nested under that run.")

    def trials_reaped(self, numbers):
        listed = ", ".join(map(str, numbers))
        self.console.print(f"Marked failed: trial {listed}, left running by a worker that died; each is run "
                           f"again once with the same parameters.")

    def trial_started(self, number, params):
        self.started[number] = time.perf_counter()
        self.progress.reset(self.epochs, total=self.max_epochs, description=f"trial {number}", note="")

    def epoch_ended(self, number, epoch, logs):
        value = logs.get(self.metric)
        self.progress.update(self.epochs, completed=epoch, note=f"{self.metric} {_fmt(value)}")

    def trial_ended(self, number, state, value, note=""):
        seconds = time.perf_counter() - self.started.pop(number, time.perf_counter())
        if state != "failed":
            self.progress.advance(self.trials)
        if value is not None and (self.best is None or (value > self.best) == self.maximize):
            self.best = value
        self.progress.update(self.trials, note=self._best_note())
        style = {"complete": "green", "pruned": "yellow", "failed": "red"}[state]
        detail = f"{self.metric} {_fmt(value)}" if value is not None else note
        self.console.print(f"{self.prefix}trial {number:>3} [{style}]{state:<8}[/] {detail}  ({seconds:.1f}s)")

    def data_loaded(self, splits):
        if not self.splits_said:  # every worker of a pool says it; once is enough
            self.splits_said = True
            self.console.print(f"{self.prefix}Data: {splits}")

    def refit_started(self, trial_number, epochs):
        self.console.print(f"{self.prefix}retraining trial {trial_number}'s configuration on training + validation "
                           f"data for {epochs} epochs (--no-refit skips this)")

    def _best_note(self):
        return f"best {self.metric} {_fmt(self.best)}"


def _unfinished(counts: dict) -> str:
    interrupted = f", {counts['interrupted']} interrupted" if counts.get("interrupted") else ""
    return f"{counts['failed']} failed{interrupted}"


def count_line(counts: dict, states=("complete", "pruned", "failed", "interrupted")) -> str:
    """E.g. `3 complete, 2 pruned, 0 failed, 1 interrupted trials` (interrupted only when there are some)."""
    shown = [f"{counts.get(s, 0)} {s}" for s in states if s != "interrupted" or counts.get(s)]
    total = sum(counts.get(s, 0) for s in states)
    return ", ".join(shown) + (" trial" if total == 1 else " trials")


def summary(result: SweepResult) -> Group:
    """The end-of-sweep report: best trials, the best model's test metrics, where to look next."""
    counts = result.counts
    parts = [f"Study [bold]{result.study}[/]: {count_line(counts)}."]
    if result.already_complete:
        parts.append("Its budget was already spent and its final model made: nothing to run (--trials N for more "
                     "trials). Its last sweep's result:")
    if result.best is None:
        parts.append("No trial completed, so there is no best model yet.")
        return Group(*parts)
    table = Table(title=f"Best trials by {result.objective_metric}", padding=(0, 1), pad_edge=False)
    headers = ("trial", result.objective_metric.removeprefix("val_"), "epochs", "units", "lr", "batch", "optimizer",
               "dropout", "activation")
    for header in headers:
        table.add_column(header, justify="left" if header in ("optimizer", "activation") else "right")
    for run in result.top:
        p, m = run.data.params, run.data.metrics
        units = _units(p)
        table.add_row(run.data.tags.get("trial_number", "?"), _fmt(m.get("objective")), _fmt(m.get("epochs"), 0),
                      units, *(_fmt_param(p.get(name)) for name in _SHOWN_PARAMS[1:]))
    parts.append(table)
    if result.pareto:
        parts.append(_pareto_table(result))
    tests = ", ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items())
    tests = f"on the test split: {tests}" if tests else "not yet evaluated on the test split"
    if result.refit_epochs:
        trial_tests = ", ".join(f"{k} {v:.4f}" for k, v in result.trial_test_metrics.items())
        tests = (f"retrained on training + validation data for {result.refit_epochs} epochs, {tests} (the trial's "
                 f"own model: {trial_tests})")
    parts.append(f"Best model: trial {result.best.trial_number}, {result.objective_metric} "
                 f"{result.best.objective:.4f}; {tests}")
    if result.finished_elsewhere:
        parts.append("Other workers still run trials of this study: the last to finish evaluates the best model "
                     "on the test split, registers it and ends the sweep run.")
    if result.model_version:
        parts.append(f"Registered in MLflow as models:/{result.study}@champion (version {result.model_version}).")
    parts.append(f"\nBrowse every trial:  sweeper ui\nExport the best model:  sweeper export {result.study} "
                 f"--out best-{result.study}/")
    return Group(*parts)


def _units(params: dict) -> str:
    """Layer widths as text, e.g. 256-128, from params as MLflow holds them (units_0, units_1, ...)."""
    return "-".join(str(params[f"units_{i}"]) for i in range(int(params.get("n_layers", 0)))
                    if f"units_{i}" in params)


def _pareto_table(result: SweepResult) -> Table:
    """Two objectives: the trials no other beats on both, cheapest first."""
    metric = result.objective_metric.removeprefix("val_")
    table = Table(title=f"Pareto front: {metric} against {result.cost_metric}", padding=(0, 1), pad_edge=False)
    for header in ("trial", metric, result.cost_metric, "units", "lr", "optimizer"):
        table.add_column(header, justify="left" if header == "optimizer" else "right")
    for run in result.pareto:
        p, m = run.data.params, run.data.metrics
        units = _units(p)
        cost = m[result.cost_metric]
        table.add_row(run.data.tags.get("trial_number", "?"), _fmt(m.get("objective")),
                      f"{cost:,.0f}" if result.cost_metric == "param_count" else f"{cost:.3f}", units,
                      _fmt_param(p.get("learning_rate")), p.get("optimizer", ""))
    table.caption = (f"Export the smallest model within 0.005 of the best: sweeper export {result.study} "
                     f"--pick smallest-within 0.005 --out best-small/")
    return table


def trials_table(record, order: str) -> Table:
    """`sweeper trials`: one row per trial, with the parameters that shape an MLP."""
    table = Table(title=f"Study {escape(record.name)}: {record.direction} {record.metric}", padding=(0, 1),
                  pad_edge=False)
    for header in ("trial", "state", record.metric, "seconds", "epochs", "units", "lr", "batch", "optimizer",
                   "dropout", "activation"):
        table.add_column(header, justify="left" if header in ("state", "optimizer", "activation") else "right")
    style = {"complete": "green", "pruned": "yellow", "failed": "red"}
    for trial in record.sorted_trials(order):
        p = {k: str(v) for k, v in trial.params.items()}
        units = _units(p)
        table.add_row(str(trial.number), f"[{style.get(trial.state, 'white')}]{trial.state}[/]", _fmt(trial.value),
                      _fmt(trial.seconds, 1), _fmt(trial.epochs, 0), units,
                      *(_fmt_param(p.get(name)) for name in _SHOWN_PARAMS[1:]))
    return table


def studies_table(records) -> Table:
    """`sweeper studies`: every study in the store."""
    table = Table(title="Studies", padding=(0, 1), pad_edge=False)
    counted = ("complete", "pruned", "failed", "interrupted")
    for header in ("study", "engine", "dataset", "objective", *counted, "best", "best trial"):
        table.add_column(header, justify="right" if header in (*counted, "best", "best trial") else "left")
    for record in records:
        best = record.best()
        table.add_row(escape(record.name), record.backend, record.dataset, f"{record.direction[:3]} {record.metric}",
                      *(str(record.count(state)) for state in counted),
                      _fmt(best and best.value), str(best.number) if best else "-")
    return table


def _fmt(value, digits=4):
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if digits else f"{value:.0f}"


def _fmt_param(text):
    if text is None:
        return "-"
    try:
        number = float(text)
    except ValueError:
        return text
    return text if number.is_integer() else f"{number:.3g}"


def worker_progress(index: int, metric: str, direction: str, max_epochs: int) -> LiveProgress:
    """A `--jobs` worker's listener: a plain line per trial on stderr, marked with the worker's number."""
    return LiveProgress(Console(stderr=True, force_terminal=False, width=120), metric, direction, max_epochs,
                        prefix=escape(f"[worker {index}] "))
