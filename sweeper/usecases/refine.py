"""Coarse to fine: a second-stage space narrowed around a study's top trials, written out as YAML, and a
sweep of it warm-started with those trials (added to the new Optuna study as complete, not retrained).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from sweeper.domain.errors import UsageError
from sweeper.domain.records import StudyRecord, TrialRecord
from sweeper.domain.space import Choice, FloatRange, IntRange, SearchSpace, dump_space, load_space
from sweeper.store import Store
from sweeper.usecases.plan import SweepPlan, make_plan


@dataclass
class Refinement:
    space: SearchSpace  # narrowed, with its budget
    top: list[TrialRecord]  # the stage-1 trials it was narrowed around (best first), the warm start
    changes: list[str]  # each narrowed parameter, in words


def narrow(space: SearchSpace, record: StudyRecord, *, top: int, margin: float) -> Refinement:
    """Shrink each range to cover the top trials' values plus `margin` of their spread on each side (within
    the old bounds); keep only the choices the top trials made. A parameter none of them used is kept."""
    best = record.completed()[:top]
    if len(best) < 2:
        raise UsageError(f"study '{record.name}' has {len(best)} complete trial(s); refining needs at least 2 "
                         f"(run more trials first: sweeper search {record.dataset} --study {record.name})")
    params, changes = dict(space.params), []
    for name, spec in space.params.items():
        values = _values_of(name, best)
        narrowed = _narrow_spec(spec, values, margin) if values else spec
        if narrowed != spec:
            params[name] = narrowed
            changes.append(f"{name}: {_words(spec)} -> {_words(narrowed)}")
    refined = dataclasses.replace(space, params=MappingProxyType(params), start=(), source=None,
                                  description=f"Refined from study {record.name}: its top {len(best)} trials "
                                              f"(sweeper refine, margin {margin:g}).")
    return Refinement(refined, best, changes)


def _values_of(name: str, trials: list[TrialRecord]) -> list:
    if name == "units":  # one spec for every layer's units_i
        return [v for t in trials for k, v in t.params.items() if k.startswith("units_")]
    return [t.params[name] for t in trials if name in t.params]


def _narrow_spec(spec, values, margin):
    if isinstance(spec, Choice):
        return Choice(tuple(c for c in spec.choices if c in values))
    if isinstance(spec, (IntRange, FloatRange)):
        low, high = _widened(min(values), max(values), spec, margin)
        step = spec.step or (1 if isinstance(spec, IntRange) else None)
        if step:  # outwards onto the range's grid
            low = spec.low + math.floor((low - spec.low) / step) * step
            high = spec.low + math.ceil((high - spec.low) / step) * step
        kind = int if isinstance(spec, IntRange) else _tidy
        return dataclasses.replace(spec, low=kind(max(low, spec.low)), high=kind(min(high, spec.high)))
    return spec


def _widened(lo, hi, spec, margin):
    """[lo, hi] grown by `margin` of its width on each side (in log space for a log range); a single value
    gets `margin` of the old range's width instead."""
    if spec.log:
        a, b, full = math.log(lo), math.log(hi), math.log(spec.high) - math.log(spec.low)
        pad = margin * ((b - a) or full)
        return math.exp(a - pad), math.exp(b + pad)
    pad = margin * ((hi - lo) or (spec.high - spec.low))
    return lo - pad, hi + pad


def _tidy(x: float) -> float:
    return float(f"{x:.3g}")


def _words(spec) -> str:
    if isinstance(spec, (IntRange, FloatRange)):
        return f"{spec.low:g}..{spec.high:g}{' log' if spec.log else ''}"
    if isinstance(spec, Choice):
        return "{" + ", ".join(map(str, spec.choices)) + "}"
    return repr(getattr(spec, "value", spec))


def write_refined(refinement: Refinement, path: Path, *, force: bool = False) -> Path:
    """The narrowed space as a YAML file a person can read, edit and pass to `sweeper search --space`;
    it must load back to the same space."""
    if path.exists() and not force:
        raise UsageError(f"{path} exists; choose another --out or add --force to replace it")
    top = len(refinement.top)
    text = dump_space(refinement.space, comments={
        "trials": [f"finished trials of the refined study: the {top} warm-start trials + "
                   f"{refinement.space.trials - top} new ones"],
        "params": ["narrowed around the top trials:", *[f"  {change}" for change in refinement.changes]]})
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(text, encoding="utf-8")
    loaded = load_space(staged)
    if loaded.signature() != refinement.space.signature():
        staged.unlink()
        raise AssertionError(f"the refined space did not read back the same: {json.dumps(loaded.signature())}")
    staged.replace(path)
    return path


def stage_one(store: Store, study: str, space_file: str | None = None) -> tuple[StudyRecord, SearchSpace, dict]:
    """The study to refine as the store holds it: its trials, the space it swept (the copy kept on its latest
    search run, or `space_file`), and that run's settings (budget, subset)."""
    record = store.study(study, trials=True)
    search = store.latest_search(record)
    space = load_space(space_file) if space_file else store.recorded_space(record)
    if space is None:
        raise UsageError(f"study '{study}' has no copy of its search space in MLflow (it predates sweeper "
                         f"refine); pass the file it was run with: --space FILE")
    recorded = store.space_signature(record)
    if recorded and recorded != space.signature():
        raise UsageError(f"{space.source} is not the space study '{study}' was run with; pass that file with --space")
    return record, space, search.settings if search is not None else {}


def prepare(study: str, *, top: int, margin: float, trials: int | None, out: Path | None, name: str | None,
            space_file: str | None = None, force: bool = False, storage: str | None = None,
            tracking_uri: str | None = None, seed: int = 0,
            quiet_workers: bool = False) -> tuple[Refinement, SweepPlan]:
    """The refinement of `study` written to `out`, and the plan of the sweep that runs it: an Optuna study `name`
    warm-started with the top trials, `trials` new ones on top (default: as many as the first stage ran)."""
    record, space, settings = stage_one(Store.open(tracking_uri), study, space_file)
    if space.cost:
        raise UsageError(f"study '{study}' has two objectives; refine narrows single-objective studies (export "
                         f"a model from its Pareto front with sweeper export {study} --pick smallest-within MARGIN)")
    budget = {k: int(settings[k]) for k in ("max_epochs", "patience") if k in settings}
    new_trials = trials or int(settings.get("trials", space.trials))
    refinement = narrow(space.with_budget(**budget), record, top=top, margin=margin)
    warm = tuple((t.params, t.value) for t in refinement.top)
    refinement.space = refinement.space.with_budget(trials=new_trials + len(warm))
    name = name or f"{study}-refined"
    path = write_refined(refinement, out or Path(f"{name}.yaml"), force=force)
    refinement.space = dataclasses.replace(refinement.space, source=str(path))
    subset = settings.get("subset")
    plan = make_plan(record.dataset, space=refinement.space, study=name, storage=storage, tracking_uri=tracking_uri,
                     seed=seed, warm_start=warm, lineage={"refines": study}, target=record.target,
                     impute=record.impute, subset=subset if isinstance(subset, int) else None,
                     quiet_workers=quiet_workers, recorded_budget=False)
    return refinement, plan
