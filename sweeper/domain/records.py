"""A study as MLflow holds it: its trials and their curves, the same for every engine."""

from __future__ import annotations

from dataclasses import dataclass, field

from sweeper.engines.base import TRIAL_STATES as STATES  # one vocabulary for engines, records and summaries
from sweeper.store.tracking import find_experiment, parse_param


@dataclass
class TrialRecord:
    number: int
    state: str
    value: float | None  # the objective, for complete trials
    seconds: float | None  # wall time of the trial's run
    epochs: int | None
    params: dict
    run_id: str
    search_run_id: str
    cost: float | None = None  # the second objective of a two-objective study (e.g. param_count)


    def row(self) -> dict:
        """One flat row for --json/--csv: the columns of the table, then every parameter."""
        return {"number": self.number, "state": self.state, "objective": self.value,
                "seconds": None if self.seconds is None else round(self.seconds, 2), "epochs": self.epochs,
                **dict(sorted(self.params.items())), "run_id": self.run_id}


@dataclass
class StudyRecord:
    name: str
    experiment_id: str
    backend: str
    dataset: str
    metric: str
    direction: str
    trials: list[TrialRecord] = field(default_factory=list)
    cost_metric: str = ""  # a two-objective study's second objective, minimised

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)

    def completed(self) -> list[TrialRecord]:
        """Complete trials, best first."""
        done = [t for t in self.trials if t.state == "complete" and t.value is not None]
        return sorted(done, key=lambda t: t.value, reverse=self.maximize)

    def sorted_trials(self, by: str) -> list[TrialRecord]:
        """By trial number, or by objective (best first; trials without one last, by number)."""
        if by == "number":
            return list(self.trials)
        return self.completed() + [t for t in self.trials if t.state != "complete" or t.value is None]

    def best(self) -> TrialRecord | None:
        completed = self.completed()
        return completed[0] if completed else None

    def row(self) -> dict:
        """One flat row for `sweeper studies --json/--csv`."""
        best = self.best()
        return {"study": self.name, "engine": self.backend, "dataset": self.dataset, "metric": self.metric,
                "direction": self.direction, **{s: self.count(s) for s in STATES[:4]},
                "best": best and best.value, "best_trial": best and best.number}


def load_study(client, name: str) -> StudyRecord:
    experiment = find_experiment(client, name)
    tags = experiment.tags
    record = StudyRecord(name, experiment.experiment_id, tags.get("backend", "?"), tags.get("dataset", "?"),
                         tags.get("objective_metric", "objective"), tags.get("objective_direction", "maximize"))
    runs = client.search_runs([experiment.experiment_id], "tags.run_kind = 'trial'", max_results=50_000)
    record.cost_metric = tags.get("objective_cost", "")
    record.trials = sorted((_trial(run, client, record.metric, record.cost_metric) for run in runs),
                           key=lambda t: (t.number, t.run_id))
    return record


def _trial(run, client, metric: str, cost_metric: str) -> TrialRecord:
    tags, metrics, info = run.data.tags, run.data.metrics, run.info
    seconds = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
    return TrialRecord(int(tags.get("trial_number", -1)), tags.get("state", "running"),
                       metrics.get("objective") if tags.get("state") == "complete" else None, seconds,
                       _epochs(run, client, metric), {k: parse_param(v) for k, v in run.data.params.items()},
                       info.run_id, tags.get("mlflow.parentRunId", ""), metrics.get(cost_metric))


def _epochs(run, client, metric: str) -> int | None:
    """Epochs trained: logged at the end of a complete trial, else the last epoch it reported."""
    if "epochs" in run.data.metrics:
        return int(run.data.metrics["epochs"])
    steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
    return max(steps) if steps else None


def all_studies(client) -> list[StudyRecord]:
    """Every study in the store (experiments that sweeper tagged with a backend), with its trials."""
    studies = []
    for experiment in client.search_experiments():
        if "backend" in experiment.tags:
            studies.append(load_study(client, experiment.name))
    return sorted(studies, key=lambda s: s.name)


def curves(client, trials, metric: str) -> dict[int, list[tuple[int, float]]]:
    """Per-epoch `metric` of each trial, `number: [(epoch, value), ...]`."""
    return {t.number: sorted((m.step, m.value) for m in client.get_metric_history(t.run_id, metric))
            for t in trials}
