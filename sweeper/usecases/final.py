"""The end of a sweep: the best trial's configuration retrained on training + validation data, evaluated on the test
split, logged and registered, and the sweep run ended with what it found. Run by the last worker to finish (this
process, the last process of a one-worker pool, or a Dask worker)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sweeper.domain.events import SweepListener, SweepResult
from sweeper.domain.records import TrialRecord
from sweeper.engines import Engine, make_engine
from sweeper.ml.data import Dataset
from sweeper.runtime.heap import release_freed_memory
from sweeper.runtime.workers import this_worker
from sweeper.store import SweepRecorder
from sweeper.usecases.plan import SweepPlan
from sweeper.usecases.studies import TOP, baseline_metrics, read_ensemble

#: the seconds left of the sweep's --timeout (None: no limit), asked when the final model starts training
TimeLeft = Callable[[], "float | None"]


def finish_joined(plan: SweepPlan, parent_id: str, listener: SweepListener,
                  time_left: TimeLeft | None = None) -> SweepResult:
    """Make the final model of the sweep run `parent_id` from another process than the one that opened it (a
    pool's worker, a Dask worker): its store, engine and data are opened here."""
    recorder = SweepRecorder.open(plan.study, plan.tracking_uri)
    recorder.join_search(parent_id, plan.study_record())
    with make_engine(plan.backend, plan.engine_options()) as engine:
        return finish(plan, load_data(plan), engine, recorder, listener, time_left)


def load_data(plan: SweepPlan) -> Dataset:
    """The sweep's data (loaded once per process) held for every `fit` to read in place (`Dataset.held`), with Keras
    and its backend imported quietly for what comes next."""
    from sweeper.ml.quiet import import_keras

    import_keras()
    return plan.load_data().held()


def finish(plan: SweepPlan, dataset: Dataset, engine: Engine, recorder: SweepRecorder,
           listener: SweepListener, time_left: TimeLeft | None = None) -> SweepResult:
    """The final model made, evaluated, logged and registered, and the sweep run ended (`time_left`: what is left
    of the sweep's --timeout; unknown, a timed sweep's final model trains no longer than its best trial did)."""
    from sweeper.ml.baseline import fit_baseline
    from sweeper.ml.train import evaluate, for_users

    counts = engine.counts()
    metrics, tags, version, test, trial_test, final = count_metrics(counts), {}, None, {}, {}, None
    best = best_or_none(recorder)
    if best is not None:
        listener.final_step(f"evaluating trial {best.number}'s model on the test split")
        model = trial_model = recorder.store.load_trial_model(best)
        test = evaluate(model, dataset)
        final = _refit_best(plan, dataset, recorder, best, model, listener, time_left)
        if final is not None:
            listener.final_step("evaluating the final model on the test split")
            model, trial_test, test = for_users(final.model), test, evaluate(final.model, dataset)
            metrics.update({f"trial_{k}": v for k, v in trial_test.items()}, refit_epochs=final.epochs,
                           refit_seconds=final.seconds)
        model = for_users(model)  # saved with Keras' default execution options
        # a retraining longer than its trial is never averaged with other trials: the validation split that chooses
        # them judged the trials' own models only; on Fashion-MNIST each such average lost 0.0011 of test accuracy
        # (RESULTS.md). It is averaged with retrainings of its own configuration from other seeds instead.
        longer = final is not None and final.epochs > best.best_epoch
        retrainings = _more_retrainings(plan, dataset, best, trial_model, final, listener, time_left) if longer else []
        if retrainings:
            metrics["refit_seconds"] += sum(r.seconds for r in retrainings)  # every retraining's training time
            tags["refit_seeds"] = ",".join(str(r.seed) for r in [final, *retrainings])
            listener.final_step(f"averaging {len(retrainings) + 1} retrainings of trial {best.number} into one model")
            single, model = test, _average_retrainings(model, best, [final, *retrainings], dataset)
            listener.final_step("evaluating the averaged model on the test split")
            test = evaluate(model, dataset)
            metrics.update({f"single_{k}": v for k, v in single.items()})
        elif longer and plan.space.ensemble > 1:
            tags["ensemble_skipped"] = "longer_refit"
        candidates = [] if longer else _ensemble_candidates(plan, recorder, best)
        members = _choose_members(plan, dataset, trial_model, candidates, listener)
        if candidates:
            tags["ensemble_candidates"] = ",".join(str(t.number) for t, _ in candidates)
        if members:
            tags["ensemble_of"] = ",".join(str(t.number) for t in [best, *(t for t, _ in members)])
            listener.final_step(f"averaging trials {tags['ensemble_of'].replace(',', ', ')} into one model")
            single, model = test, _average(model, best, members, dataset)
            listener.final_step("evaluating the averaged model on the test split")
            test = evaluate(model, dataset)
            metrics.update({f"single_{k}": v for k, v in single.items()})
        if plan.space.test_time_shifts:
            model, test = _with_shifts(plan, dataset, best, trial_model, model, test, listener, metrics, tags)
        if final is not None or members or tags.get("test_time_shifts") == "on":
            listener.final_step("saving the final model in MLflow")
            recorder.log_final_model(model, final.epochs if final else 0, best.run_id, tags.get("ensemble_of"),
                                     tags.get("refit_seeds"), shifted=tags.get("test_time_shifts") == "on")
        listener.final_step(f"logging and registering models:/{recorder.study}@champion")
        version = recorder.log_best_model(model, dataset.inputs(dataset.x_test[:5]), registered_from=best.run_id,
                                          metadata=dataset.metadata())
        metrics.update(test, **{f"best_{plan.space.objective.metric}": best.value})
        tags.update(best_trial_number=best.number, best_run_id=best.run_id, model_version=version,
                    final_model_by=this_worker())
        listener.final_step("fitting the baseline on the same split")
        baseline = fit_baseline(dataset)
        metrics.update({f"baseline_{k}": v for k, v in baseline.test_metrics.items()})
        tags["baseline"] = baseline.name
    recorder.end_search("FINISHED", metrics=metrics, tags=tags)
    result = result_of(plan, recorder, counts, best, test, version)
    result.refit_epochs, result.trial_test_metrics = final and final.epochs, trial_test
    result.baseline, result.baseline_metrics = tags.get("baseline"), baseline_metrics(metrics)
    read_ensemble(result, metrics, tags)
    return result


@dataclass
class _Refit:
    model: object  # keras.Model
    epochs: int
    seconds: float
    seed: int
    learning_rates: dict


def _refit_best(plan: SweepPlan, dataset, recorder: SweepRecorder, best: TrialRecord, trial_model,
                listener: SweepListener, time_left: TimeLeft | None) -> _Refit | None:
    """The best configuration retrained on train + val (None: --no-refit) for its trial's best epoch count and
    learning rates, or longer, its cosine stretched, when the trial still improved as its schedule ended."""
    if not plan.refit or best.best_epoch < 1:
        return None
    epochs, rates = refit_schedule(recorder.store, best, dataset, _left(plan, time_left))
    return retrain(dataset, best, trial_model, epochs, rates, plan.seed, listener)


def _more_retrainings(plan: SweepPlan, dataset: Dataset, best: TrialRecord, trial_model, first: _Refit,
                      listener: SweepListener, time_left: TimeLeft | None) -> list[_Refit]:
    """Retrainings of the best configuration from the seeds after the first one's, with its epochs and learning
    rates, for the final model to average with it: up to `plan.space.ensemble` retrainings in all, each started only
    while the time left covers one as long as the last (`budget.another_retraining_fits`). Averaging models of one
    configuration lowers the variance between seeds: on Fashion-MNIST, 40-epoch retrainings of the hand recipe
    scored test 0.9123 alone, 0.9136 by two and 0.9145 by three (means over the pairs and triples of four seeds;
    bench/RESULTS.md)."""
    from sweeper.domain.budget import another_retraining_fits

    done = [first]
    while len(done) < plan.space.ensemble and another_retraining_fits(_left(plan, time_left), done[-1].seconds):
        done.append(retrain(dataset, best, trial_model, first.epochs, first.learning_rates, first.seed + len(done),
                            listener, member=len(done) + 1))
    return done[1:]


def retrain(dataset: Dataset, best: TrialRecord, trial_model, epochs: int, rates: dict, seed: int,
            listener: SweepListener, member: int = 1) -> _Refit:
    """The best configuration trained afresh on train + val from `seed` (`member`: the how-manyth retraining)."""
    from sweeper.ml.train import refit

    listener.refit_started(best.number, epochs, member)
    started = time.perf_counter()
    model = refit(trial_model, dataset, epochs=epochs, batch_size=int(best.params.get("batch_size", 32)),
                  learning_rates=rates, seed=seed, epoch_hooks=[listener.refit_epoch_ended])
    seconds = time.perf_counter() - started
    release_freed_memory()  # its training's programs and buffers, before the next retraining compiles its own
    return _Refit(model, epochs, seconds, seed, rates)


def _left(plan: SweepPlan, time_left: TimeLeft | None) -> float | None:
    """The seconds left of the sweep's --timeout (None: no limit; 0: a timed sweep whose time is not known here)."""
    return time_left() if time_left is not None else (0.0 if plan.timeout else None)


def refit_schedule(store, best: TrialRecord, dataset: Dataset, time_left: float | None) -> tuple[int, dict]:
    """How the best configuration is retrained on train + val (the sweep's final model, `export --retrain`): its
    epochs and learning rate per (1-based) epoch. The trial's best epoch count and its logged rates; or, when its
    cosine schedule ended while it still improved, more epochs (as many as `time_left` allows; None: no limit),
    the cosine stretched over them."""
    from sweeper.domain.budget import refit_epochs
    from sweeper.ml.train import cosine_rate

    per_epoch = best.metrics.get("train_seconds", 0.0) / max(1, best.epochs or 1)
    more_data = (len(dataset.x_train) + len(dataset.x_val)) / len(dataset.x_train)  # at most: a subset's is less
    epochs = refit_epochs(best.best_epoch, int(best.metrics.get("epoch_cap", 0)),
                          cosine=best.params.get("lr_schedule") == "cosine", seconds_per_epoch=per_epoch * more_data,
                          time_left=time_left)
    if epochs <= best.best_epoch:
        return best.best_epoch, store.learning_rates(best)
    start = float(best.params["learning_rate"])
    return epochs, {epoch: cosine_rate(start, epoch, epochs) for epoch in range(1, epochs + 1)}


def _ensemble_candidates(plan: SweepPlan, recorder: SweepRecorder, best: TrialRecord) -> list[tuple[TrialRecord, Any]]:
    """The trials after the best that the final model may average with it, with their own models: the next best
    complete ones that kept their model, up to `plan.space.ensemble` in all ([] for a single model)."""
    if plan.space.ensemble < 2:
        return []
    ranked = recorder.store.complete_trials(recorder.record(), limit=plan.space.ensemble * 4)
    others = [t for t in ranked if t.has_model and t.run_id != best.run_id][:plan.space.ensemble - 1]
    return [(t, recorder.store.load_trial_model(t)) for t in others]


def _choose_members(plan: SweepPlan, dataset: Dataset, trial_model, candidates: list,
                    listener: SweepListener) -> list[tuple[TrialRecord, Any]]:
    """The candidates whose averaging with the best trial improves the validation objective (their own models and
    the best trial's own, all trained on the training split alone, judged on the validation split)."""
    from sweeper.ml.ensemble import choose_members, validation_predictions

    if not candidates:
        return []
    listener.final_step(f"choosing on the validation split which of trials "
                        f"{', '.join(str(t.number) for t, _ in candidates)} to average with the best")
    models = [trial_model, *(model for _, model in candidates)]
    chosen = choose_members([validation_predictions(m, dataset) for m in models], dataset, plan.space.objective)
    return [candidates[i - 1] for i in chosen[1:]]


def _average(final_model, best: TrialRecord, members: list[tuple[TrialRecord, Any]], dataset: Dataset):
    """The best trial's final model and the members' own models averaged into one model."""
    from sweeper.ml.ensemble import average

    models = [final_model, *(model for _, model in members)]
    return average(models, dataset, [f"trial_{t.number:03d}" for t in [best, *(t for t, _ in members)]])


def _average_retrainings(first_model, best: TrialRecord, retrainings: list[_Refit], dataset: Dataset):
    """The retrainings of the best configuration averaged into one model (`first_model`: the first, for users)."""
    from sweeper.ml.ensemble import average

    models = [first_model, *(r.model for r in retrainings[1:])]
    return average(models, dataset, [f"trial_{best.number:03d}_seed_{r.seed}" for r in retrainings])


def _with_shifts(plan: SweepPlan, dataset: Dataset, best: TrialRecord, trial_model, model, test: dict,
                 listener: SweepListener, metrics: dict, tags: dict) -> tuple[Any, dict]:
    """The final model with test-time shifts, and its test metrics, when they do not lower the validation objective
    of the best trial's own model (trained on the training split alone; the final model saw the validation split);
    else the model as it was. On Fashion-MNIST the averaged retrainings gained 0.0011-0.0024 of test accuracy by
    them (bench/RESULTS.md), while weaker models lost up to 0.003: hence judged per sweep."""
    from sweeper.ml.ensemble import scores_without_and_with_shifts, shifted_to_keep
    from sweeper.ml.train import evaluate

    listener.final_step(f"judging test-time shifts on the validation split with trial {best.number}'s model")
    without, shifted = scores_without_and_with_shifts(trial_model, dataset, plan.space.objective)
    metrics.update(shifts_validation_without=without, shifts_validation_with=shifted)
    if plan.space.objective.better(without, shifted):
        tags["test_time_shifts"] = "off"
        return model, test
    tags["test_time_shifts"] = "on"
    model = shifted_to_keep(model, dataset)
    listener.final_step("evaluating the final model with test-time shifts on the test split")
    metrics.update({f"unshifted_{k}": v for k, v in test.items()})
    return model, evaluate(model, dataset)


def best_or_none(recorder: SweepRecorder) -> TrialRecord | None:
    record = recorder.record()
    return recorder.store.best_or_none(record) if record else None  # None: no trial completed yet


def result_of(plan: SweepPlan, recorder: SweepRecorder, counts: dict, best: TrialRecord | None,
              test: dict | None = None, version: str | None = None) -> SweepResult:
    record = recorder.record()
    cost = record.cost_metric or None
    return SweepResult(recorder.study, recorder.uri, recorder.experiment_id, recorder.parent_id, record.metric, best,
                       test or {}, counts, recorder.store.complete_trials(record, limit=TOP), version,
                       cost_metric=cost, pareto=recorder.store.pareto(record) if cost else [])


def count_metrics(counts: dict) -> dict:
    return {f"trials_{state}": n for state, n in counts.items()}
