"""`Sweep`: a study's sweep from Python, to look at, export and reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.domain.events import SweepResult


class Sweep:
    """A study's sweep: what `sweeper.search` returns and `sweeper.load` reads back (from the same MLflow store the
    command line writes; `sweeper ui` shows it).

    Example:
        >>> s = sweeper.search("fashion", trials=5, max_epochs=3)
        >>> s.best_value, s.best_params, s.test_metrics
        >>> s.trials().head()
        >>> s.export("best-fashion/")
    """

    def __init__(self, result: SweepResult, tracking_uri: str | None = None):
        self._result, self.tracking_uri = result, tracking_uri

    @property
    def study(self) -> str:
        return self._result.study

    @property
    def run_id(self) -> str:
        """The MLflow run of the sweep (the parent of every trial's run)."""
        return self._result.parent_run_id

    @property
    def objective(self) -> str:
        return self._result.objective_metric

    @property
    def best_value(self) -> float | None:
        """The best trial's objective (validation) value; None before a trial completed."""
        return self._result.best.value if self._result.best else None

    @property
    def best_params(self) -> dict:
        """The best trial's sampled parameters (units_0, units_1, ... for the layers)."""
        return dict(self._result.best.params) if self._result.best else {}

    @property
    def best_trial(self) -> int | None:
        return self._result.best.number if self._result.best else None

    @property
    def test_metrics(self) -> dict:
        """The final model's metrics on the test split (test_accuracy, test_loss, ...)."""
        return dict(self._result.test_metrics)

    @property
    def counts(self) -> dict:
        """Trials by state: complete, pruned, failed, interrupted, running."""
        return dict(self._result.counts)

    @property
    def ui_url(self) -> str:
        """The study's page in the MLflow UI (`sweeper ui` serves it for the embedded store)."""
        from sweeper.usecases.ui import study_page

        return study_page(self.tracking_uri, self._result.experiment_id)

    def best_model(self) -> Any:
        """The final model, as `export` writes it and the registry holds it (a Keras model)."""
        from sweeper.usecases.export import final_model

        return final_model(self.study, tracking_uri=self.tracking_uri)

    def trials(self, sort: str = "objective") -> Any:
        """One row per trial, the columns of `sweeper trials --csv` (best first, or sort="number"): a DataFrame."""
        import pandas as pd

        from sweeper.usecases.studies import load_study

        rows = [t.row() for t in load_study(self.study, self.tracking_uri).sorted_trials(sort)]
        return pd.DataFrame(rows, columns=list(dict.fromkeys(key for row in rows for key in row)))

    def export(self, path: str | Path, formats: tuple[str, ...] | list[str] = ("keras",), *, retrain: bool = False,
               trial_model: bool = False, force: bool = False) -> Path:
        """Write the final model in each of `formats` (keras, savedmodel, onnx, tflite) with its card into the
        folder `path`, each file checked by loading it back; returns the folder."""
        from sweeper.usecases.export import export_best

        return export_best(self.study, path, formats=formats, retrain=retrain, trial_model=trial_model,
                           tracking_uri=self.tracking_uri, force=force).directory

    def report(self, path: str | Path = "report.html") -> Path:
        """The study's figures as one self-contained HTML page (also logged on its search run)."""
        from sweeper.usecases.report import build_report

        return build_report(self.study, path, tracking_uri=self.tracking_uri).path

    def plot(self) -> Any:
        """The optimisation history (each trial's objective and the running best): a plotly figure."""
        from sweeper.usecases.report import history_figure

        return history_figure(self.study, tracking_uri=self.tracking_uri)

    def _repr_html_(self) -> str:
        from sweeper.present.notebook import summary_html

        return summary_html(self._result)

    def __repr__(self) -> str:
        best = f"best {self.objective} {self.best_value:.4f} (trial {self.best_trial})" if self._result.best \
            else "no complete trial yet"
        tests = ", ".join(f"{k} {v:.4f}" for k, v in self.test_metrics.items())
        return f"<Sweep {self.study}: {best}{'; ' + tests if tests else ''}>"
