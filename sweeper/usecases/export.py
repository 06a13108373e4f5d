"""The best model of a study -> a folder a user can load and serve: the formats asked for, each checked by
loading it back, plus model.json and MODEL_CARD.md with its figures; written atomically."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.domain.errors import ExportError, SweeperError
from sweeper.domain.records import FinalModel, StudyRecord, TrialRecord
from sweeper.domain.wording import plural
from sweeper.ml.data import Dataset, load_recorded
from sweeper.ml.formats import FORMATS, check_installed, write_and_check
from sweeper.present import card as cards
from sweeper.runtime.workers import pid_alive
from sweeper.store import Store
from sweeper.usecases.studies import other_test_metrics

#: How many test inputs each written file is checked on (the whole test split of Fashion-MNIST).
CHECKED_INPUTS = 10_000


@dataclass
class Chosen:
    """The model to export and where MLflow holds it."""

    model: object  # keras.Model
    description: str
    run_id: str  # the run holding the model (the trial's, or the one that retrained it)
    retrained_now: bool = False


@dataclass
class Exported:
    directory: Path
    card: dict
    files: dict = field(default_factory=dict)  # format -> (path, max abs difference)


def export_best(study: str, out: str | Path, *, formats: tuple[str, ...] | list[str] = ("keras",),
                retrain: bool = False, trial_model: bool = False, tracking_uri: str | None = None,
                force: bool = False, seed: int = 0, smallest_within_margin: float | None = None,
                say: Callable[[str], None] = lambda line: None) -> Exported:
    """Write the study's best model into `out` in each of `formats`, with its card (atomically).

    The trial is the best completed one (with `smallest_within_margin`: the one with the fewest parameters
    among those within that margin of the best objective). Its model is the one the sweep made final and
    registered (the configuration retrained on the training and validation splits together) when there
    is one; else the trial's own, or with `retrain` one retrained now. `trial_model` takes the trial's own."""
    from sweeper.ml.train import evaluate, for_users

    out = Path(out)
    formats = list(dict.fromkeys(formats))
    check_out(out, force)
    check_installed(formats)
    store = Store.open(tracking_uri, create=False)
    record = store.study(study)
    best = store.best_trial(record)
    if smallest_within_margin is not None:
        top, best = best, store.smallest_within(record, best, smallest_within_margin)
        say(f"Picked trial {best.number} ({int(best.metrics.get('param_count', 0)):,} parameters, objective "
            f"{best.value:.4f}): the smallest within {smallest_within_margin:g} of the best, trial "
            f"{top.number} ({int(top.metrics.get('param_count', 0)):,} parameters, {top.value:.4f}).")
    if store.running_sweep(record) is not None:
        say(f"Study {study} has a sweep running: this is the best model so far (trial {best.number}); the "
            f"sweep may still find a better one, and it makes its final model when it ends.")
    search = store.search_of(best)
    settings = search.settings if search else {}
    subset = settings.get("subset")
    dataset = load_recorded(record).subset(subset if isinstance(subset, int) else None)  # what the sweep trained on
    recorded = not store.read_only
    if not recorded:
        say(f"The MLflow store {store.describe()} is read-only: this export is written but not recorded in it.")
    chosen = _choose_model(store, record, best, dataset, retrain, trial_model, seed, say, recorded)
    test = evaluate(chosen.model, dataset)
    if recorded:
        store.log_metrics(chosen.run_id, test)
    card = _card(store, record, best, chosen, dataset, test, settings, search.run_id if search else "")
    measured = search.metrics if search else {}  # what averaging and shifts bought, as the sweep measured it
    single, unshifted = other_test_metrics("single", measured), other_test_metrics("unshifted", measured)
    if single and chosen.description.startswith("the average"):
        card["single_model_test_metrics"] = single
    if unshifted and chosen.description.endswith(SHIFTED_WORDS):
        card["unshifted_test_metrics"] = unshifted
    staging = _staging(out)
    try:
        files = _write_formats(for_users(chosen.model), formats, staging, dataset, say)
        card["formats"] = {name: {"file": path.name, "max_abs_difference": diff, "checked_on": n}
                           for name, (path, diff, n) in files.items()}
        _write_card(card, chosen.model, dataset, store, best, staging)
        if recorded:
            store.log_folder(chosen.run_id, staging / "card", "model_card")
        _move_into_place(staging, out, force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Exported(out, card, {name: (out / path.name, diff) for name, (path, diff, _) in files.items()})


def final_model(study: str, *, tracking_uri: str | None = None) -> Any:
    """The study's final model, as `export_best` writes it and the registry holds it: the best configuration
    retrained on training + validation data when the sweep made it, else the best trial's own."""
    store = Store.open(tracking_uri, create=False)
    record = store.study(study)
    best = store.best_trial(record)
    refit = store.refit_of(record, best)
    return refit[0] if refit is not None else store.load_trial_model(best)


