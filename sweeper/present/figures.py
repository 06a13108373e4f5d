"""The report's figures, drawn by Optuna's visualisation module from the MLflow records of any engine.

A Keras Tuner study has no Optuna storage, so every study is rebuilt as an in-memory Optuna study from
its MLflow trial runs (parameters, states, objective and per-epoch values); Optuna then draws the history,
the importances, the parallel coordinates and the slices the same way for both engines.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from sweeper.domain.records import StudyRecord, TrialRecord

#: Trials drawn in the learning-curve figure: the best complete ones, against every pruned one.
TOP_CURVES = 5


@dataclass
class Figure:
    key: str  # file name stem, e.g. "optimization_history"
    title: str
    figure: object | None  # plotly Figure, or None with a note saying why it cannot be drawn
    note: str = ""


def optuna_study(record: StudyRecord, curves: dict[int, list[tuple[int, float]]], space=None):
    """An in-memory Optuna study holding the record's complete and pruned trials; each parameter's distribution
    (so its axis: log or linear) is the one in the study's `space` when known, and fixed parameters are left
    out."""
    import optuna

    study = optuna.create_study(direction=record.direction, study_name=record.name)
    distributions = _space_distributions(space) if space is not None else _distributions(record.trials)
    for trial in record.trials:
        if trial.state not in ("complete", "pruned"):
            continue
        params = {k: v for k, v in trial.params.items() if k in distributions and _holds(distributions[k], v)}
        values = {step: value for step, value in curves.get(trial.number, []) if math.isfinite(value)}
        state = optuna.trial.TrialState.COMPLETE if trial.state == "complete" else optuna.trial.TrialState.PRUNED
        study.add_trial(optuna.trial.create_trial(
            state=state, value=trial.value if trial.state == "complete" else None, params=params,
            distributions={k: distributions[k] for k in params}, intermediate_values=values,
            user_attrs={"number": trial.number}))
    return study


def _space_distributions(space) -> dict:
    """The Optuna distribution of each tuned parameter of a space, under its engine names (units_0, ...)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from sweeper.domain.space import Choice, FloatRange, IntRange

    distributions = {}
    for name in space.tuned():
        spec = space.params[name]
        if isinstance(spec, IntRange):
            distribution = IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
        elif isinstance(spec, FloatRange):
            distribution = FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
        else:
            assert isinstance(spec, Choice)
            distribution = CategoricalDistribution(list(spec.choices))
        names = [f"units_{i}" for i in range(space.max_layers)] if name == "units" else [name]
        distributions.update(dict.fromkeys(names, distribution))
    return distributions


