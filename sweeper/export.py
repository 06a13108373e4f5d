"""The best model of a study -> a folder a user can load and serve: model.keras + model.json."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .data import load_dataset
from .errors import SweeperError, TrackingError
from .tracking import (FINAL_MODEL_ARTIFACT, STORE_DIR, best_run, final_model_run, find_experiment, load_run_model,
                       open_client)
from .train import evaluate

MODEL_FILE, CARD_FILE = "model.keras", "model.json"


@dataclass
class Exported:
    directory: Path
    card: dict


def export_best(study: str, out: str | Path, *, tracking_uri: str | None = None, force: bool = False) -> Exported:
    """Write the study's best completed trial's model, with its card, into `out` (atomically)."""
    out = Path(out)
    if out.exists() and not force:
        raise SweeperError(f"{out} already exists; choose another --out or add --force to replace it")
    blocked = next((parent for parent in out.parents if parent.exists() and not parent.is_dir()), None)
    if blocked is not None:
        raise SweeperError(f"cannot create {out}: {blocked} is a file, not a folder")
    if tracking_uri is None and not (STORE_DIR / "mlflow.db").is_file():
        raise TrackingError(f"no MLflow store here ({STORE_DIR / 'mlflow.db'}); run `sweeper search` in this "
                            f"folder first, or give --tracking-uri")
    client = open_client(tracking_uri)
    experiment = find_experiment(client, study)
    best = best_run(client, study)
    final = final_model_run(client, study, best)
    model = load_run_model(client, final.info.run_id, FINAL_MODEL_ARTIFACT) if final else \
        load_run_model(client, best.run_id)
    tags = experiment.tags
    dataset = load_dataset(tags["dataset"], tags.get("target") or None, tags.get("task"))
    card = {
        "study": study,
        "dataset": dataset.name,
        "task": dataset.task,
        "class_names": list(dataset.class_names) if dataset.class_names else None,
        "input_shape": list(dataset.input_shape),
        "preprocessing": dataset.preprocessing,
        "objective": {"metric": tags.get("objective_metric"), "direction": tags.get("objective_direction"),
                      "value": best.objective},
        "hyperparameters": {k: _number(v) for k, v in sorted(best.params.items())},
        "model": (f"trial {best.trial_number}'s configuration retrained on training + validation data for "
                  f"{final.data.tags['refit_epochs']} epochs" if final else f"trial {best.trial_number}'s model"),
        "validation_metrics": {k.removeprefix("final_"): v for k, v in best.metrics.items()
                               if k.startswith("final_val_")},
        "test_metrics": evaluate(model, dataset),
        "trial_number": best.trial_number,
        "mlflow_run_id": best.run_id,
        "mlflow_model_run_id": final.info.run_id if final else best.run_id,
        "mlflow_tracking_uri": client.tracking_uri,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sweeper_version": __version__,
    }
    _write_atomically(out, model, card, force)
    return Exported(out, card)


def _write_atomically(out: Path, model, card: dict, force: bool) -> None:
    """Build the folder beside `out`, then rename it into place: never a half-written export."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        model.save(staging / MODEL_FILE)
        (staging / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
        if out.exists() and force:
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)