def check_out(out: Path, force: bool) -> None:
    """Refuse an --out that exists (without --force), is a file, or lies under a file."""
    if out.exists() and not force:
        raise SweeperError(f"{out} already exists; choose another --out or add --force to replace it")
    if out.exists() and not out.is_dir():
        raise SweeperError(f"{out} is a file; --out names a folder to create")
    blocked = next((parent for parent in out.parents if parent.exists() and not parent.is_dir()), None)
    if blocked is not None:
        raise SweeperError(f"cannot create {out}: {blocked} is a file, not a folder")


def _choose_model(store: Store, record: StudyRecord, best: TrialRecord, dataset: Dataset, retrain: bool, own: bool,
                  seed: int, say, recorded: bool = True) -> Chosen:
    from sweeper.ml.train import refit
    from sweeper.usecases.final import refit_schedule

    trial_model = store.load_trial_model(best)
    own_model = Chosen(trial_model, f"trial {best.number}'s own model", best.run_id)
    if own:
        return own_model
    done = store.refit_of(record, best)
    if done is not None:
        return Chosen(done.model, _described(best, done), done.run_id)
    if not retrain:
        say(f"Trial {best.number} was not retrained on training + validation data (--no-refit or --pick): "
            f"exporting its own model; --retrain makes the retrained one.")
        return own_model
    if best.best_epoch < 1:
        raise ExportError(f"trial {best.number} recorded no best epoch, so its training cannot be repeated; "
                          f"export it without --retrain")
    epochs, rates = refit_schedule(store, best, dataset, time_left=None)
    say(f"Retraining trial {best.number}'s configuration on training + validation data for "
        f"{plural(epochs, 'epoch')}...")

    def retrained():
        return refit(trial_model, dataset, epochs=epochs, batch_size=int(best.params.get("batch_size", 32)),
                     learning_rates=rates, seed=seed)

    if not recorded:
        return Chosen(retrained(), _retrained(best, epochs), best.run_id, retrained_now=True)
    run_id = store.start_retrain(record, best)
    started = time.perf_counter()
    try:
        model = retrained()
        store.log_refit_model(run_id, model, epochs, best)
        store.log_metrics(run_id, {"refit_seconds": time.perf_counter() - started, "refit_epochs": epochs})
    except BaseException:
        store.end_run(run_id, "FAILED")
        raise
    store.end_run(run_id, "FINISHED")
    return Chosen(model, _retrained(best, epochs), run_id, retrained_now=True)


def _described(best: TrialRecord, done: FinalModel) -> str:
    """What a final model the sweep (or an earlier export) made is, for the card."""
    if done.seeds:
        described = (f"the average of {len(done.seeds)} retrainings of trial {best.number}'s configuration on "
                     f"training + validation data for {plural(int(done.epochs), 'epoch')} each (seeds "
                     f"{', '.join(str(s) for s in done.seeds)})")
    elif done.averaged:
        described = _averaged(done.averaged, done.epochs)
    else:
        described = _retrained(best, done.epochs) if done.epochs else f"trial {best.number}'s own model"
    return described + (SHIFTED_WORDS if done.shifted else "")


SHIFTED_WORDS = (", with test-time shifts (its outputs on the images shifted one pixel down, up, right and left "
                 "averaged in, a third of the output: five predictions per image)")


def _averaged(trials: list[int], epochs: int) -> str:
    """What an averaged final model is, for the card."""
    best = f"trial {trials[0]}'s configuration retrained on training + validation data for " \
           f"{plural(int(epochs), 'epoch')}" if epochs else f"trial {trials[0]}'s model"
    return f"the average of {best} and the own models of trials {', '.join(str(n) for n in trials[1:])}"


def _retrained(best: TrialRecord, epochs: int) -> str:
    return (f"trial {best.number}'s configuration retrained on training + validation data for "
            f"{plural(int(epochs), 'epoch')}")


