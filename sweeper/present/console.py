"""What the user sees: the live display of a sweep, and the tables printed at the end."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from sweeper.domain.events import SweepListener, SweepResult
from sweeper.domain.wording import baseline_line, final_model_line, plural
from sweeper.runtime.setup import keras_backend

_SHOWN_PARAMS = ("n_layers", "learning_rate", "batch_size", "optimizer", "dropout", "activation")
_PARAM_HEADERS = ("lr", "batch", "optimizer", "dropout", "activation")  # of _SHOWN_PARAMS[1:]
_STYLES = {"complete": "green", "pruned": "yellow", "failed": "red", "interrupted": "magenta"}


class LiveProgress(SweepListener):
    """Trials done of the budget, the running trial's epoch, the best value so far; a line per trial. With several
    workers (`worker(i)`), an epoch bar per worker and lines marked with the worker's number."""

    def __init__(self, console: Console, metric: str, direction: str, max_epochs: int, budget: float | None = None):
        self.console, self.metric, self.max_epochs = console, metric, max_epochs
        self.maximize = direction == "maximize"
        self.best = None
        self.splits_said = False
        self.started = {}
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[note]}"), TimeElapsedColumn()]
        self.progress = Progress(*columns, *([_TimeLeft(budget)] if budget else []), console=console,
                                 transient=True, disable=not console.is_terminal)
        self.trials = self.progress.add_task("trials", total=None, note="")
        self.epochs = self.progress.add_task("epochs", total=max_epochs, note="")
        self._workers: dict[int, _WorkerProgress] = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def worker(self, index):
        if index not in self._workers:
            if not self._workers:
                self.progress.update(self.epochs, visible=False)  # each worker shows its own
            self._workers[index] = _WorkerProgress(self, index)
        return self._workers[index]

    def search_started(self, study, trials, counts, best):
        self.best = best
        done = counts["complete"] + counts["pruned"]
        if done:
            self.console.print(f"Resuming study [bold]{escape(study)}[/]: {plural(done, 'trial')} finished before "
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
        self.start_trial(number, self.epochs, f"trial {number}")

    def epoch_ended(self, number, epoch, logs):
        self.show_epoch(self.epochs, epoch, logs)

    def trial_ended(self, number, state, value, note=""):
        self.end_trial(number, state, value, note, "")

    def data_loaded(self, splits):
        if not self.splits_said:  # every worker of a pool says it; once is enough
            self.splits_said = True
            self.console.print(f"Data: {splits}")

    def refit_started(self, trial_number, epochs, member=1):
        if member > 1:
            self.console.print(f"retraining it again from another seed, to average with the first (retraining "
                               f"{member}; --ensemble 1 skips this)")
        else:
            self.console.print(f"retraining trial {trial_number}'s configuration on training + validation data for "
                               f"{plural(epochs, 'epoch')} (--no-refit skips this)")
        self.progress.reset(self.epochs, total=epochs, description="refit", note="", visible=True)

    def refit_epoch_ended(self, epoch, logs):
        shown = next((name for name in ("accuracy", "loss") if name in logs), None)
        self.progress.update(self.epochs, completed=epoch, note=f"{shown} {_fmt(logs[shown])}" if shown else "")

    def final_step(self, what):
        self.progress.update(self.trials, description="final model", note=what)

    def start_trial(self, number: int, bar, description: str) -> None:
        self.started[number] = time.perf_counter()
        self.progress.reset(bar, total=self.max_epochs, description=description, note="")

    def show_epoch(self, bar, epoch: int, logs: dict) -> None:
        self.progress.update(bar, completed=epoch, note=f"{self.metric} {_fmt(logs.get(self.metric))}")

    def end_trial(self, number: int, state: str, value, note: str, prefix: str) -> None:
        seconds = time.perf_counter() - self.started.pop(number, time.perf_counter())
        if state != "failed":
            self.progress.advance(self.trials)
        if value is not None and (self.best is None or (value > self.best) == self.maximize):
            self.best = value
        self.progress.update(self.trials, note=self._best_note())
        detail = f"{self.metric} {_fmt(value)}" if value is not None else escape(note)
        self.console.print(f"{escape(prefix)}trial {number:>3} [{_STYLES[state]}]{state:<8}[/] {detail}  "
                           f"({seconds:.1f}s)")

    def _best_note(self):
        return f"best {self.metric} {_fmt(self.best)}"


class _TimeLeft(ProgressColumn):
    """On the trials bar: what is left of the sweep's --timeout (the final model included)."""

    def __init__(self, budget: float):
        super().__init__()
        self.budget = budget

    def render(self, task) -> Text:
        if task.description not in ("trials", "final model") or task.elapsed is None:
            return Text("")
        left = max(0, int(self.budget - task.elapsed))
        return Text(f"{left // 60}:{left % 60:02d} left", style="cyan")


class _WorkerProgress(SweepListener):
    """The events of one worker of several: its own epoch bar, its lines marked `[worker i]`; the trials done and
    the best value are the sweep's, kept by the display."""

    def __init__(self, display: LiveProgress, index: int):
        self.display, self.prefix = display, f"[worker {index}] "
        self.epochs = display.progress.add_task(f"worker {index}", total=display.max_epochs, note="")

    def trial_started(self, number, params):
        self.display.start_trial(number, self.epochs, escape(f"{self.prefix}trial {number}"))

    def epoch_ended(self, number, epoch, logs):
        self.display.show_epoch(self.epochs, epoch, logs)

    def trial_ended(self, number, state, value, note=""):
        self.display.end_trial(number, state, value, note, self.prefix)

    def data_loaded(self, splits):
        self.display.data_loaded(splits)


def banner(plan) -> str:
    """What a sweep is about to do, in two lines that fit 80 columns."""
    space = plan.space
    within = f", {_minutes(plan.timeout)} in all" if plan.timeout else ""  # the final model included
    on = "" if plan.cluster else f", Keras on {keras_backend()}"  # a cluster's workers train on their own
    return (f"Sweeping [bold]{escape(plan.dataset)}[/]: study [bold]{escape(plan.study)}[/], "
            f"{plural(space.trials, 'trial')} of up to {plural(space.max_epochs, 'epoch')}{within}\n"
            f"Engine {plan.backend}, algorithm {plan.algorithm}, pruner {plan.pruner}{on}")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _unfinished(counts: dict) -> str:
    interrupted = f", {counts['interrupted']} interrupted" if counts.get("interrupted") else ""
    return f"{counts['failed']} failed{interrupted}"


def count_line(counts: dict, states=("complete", "pruned", "failed", "interrupted")) -> str:
    """E.g. `3 complete, 2 pruned, 0 failed, 1 interrupted trials` (interrupted only when there are some)."""
    shown = [f"{counts.get(s, 0)} {s}" for s in states if s != "interrupted" or counts.get(s)]
    total = sum(counts.get(s, 0) for s in states)
    return ", ".join(shown) + (" trial" if total == 1 else " trials")


def summary(result: SweepResult, command: str = "sweeper") -> Group:
    """The end-of-sweep report: best trials, the best model's test metrics, where to look next (`command`: how
    this shell runs sweeper, e.g. .venv/bin/sweeper, so that the hints work as typed)."""
    counts = result.counts
    parts = [f"Study [bold]{result.study}[/]: {count_line(counts)}."]
    if result.already_complete:
        parts.append("Its budget was already spent and its final model made: nothing to run (--trials N for more "
                     "trials). Its last sweep's result:")
    if result.best is None:
        parts.append("No trial completed, so there is no best model yet.")
        return Group(*parts)
    metric = result.objective_metric.removeprefix("val_")
    rows = []
    for trial in result.top:
        p = _texts(trial.params)
        rows.append([str(trial.number), _fmt(trial.value), _fmt(trial.epochs, 0), _units(p),
                     *(_fmt_param(p.get(name)) for name in _SHOWN_PARAMS[1:])])
    parts.append(FittedTable(f"Best trials by {result.objective_metric}",
                             ["trial", metric, "epochs", "units", *_PARAM_HEADERS], rows))
    if result.pareto:
        parts.append(_pareto_table(result, command))
    single = result.alone_test_metrics
    tests = ", ".join(f"{k} {v:.4f}" for k, v in single.items())
    tests = f"on the test split: {tests}" if tests else "not yet evaluated on the test split"
    if result.refit_epochs:
        trial_tests = ", ".join(f"{k} {v:.4f}" for k, v in result.trial_test_metrics.items())
        tests = (f"retrained on training + validation data for {plural(result.refit_epochs, 'epoch')}, {tests} "
                 f"(the trial's own model: {trial_tests})")
    parts.append(f"Best model: trial {result.best.number}, {result.objective_metric} {result.best.value:.4f}; "
                 f"{tests}")
    if final_line := final_model_line(result):
        parts.append(final_line)
    if result.baseline_metrics:
        parts.append(baseline_line(result.baseline, result.baseline_metrics, result.test_metrics))
    if result.finished_elsewhere:
        parts.append("Other workers still run trials of this study: the last to finish evaluates the best model "
                     "on the test split, registers it and ends the sweep run.")
    if result.model_version:
        parts.append(f"Registered in MLflow as models:/{result.study}@champion (version {result.model_version}).")
    # Commands to copy: never broken across lines (a narrow terminal wraps them itself, whole when copied)
    parts += [_whole(f"\nBrowse every trial:  {command} ui"),
              _whole(f"Export the best model:  {command} export {result.study} --out best-{result.study}/")]
    return Group(*parts)


def _whole(line: str) -> Text:
    """A line never broken by the console (print it with crop=False); a narrow terminal wraps it itself."""
    text = Text(line)
    text.no_wrap, text.overflow = True, "ignore"
    return text


def _texts(params: dict) -> dict[str, str]:
    """A trial's parameters as text, as the tables show them."""
    return {name: str(value) for name, value in params.items()}


def _units(params: dict) -> str:
    """Layer widths as text, e.g. 256-128, from a trial's parameters (units_0, units_1, ...)."""
    if params.get("n_layers") == "0":
        return "linear"
    return "-".join(str(params[f"units_{i}"]) for i in range(int(params.get("n_layers", 0)))
                    if f"units_{i}" in params)


def _pareto_table(result: SweepResult, command: str) -> FittedTable:
    """Two objectives: the trials no other beats on both, cheapest first."""
    metric = result.objective_metric.removeprefix("val_")
    rows = []
    for trial in result.pareto:
        p = _texts(trial.params)
        rows.append([str(trial.number), _fmt(trial.value),
                     f"{trial.cost:,.0f}" if result.cost_metric == "param_count" else f"{trial.cost:.3f}", _units(p),
                     _fmt_param(p.get("learning_rate")), p.get("optimizer", "")])
    return FittedTable(f"Pareto front: {metric} against {result.cost_metric}",
                       ["trial", metric, result.cost_metric, "units", "lr", "optimizer"], rows,
                       optional=("optimizer", "lr"),
                       caption=f"Export the smallest model within 0.005 of the best: {command} export {result.study} "
                               f"--pick smallest-within 0.005 --out best-small/")


def trials_table(record, order: str, result: SweepResult | None = None) -> FittedTable:
    """`sweeper trials`: one row per trial, with the parameters that shape an MLP; under it the final model's
    test figures beside the baseline's (when a sweep made them)."""
    rows = []
    for trial in record.sorted_trials(order):
        p = _texts(trial.params)
        rows.append([str(trial.number), f"[{_STYLES.get(trial.state, 'white')}]{trial.state}[/]", _fmt(trial.value),
                     _fmt(trial.seconds, 1), _fmt(trial.epochs, 0), _units(p),
                     *(_fmt_param(p.get(name)) for name in _SHOWN_PARAMS[1:])])
    return FittedTable(f"Study {escape(record.name)}: {record.direction} {record.metric}",
                       ["trial", "state", record.metric, "seconds", "epochs", "units", *_PARAM_HEADERS], rows,
                       optional=("activation", "dropout", "seconds", "batch", "epochs"), caption=_final_line(result))


def _final_line(result: SweepResult | None) -> str | None:
    if result is None or not result.test_metrics:
        return None
    tests = ", ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items())
    line = f"Final model (trial {result.best.number}'s configuration): {tests}." if result.best else None
    if line and result.baseline_metrics:
        line += " " + baseline_line(result.baseline, result.baseline_metrics, result.test_metrics)
    return line


def studies_table(records) -> FittedTable:
    """`sweeper studies`: every study in the store."""
    counted = ("complete", "pruned", "failed", "interrupted")
    rows = []
    for record in records:
        best = record.best()
        rows.append([escape(record.name), record.backend, record.dataset, f"{record.direction[:3]} {record.metric}",
                     *(str(record.count(state)) for state in counted), _fmt(best and best.value),
                     str(best.number) if best else "-"])
    return FittedTable("Studies", ["study", "engine", "dataset", "objective", *counted, "best", "best trial"], rows,
                       optional=("dataset", "engine", "best trial", "interrupted"),
                       left=("study", "engine", "dataset", "objective"))


class FittedTable:
    """A table drawn in the width it is given by leaving out whole columns (`optional`, the first named going
    first) rather than cutting words; its caption names what was left out."""

    def __init__(self, title: str, headers: list[str], rows: list[list[str]], *,
                 optional=("activation", "dropout", "batch", "epochs"), left=("state", "optimizer", "activation"),
                 caption: str | None = None):
        self.title, self.headers, self.rows, self.optional, self.left = title, headers, rows, optional, left
        self.caption = caption

    def __rich_console__(self, console, options):
        shown, dropped = list(self.headers), []
        table = self.table(shown)
        for header in (h for h in self.optional if h in self.headers):
            if _natural_width(console, options, table) <= options.max_width:
                break
            shown.remove(header)
            dropped.append(header)
            table = self.table(shown, dropped)
        yield table

    def table(self, shown: list[str], dropped: list[str] = ()) -> Table:
        notes = [self.caption] if self.caption else []
        if dropped:
            notes.append(f"Left out to fit the terminal: {', '.join(dropped)} (a wider terminal, or --csv, shows "
                         f"them).")
        table = Table(title=self.title, padding=(0, 1), pad_edge=False, caption=" ".join(notes) or None)
        columns = [self.headers.index(header) for header in shown]
        for header in shown:
            table.add_column(header, justify="left" if header in self.left else "right", no_wrap=True)
        for row in self.rows:
            table.add_row(*(row[i] for i in columns))
        return table


def _natural_width(console, options, table: Table) -> int:
    """The width a table takes when nothing squeezes it."""
    return table.__rich_measure__(console, options.update_width(100_000)).maximum


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
