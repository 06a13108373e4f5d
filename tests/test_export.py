"""The hand-over: every export format checked by loading it back, the model card's real figures, `predict`,
`export --retrain`, and the registered champion served by MLflow's own CLI."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sweeper.ml.data import load_dataset
from sweeper.ml.formats import FORMATS, TOLERANCE

from .conftest import sweeper, write_space

ALL_FORMATS = ["--format", "keras", "--format", "savedmodel", "--format", "onnx", "--format", "tflite"]


@pytest.fixture(scope="module")
def exported(fashion_study, tmp_path_factory):
    """The shared study's best model exported once in all four formats."""
    workdir, _ = fashion_study
    out = tmp_path_factory.mktemp("export") / "best"
    result = sweeper("export", "fashion", *ALL_FORMATS, "--out", out, cwd=workdir)
    assert result.exit_code == 0, result.output
    return out, result


@pytest.fixture(scope="module")
def fashion():
    return load_dataset("fashion").as_inputs()  # the images as a model is given them


@pytest.fixture(scope="module")
def two_models(fashion):
    """Two real, differently trained models on a few hundred Fashion-MNIST images (inputs standardised inside the
    model and weights averaged: every format must hold the standardising layer)."""
    import keras

    from sweeper.ml.model import build_model

    params = {"n_layers": 1, "units_0": 32, "activation": "relu", "kernel_initializer": "he_normal", "dropout": 0.1,
              "optimizer": "adam", "learning_rate": 1e-3, "standardize": True, "ema": 0.9}
    models = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        model = build_model(params, fashion)
        model.fit(fashion.x_train[:300], fashion.y_train[:300], epochs=1, verbose=0)
        models.append(model)
    return models


def test_a_keras_file_is_written_through_a_file_and_holds_the_weights_and_the_optimizer_state(two_models, tmp_path):
    """`save_keras` has Keras write the weights through a temporary file, not a second copy in memory (106 MiB for a
    wide trial's 57 MiB file: bench/RESULTS.md), whatever the free memory: the switch Keras decides by exists in
    this Keras, is taken in the block and restored after it."""
    import keras
    from keras.src.saving import saving_lib

    from sweeper.ml.formats import save_keras, weights_through_a_file

    model, _ = two_models
    with weights_through_a_file():
        assert saving_lib.is_memory_sufficient(model) is False
    assert saving_lib.is_memory_sufficient(model) is True
    save_keras(model, tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True))
    assert [v.numpy().tolist() for v in loaded.optimizer.variables] == [
        v.numpy().tolist() for v in model.optimizer.variables]


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_reads_back_what_it_wrote_and_tells_models_apart(name, two_models, fashion, tmp_path):
    model, other = two_models
    fmt = FORMATS[name]
    path = tmp_path / fmt.filename
    fmt.write(model, path)
    x = fashion.x_test[:200]
    got = fmt.load(path)(x)
    assert np.abs(got - model.predict(x, verbose=0)).max() <= TOLERANCE
    assert np.abs(got - other.predict(x, verbose=0)).max() > 100 * TOLERANCE


def test_export_writes_four_formats_that_agree_on_the_whole_test_set(exported, fashion):
    out, result = exported
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "confusion_matrix.png", "learning_curves.png",
                                                     "model.json", "model.keras", "model.onnx", "model.tflite",
                                                     "savedmodel"]
    outputs = {name: np.asarray(fmt.load(out / fmt.filename)(fashion.x_test)).reshape(-1, 10)
               for name, fmt in FORMATS.items()}
    reference = outputs.pop("keras")
    for name, probabilities in outputs.items():
        assert np.abs(probabilities - reference).max() <= TOLERANCE, name
    for name in FORMATS:
        assert f"  {name:<10} {FORMATS[name].filename:<13} reloaded: outputs within" in result.output
    card = json.loads((out / "model.json").read_text())
    assert set(card["formats"]) == set(FORMATS) and card["formats"]["onnx"]["checked_on"] == 10_000