def _holds(distribution, value) -> bool:
    """Whether a trial's value lies in the distribution (a value from outside it is left out of the figures)."""
    try:
        return distribution._contains(distribution.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def _distributions(trials: list[TrialRecord]) -> dict:
    """Each parameter's distribution, spanning the values the trials took (numbers) or their set (others), for a
    study that recorded no space; a parameter that never varied is taken as fixed and left out."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    seen: dict[str, list] = {}
    for trial in trials:
        for name, value in trial.params.items():
            seen.setdefault(name, []).append(value)
    distributions = {}
    for name, values in seen.items():
        if len(set(map(str, values))) == 1:
            continue
        if all(isinstance(v, bool) or v is None or isinstance(v, str) for v in values):
            distributions[name] = CategoricalDistribution(sorted(set(values), key=str))
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            distributions[name] = IntDistribution(min(values), max(values))
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            low, high = float(min(values)), float(max(values))
            distributions[name] = FloatDistribution(low, high, log=low > 0 and high / low > 20)
    return distributions


def history(record: StudyRecord, study=None) -> Figure:
    """Each trial's objective and the running best (`study`: the record rebuilt by `optuna_study`, if at hand)."""
    from optuna import visualization as vis

    study = study or optuna_study(record, {})
    return _draw("optimization_history", "Optimisation history (with the running best)", len(record.completed()) >= 1,
                 "no complete trial yet", lambda: vis.plot_optimization_history(study, target_name=record.metric))


def study_figures(record: StudyRecord, curves: dict[int, list[tuple[int, float]]], space=None) -> list[Figure]:
    """History, importances, parallel coordinates, slices and learning curves of one study (`space`: the one it
    swept, for the parameters' axes)."""
    from optuna import visualization as vis

    study = optuna_study(record, curves, space)
    complete = len(record.completed())
    target_name = record.metric
    figures = [
        history(record, study),
        _draw("param_importances", "Parameter importances (PED-ANOVA, Optuna's default evaluator)",
              complete >= 3 and _varied(study),
              "needs at least 3 complete trials whose parameters differ",
              lambda: vis.plot_param_importances(study, target_name=target_name)),
        _draw("parallel_coordinate", "Parallel coordinates", complete >= 2, "needs at least 2 complete trials",
              lambda: vis.plot_parallel_coordinate(study, target_name=target_name)),
        _draw("slice", "Objective against each parameter", complete >= 1, "no complete trial yet",
              lambda: _fit_page(vis.plot_slice(study, target_name=target_name))),
        _draw("learning_curves", f"Learning curves: {record.metric} per epoch, top trials against pruned ones",
              any(curves.values()), "no trial reported an epoch yet", lambda: learning_curves(record, curves)),
    ]
    if record.cost_metric:
        costed = [t for t in record.completed() if t.cost is not None]
        figures.insert(1, _draw("pareto_front", f"Pareto front: {record.metric} against {record.cost_metric}",
                                len(costed) >= 1, "no complete trial yet",
                                lambda: vis.plot_pareto_front(_two_objective_study(record, costed),
                                                              target_names=[record.metric, record.cost_metric])))
    return figures


def _fit_page(figure):
    """Optuna sizes the slice plot at 300 px a parameter, past the page's edge: let it take the page's width."""
    figure.layout.width = None
    figure.update_layout(autosize=True)
    return figure


def _two_objective_study(record: StudyRecord, trials: list[TrialRecord]):
    """An in-memory two-objective Optuna study of the complete trials (for its Pareto-front plot)."""
    import optuna

    study = optuna.create_study(directions=[record.direction, "minimize"], study_name=record.name)
    for trial in trials:
        study.add_trial(optuna.trial.create_trial(values=[trial.value, trial.cost], params={}, distributions={},
                                                  user_attrs={"number": trial.number}))
    return study


def _varied(study) -> bool:
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    return len({tuple(sorted(t.params.items())) for t in complete}) > 1 and len({t.value for t in complete}) > 1


def _draw(key, title, possible, why_not, draw) -> Figure:
    if not possible:
        return Figure(key, title, None, why_not)
    try:
        with warnings.catch_warnings():  # "experimental", "few trials per regime": the page says what it drew
            warnings.simplefilter("ignore")
            return Figure(key, title, draw())
    except (ValueError, RuntimeError) as exc:  # e.g. importances of values it cannot split
        return Figure(key, title, None, f"cannot be drawn for this study: {exc}")


def learning_curves(record: StudyRecord, curves: dict[int, list[tuple[int, float]]]):
    import plotly.graph_objects as go

    top = record.completed()[:TOP_CURVES]
    pruned = [t for t in record.trials if t.state == "pruned"]
    figure = go.Figure()
    for trial in top:
        points = curves.get(trial.number, [])
        figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                    name=f"trial {trial.number} ({trial.value:.4f})"))
    for i, trial in enumerate(pruned):
        points = curves.get(trial.number, [])
        figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines",
                                    line={"color": "rgba(150,150,150,0.6)", "dash": "dot"},
                                    name="pruned" if i == 0 else f"pruned {trial.number}", legendgroup="pruned",
                                    showlegend=i == 0))
    figure.update_layout(title="Learning curves", xaxis_title="epoch", yaxis_title=record.metric)
    return figure


def confusion_figure(matrix, class_names):
    import plotly.graph_objects as go

    names = list(class_names)
    figure = go.Figure(go.Heatmap(z=matrix, x=names, y=names, colorscale="Blues", text=matrix,
                                  texttemplate="%{text}", hovertemplate="true %{y}<br>predicted %{x}: %{z}"))
    figure.update_layout(title="Confusion matrix of the best model (test split)", xaxis_title="predicted",
                         yaxis_title="true", yaxis_autorange="reversed")
    return figure


def per_class_figure(accuracies, class_names):
    import plotly.graph_objects as go

    figure = go.Figure(go.Bar(x=list(class_names), y=list(accuracies), text=[f"{a:.3f}" for a in accuracies]))
    figure.update_layout(title="Per-class accuracy of the best model (test split)", yaxis_range=[0, 1])
    return figure