def _card(store: Store, record: StudyRecord, best: TrialRecord, chosen: Chosen, dataset: Dataset, test: dict,
          settings: dict, search_run_id: str) -> dict:
    from sweeper.ml.baseline import fit_baseline

    baseline = fit_baseline(dataset)
    return {
        "study": record.name,
        **dataset.metadata(),
        "splits": {"training": len(dataset.x_train), "validation": len(dataset.x_val), "test": len(dataset.x_test)},
        "objective": {"metric": record.metric, "value": best.value},
        "hyperparameters": dict(sorted(best.params.items())),
        "model": chosen.description,
        "parameter_count": int(chosen.model.count_params()),
        "architecture": " -> ".join(_layer_summary(layer) for layer in chosen.model.layers),
        "validation_metrics": {k.removeprefix("final_"): v for k, v in best.metrics.items()
                               if k.startswith("final_val_")},
        "test_metrics": test,
        "baseline": {"model": baseline.name, "test_metrics": baseline.test_metrics},
        "trial_number": best.number,
        "best_epoch": best.best_epoch,
        "search": settings,
        "trained_on": best.trained_on,  # Keras' backend
        "mlflow_run_id": best.run_id,
        "mlflow_model_run_id": chosen.run_id,
        "mlflow_search_run_id": search_run_id,
        "mlflow_tracking_uri": store.describe(),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sweeper_version": sweeper_version(),
        "versions": cards.library_versions(),
    }


def _layer_summary(layer) -> str:
    if getattr(layer, "layers", None):  # a model inside the model: a trial of an averaged one
        return f"{layer.name}({' -> '.join(_layer_summary(inner) for inner in layer.layers)})"
    config = layer.get_config()
    if "units" in config:
        return f"Dense({config['units']}, {config.get('activation')})"
    if "rate" in config:
        return f"Dropout({config['rate']:g})"
    return type(layer).__name__


def _write_formats(model, formats, staging: Path, dataset: Dataset, say) -> dict:
    x = dataset.inputs(dataset.x_test[:CHECKED_INPUTS])
    files = {}
    for name in formats:
        fmt = FORMATS[name]
        path = staging / fmt.filename
        difference = write_and_check(fmt, model, path, x)
        say(f"  {name:<10} {fmt.filename:<13} reloaded: outputs within {difference:.1e} of the trained model "
            f"on {len(x):,} test inputs")
        files[name] = (path, difference, len(x))
    return files


def _write_card(card: dict, model, dataset: Dataset, store: Store, best: TrialRecord, staging: Path) -> None:
    """model.json and MODEL_CARD.md with its figures, in the export folder and (copied) in staging/card."""
    if dataset.class_names:
        matrix = cards.confusion_matrix(model, dataset)
        card["confusion_matrix"] = matrix.tolist()
        accuracies = cards.per_class_accuracy(matrix)
        card["per_class_accuracy"] = {name: (acc, int(n)) for name, acc, n in
                                      zip(dataset.class_names, accuracies, matrix.sum(axis=1), strict=True)}
        cards.plot_confusion(matrix, dataset.class_names, staging / cards.CONFUSION_PNG)
    curves = store.metric_histories(best, ["loss", "val_loss", "accuracy", "val_accuracy", "mae", "val_mae", "rmse",
                                           "val_rmse"])
    cards.plot_learning_curves(curves, staging / cards.CURVES_PNG)
    (staging / cards.CARD_JSON).write_text(json.dumps(card, indent=2) + "\n")
    (staging / cards.CARD_FILE).write_text(cards.render(card))
    (staging / "card").mkdir()
    for name in (cards.CARD_FILE, cards.CARD_JSON, cards.CONFUSION_PNG, cards.CURVES_PNG):
        if (staging / name).exists():
            shutil.copy(staging / name, staging / "card" / name)


def sweeper_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sweeper")
    except PackageNotFoundError:
        return "unknown"


def _staging(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):  # left by an export that was killed
        if not pid_alive(int(stale.name.rsplit("-", 1)[1])):
            shutil.rmtree(stale, ignore_errors=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def _move_into_place(staging: Path, out: Path, force: bool) -> None:
    """Rename the finished folder into place: never a half-written export."""
    shutil.rmtree(staging / "card")
    if out.exists() and force:
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)