def test_the_model_card_holds_the_runs_real_figures(exported, fashion, store):
    out, _ = exported
    card = json.loads((out / "model.json").read_text())
    matrix = np.array(card["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 10_000
    assert np.trace(matrix) / 10_000 == pytest.approx(card["test_metrics"]["test_accuracy"], abs=1e-4)
    assert card["per_class_accuracy"]["Ankle boot"][0] == pytest.approx(matrix[9, 9] / matrix[9].sum())
    assert card["splits"] == {"training": 300, "validation": 5000, "test": 10_000}  # the sweep's --subset 300
    assert card["search"]["backend"] == "optuna" and card["search"]["trials"] == 3  # typed (issue 17, item 15)
    assert card["parameter_count"] > 7850 and card["versions"]["keras"].startswith("3.")
    trial = store.get_run(card["mlflow_run_id"])
    search = store.get_run(trial.data.tags["mlflow.parentRunId"])
    assert card["model"] == (f"trial {trial.data.tags['trial_number']}'s configuration retrained on training + "
                             f"validation data for {search.data.tags['refit_epochs']} epochs")  # the registered one
    assert card["mlflow_search_run_id"] == card["mlflow_model_run_id"] == search.info.run_id
    assert search.data.metrics["test_accuracy"] == pytest.approx(card["test_metrics"]["test_accuracy"])
    text = (out / "MODEL_CARD.md").read_text()
    assert f"- Parameters: {card['parameter_count']:,}" in text and "| Ankle boot |" in text
    assert "![confusion matrix](confusion_matrix.png)" in text and card["mlflow_run_id"] in text
    for png in ("confusion_matrix.png", "learning_curves.png"):
        with Image.open(out / png) as image:
            assert image.format == "PNG" and image.size[0] > 400
    logged = {a.path for a in store.list_artifacts(card["mlflow_model_run_id"], "model_card")}
    assert {"model_card/MODEL_CARD.md", "model_card/model.json", "model_card/confusion_matrix.png",
            "model_card/learning_curves.png"} == logged


@pytest.fixture(scope="module")
def test_images(fashion, tmp_path_factory):
    """A few real test images saved as PNG (0-255 grey, as a user's files would be)."""
    folder = tmp_path_factory.mktemp("images")
    for i in range(6):
        Image.fromarray(np.round(fashion.x_test[i] * 255).astype(np.uint8)).save(folder / f"test{i}.png")
    return folder


def test_predict_names_the_class_the_model_gives_each_image(exported, fashion, test_images):
    import keras

    out, _ = exported
    result = sweeper("predict", out, test_images, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    probabilities = keras.saving.load_model(out / "model.keras").predict(fashion.x_test[:6], verbose=0)
    assert [r["input"] for r in rows] == [str(test_images / f"test{i}.png") for i in range(6)]
    assert [r["class"] for r in rows] == [fashion.class_names[i] for i in probabilities.argmax(1)]
    assert [r["probability"] for r in rows] == pytest.approx(probabilities.max(1).tolist(), abs=1e-5)
    table = sweeper("predict", out, test_images / "test0.png")
    assert table.exit_code == 0 and rows[0]["class"] in table.output


def test_predict_reads_npy_arrays_of_raw_pixels_like_images(exported, fashion, test_images, tmp_path):
    out, _ = exported
    np.save(tmp_path / "batch.npy", np.round(fashion.x_test[:3] * 255).astype(np.uint8))
    batch = json.loads(sweeper("predict", out, tmp_path / "batch.npy", "--json").output)
    images = json.loads(sweeper("predict", out, test_images, "--json").output)[:3]
    assert [r["input"] for r in batch] == ["batch.npy[0]", "batch.npy[1]", "batch.npy[2]"]
    assert [r["class"] for r in batch] == [r["class"] for r in images]
    assert [r["probability"] for r in batch] == pytest.approx([r["probability"] for r in images], abs=1e-6)


def test_predict_from_the_registry_uri(fashion_study, test_images):
    workdir, _ = fashion_study
    result = sweeper("predict", "models:/fashion@champion", test_images / "test0.png", "--json", cwd=workdir)
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)[0]
    assert row["class"] in load_dataset("fashion").class_names and 0.1 <= row["probability"] <= 1


def test_mlflow_models_predict_serves_the_champion_from_a_fresh_shell(fashion_study, fashion, tmp_path,
                                                                      monkeypatch):
    workdir, _ = fashion_study
    (tmp_path / "input.json").write_text(json.dumps({"inputs": fashion.x_test[:3].tolist()}))
    env = {"PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin", "HOME": str(tmp_path),
           "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlruns/mlflow.db"}
    done = subprocess.run(["mlflow", "models", "predict", "-m", "models:/fashion@champion", "-i", "input.json",
                           "-t", "json", "--env-manager", "local"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    predictions = np.array(json.loads(done.stdout)["predictions"])  # stdout holds the result only: it pipes
    assert predictions.shape == (3, 10) and np.allclose(predictions.sum(axis=1), 1, atol=1e-4)
    import mlflow
    import yaml

    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])  # the registry's too
    logged = mlflow.artifacts.download_artifacts("models:/fashion@champion", dst_path=str(tmp_path / "champion"))
    mlmodel = yaml.safe_load((Path(logged) / "MLmodel").read_text())  # logged without MLflow's serving check, but
    assert "python_function" in mlmodel["flavors"] and mlmodel["signature"]["inputs"]  # whole: flavor, signature,
    assert (Path(logged) / mlmodel["saved_input_example_info"]["artifact_path"]).is_file()  # and the example
    assert json.loads(mlmodel["signature"]["outputs"]) == [  # the outputs' spec, read without predicting
        {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 10]}}]


