"""The commands on the best model: export, predict."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sweeper.cli.options import tracking_option
from sweeper.cli.speak import check_study, reports_errors
from sweeper.domain.choices import FORMATS as FORMAT_NAMES


@click.command()
@click.argument("study")
@click.option("--out", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder to create with the model files, model.json and MODEL_CARD.md.")
@click.option("--format", "formats", type=click.Choice(FORMAT_NAMES), multiple=True, default=["keras"],
              show_default=True, help="Format to write; repeat for several (onnx and tflite need sweeper[onnx] "
                                      "and sweeper[tflite]).")
@click.option("--trial-model", is_flag=True, help="Export the best trial's own model (trained on the training split "
                                                  "only) instead of the final, registered one.")
@click.option("--retrain", is_flag=True, help="Retrain the best configuration on training + validation data for "
                                              "its best epoch count when the sweep made no such model (--no-refit, "
                                              "--pick).")
@click.option("--pick", nargs=2, type=(click.Choice(["smallest-within"]), click.FloatRange(min=0)),
              metavar="smallest-within MARGIN", help="Export the model with the fewest parameters whose objective "
                                                     "is within MARGIN of the best (default: the best).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of a retraining.")
@click.option("--force", is_flag=True, help="Replace DIR if it exists.")
@tracking_option
@reports_errors
def export(study, out, formats, trial_model, retrain, pick, seed, force, tracking_uri):
    """Export STUDY's best model to DIR, each file checked by loading it back, with a model card.

    The model is the one the sweep's summary reports and registers: the best configuration retrained on
    training + validation data (or, after --no-refit, the best trial's own model).

    \b
    Example:
      sweeper export fashion --out best-fashion/
      sweeper export fashion --format keras --format onnx --format tflite --out best/ --force
      sweeper export fashion --trial-model --out best-trial/
      sweeper export fashion-small --pick smallest-within 0.005 --out best-small/
      sweeper predict best-fashion/ shoe.png
    """
    if trial_model and retrain:
        raise click.UsageError("--trial-model and --retrain choose different models; pass one of them")
    from sweeper.ml.quiet import import_keras
    from sweeper.runtime.setup import prefer_keras_backend
    from sweeper.usecases.export import check_out, export_best

    check_out(Path(out), force)
    check_study(tracking_uri, study)

    if set(formats) != {"keras"}:
        prefer_keras_backend("tensorflow")  # the others are written on TensorFlow (one process, not two)
    import_keras()
    exported = export_best(study, out, formats=formats, retrain=retrain, trial_model=trial_model,
                           tracking_uri=tracking_uri, force=force, seed=seed,
                           smallest_within_margin=pick[1] if pick else None,
                           say=lambda line: click.echo(line, err=True))
    card = exported.card
    tests = ", ".join(f"{k} {v:.4f}" for k, v in card["test_metrics"].items())
    files = ", ".join(path.name for path, _ in exported.files.values())
    click.echo(f"Exported {card['model']} (study '{study}') to {exported.directory}/: {files}, model.json, "
               f"MODEL_CARD.md; on the test split: {tests}")


@click.command()
@click.argument("model", metavar="MODEL")
@click.argument("inputs", metavar="INPUT", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per input) instead of a table.")
@tracking_option
@reports_errors
def predict(model, inputs, as_json, tracking_uri):
    """Predict with MODEL (an export folder or a models:/ URI) on INPUT.

    INPUT is a PNG/JPEG image or a folder of them (grey-scaled and resized to the model's input), a .npy
    array of raw values (one example or a batch), or a CSV table with the model's feature columns.

    \b
    Example:
      sweeper predict best-fashion/ shoe.png
      sweeper predict models:/fashion@champion images/ --json
    """
    import json

    from sweeper.ml.quiet import import_keras
    from sweeper.usecases.predict import load_predictor, read_inputs

    import_keras()
    predictor = load_predictor(model, tracking_uri)
    rows = predictor.predict(*read_inputs(inputs, predictor))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*rows[0].keys(), title=f"Predictions of {predictor.source}")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console(width=120 if not sys.stdout.isatty() else None).print(table)