def test_the_registry_gets_a_version_only_when_a_sweep_improves_the_best(tmp_path):
    import mlflow

    for trials in (1, 1, 5):  # the second finds the study complete: no new sweep run, no new version
        result = sweeper("search", "digits", "--trials", trials, "--max-epochs", 2, "--no-refit", cwd=tmp_path)
        assert result.exit_code == 0, result.output
    store = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    searches = store.search_runs([store.get_experiment_by_name("digits").experiment_id], "tags.run_kind = 'search'",
                                 order_by=["attributes.start_time ASC"])
    bests = [run.data.tags["best_run_id"] for run in searches]
    improvements = 1 + sum(before != after for before, after in zip(bests, bests[1:], strict=False))
    versions = store.search_model_versions("name = 'digits'")
    assert len(searches) == 2 and len(versions) == improvements
    champion = store.get_model_version_by_alias("digits", "champion")
    assert champion.tags["trial_run_id"] == bests[-1] and int(champion.version) == len(versions)


def test_retrain_trains_once_then_reuses_the_retrained_model(tmp_path):
    import mlflow

    result = sweeper("search", "digits", "--trials", 2, "--max-epochs", 3, "--no-refit", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    first = sweeper("export", "digits", "--retrain", "--out", tmp_path / "a", cwd=tmp_path)
    assert first.exit_code == 0, first.output
    assert "Retraining trial" in first.output and "retrained on training + validation data" in first.output
    store = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    [retrain] = store.search_runs([store.get_experiment_by_name("digits").experiment_id], "tags.run_kind = 'retrain'")
    card = json.loads((tmp_path / "a" / "model.json").read_text())
    assert retrain.info.status == "FINISHED" and card["mlflow_model_run_id"] == retrain.info.run_id
    assert retrain.data.tags["refit_of"] == card["mlflow_run_id"]
    assert retrain.data.metrics["test_accuracy"] == pytest.approx(card["test_metrics"]["test_accuracy"])
    again = sweeper("export", "digits", "--out", tmp_path / "b", cwd=tmp_path)  # the retrained model, reused
    assert again.exit_code == 0 and "Retraining" not in again.output
    second = json.loads((tmp_path / "b" / "model.json").read_text())
    assert second["mlflow_model_run_id"] == retrain.info.run_id and second["test_metrics"] == card["test_metrics"]


COSINE_SPACE = ("objective: val_accuracy\nmax_epochs: 2\nparams:\n  n_layers: 1\n  units: 16\n"
                "  learning_rate: 0.01\n  lr_schedule: cosine\n")


def test_a_trial_still_improving_as_its_cosine_ended_is_retrained_longer_by_the_sweep_and_by_export(tmp_path):
    import mlflow

    space = write_space(tmp_path / "cosine.yaml", COSINE_SPACE)  # 2 epochs: the best epoch is one of the last two
    swept = sweeper("search", "digits", "--space", space, "--trials", 1, "--study", "refit", cwd=tmp_path)
    assert swept.exit_code == 0, swept.output
    assert "on training + validation data for 4 epochs" in swept.output  # 2x the schedule's 2, cosine stretched
    kept = sweeper("search", "digits", "--space", space, "--trials", 1, "--study", "own", "--no-refit", cwd=tmp_path)
    assert kept.exit_code == 0, kept.output
    later = sweeper("export", "own", "--retrain", "--out", tmp_path / "own", cwd=tmp_path)
    assert later.exit_code == 0, later.output
    assert "Retraining trial 0's configuration on training + validation data for 4 epochs" in later.output
    store = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    [retrain] = store.search_runs([store.get_experiment_by_name("own").experiment_id], "tags.run_kind = 'retrain'")
    assert retrain.data.metrics["refit_epochs"] == 4


def test_a_format_whose_converter_is_missing_names_the_extra(fashion_study, tmp_path, monkeypatch):
    workdir, _ = fashion_study
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    result = sweeper("export", "fashion", "--format", "keras", "--format", "onnx", "--out", tmp_path / "best",
                     cwd=workdir)
    assert result.exit_code == 1 and not (tmp_path / "best").exists()
    assert result.output.strip() == ("Error: the onnx format needs onnxruntime, which is not installed; install it "
                                     "with: pip install 'sweeper[onnx]'")


@pytest.mark.parametrize("make,line", [
    (lambda d: d / "missing.png", "Error: {d}/missing.png does not exist; expected an image (PNG/JPEG), a folder "
                                  "of images, a .npy array or a .csv table"),
    (lambda d: (d / "bad.png").write_text("not an image") and d / "bad.png",
     "Error: {d}/bad.png: not a readable image (cannot identify image file '{d}/bad.png')"),
    (lambda d: np.save(d / "wrong.npy", np.zeros((2, 8, 8))) or d / "wrong.npy",
     "Error: {d}/wrong.npy: array of shape (2, 8, 8) (float64); expected numbers of shape (28, 28) or (N, 28, 28)"),
    (lambda d: (d / "rows.csv").write_text("a,b\n1,2\n") and d / "rows.csv",
     "Error: {d}/rows.csv: this model takes inputs of shape (28, 28); a CSV fits tabular models only"),
    (lambda d: (d / "notes.txt").write_text("hi") and d / "notes.txt",
     "Error: {d}/notes.txt: cannot read .txt; expected .png, .jpg, .jpeg, .npy or .csv"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "Error: {d}/empty holds no PNG or JPEG images"),
], ids=["missing", "not-an-image", "npy-shape", "csv-for-images", "suffix", "empty-folder"])
def test_predict_refuses_bad_input_with_one_line(exported, tmp_path, make, line):
    out, _ = exported
    result = sweeper("predict", out, make(tmp_path))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == line.format(d=tmp_path)


def _damaged_weights(folder):
    """model.keras with its weights file replaced by bytes that are not HDF5."""
    import zipfile

    original = (folder / "model.keras").read_bytes()
    (folder / "original.keras").write_bytes(original)
    with zipfile.ZipFile(folder / "original.keras") as source, zipfile.ZipFile(folder / "model.keras", "w") as out:
        for name in source.namelist():
            out.writestr(name, b"not hdf5" if name.endswith(".h5") else source.read(name))


@pytest.mark.parametrize("damage,line", [
    (lambda d: (d / "model.keras").write_bytes((d / "model.keras").read_bytes()[:100_000]),
     "Error: {d}/model.keras: not a readable Keras model (File is not a zip file); export the model again with "
     "`sweeper export`"),
    (_damaged_weights, "Error: {d}/model.keras: not a readable Keras model ("),
    (lambda d: (d / "model.json").write_text("{"),
     "Error: {d}/model.json: not a readable model card (Expecting property name enclosed in double quotes: line 1 "
     "column 2 (char 1)); export the model again with `sweeper export`"),
    (lambda d: (d / "model.json").write_text("[]"),
     "Error: {d}/model.json: not a readable model card (a JSON list, not an object); export the model again with "
     "`sweeper export`"),
    (lambda d: (d / "model.json").write_text(json.dumps({"task": "classification", "input_shape": [28, 28]})),
     "Error: {d}/model.json: not a readable model card (no class_names in it); export the model again with "
     "`sweeper export`"),
], ids=["truncated-model", "damaged-weights", "card-not-json", "card-not-an-object", "card-without-classes"])
def test_predict_refuses_a_damaged_export_folder_with_one_line(exported, tmp_path, damage, line):
    out, _ = exported
    folder = tmp_path / "damaged"
    shutil.copytree(out, folder)
    damage(folder)
    result = sweeper("predict", folder, tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output and "unexpected" not in result.output
    assert result.output.strip().startswith(line.format(d=folder))
    assert result.output.strip().endswith("; export the model again with `sweeper export`")


def test_export_names_a_model_damaged_in_the_store_and_writes_nothing(tmp_path):
    result = sweeper("search", "digits", "--study", "damaged", "--trials", 1, "--max-epochs", 1, "--subset", 200,
                     "--no-refit", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    trial_model, = [p for p in (tmp_path / "mlruns").rglob("model.keras") if "models" not in p.parts]
    trial_model.write_bytes(b"garbage")
    run_id = trial_model.parts[-4]
    exported = sweeper("export", "damaged", "--out", tmp_path / "out", cwd=tmp_path)
    assert exported.exit_code == 1 and not (tmp_path / "out").exists()
    assert exported.output.strip().splitlines()[-1] == (
        f"Error: {trial_model.relative_to(tmp_path)}: not a readable Keras model (File is not a zip file), damaged "
        f"since run {run_id} saved it; restore the file, or run the sweep again under another --study")


def test_predict_refuses_a_folder_that_is_not_an_export(tmp_path):
    result = sweeper("predict", tmp_path, tmp_path)
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: {tmp_path} is not an export folder (expected model.keras and model.json "
                                     f"in it, as `sweeper export` writes) nor a models:/NAME@ALIAS or "
                                     f"models:/NAME/VERSION URI")


def test_predict_on_a_csv_table_for_a_tabular_model(tmp_path):
    import csv

    rows = [[i, (i * 7) % 11, i % 2] for i in range(120)]
    with open(tmp_path / "table.csv", "w", newline="") as f:
        csv.writer(f).writerows([["a", "b", "y"]] + rows)
    result = sweeper("search", f"csv:{tmp_path / 'table.csv'}", "--target", "y", "--study", "table", "--trials", 1,
                     "--max-epochs", 2, "--no-refit", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert sweeper("export", "table", "--out", tmp_path / "best", cwd=tmp_path).exit_code == 0
    (tmp_path / "new.csv").write_text("b,a\n3,1\n5,2\n")
    rows = json.loads(sweeper("predict", tmp_path / "best", tmp_path / "new.csv", "--json").output)
    assert [r["input"] for r in rows] == ["new.csv:2", "new.csv:3"] and {r["class"] for r in rows} <= {"0", "1"}
    (tmp_path / "short.csv").write_text("a\n1\n")
    missing = sweeper("predict", tmp_path / "best", tmp_path / "short.csv")
    assert missing.output.strip() == f"Error: {tmp_path}/short.csv: missing column b; the model takes a, b"
