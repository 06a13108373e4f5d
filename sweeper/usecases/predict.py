"""Predictions of an exported or registered model on a user's files: images, .npy arrays or CSV tables."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweeper.domain.errors import ExportError
from sweeper.ml.formats import UNREADABLE_KERAS_FILE, KerasFormat
from sweeper.ml.model import predictions
from sweeper.present.card import CARD_JSON

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CARD_KEYS = ("task", "input_shape")  # what every prediction reads from model.json


@dataclass
class Predictor:
    """A model and what is needed to feed it and name its outputs (the card's data)."""

    model: object  # keras.Model
    metadata: dict  # task, input_shape, class_names, preprocessing
    source: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.metadata["input_shape"])

    def predict(self, names: list[str], x: np.ndarray) -> list[dict]:
        outputs = predictions(self.model, x)
        if self.metadata["task"] != "classification":
            return [{"input": name, "value": float(out[0])} for name, out in zip(names, outputs, strict=True)]
        classes = self.metadata["class_names"]
        return [{"input": name, "class": classes[int(out.argmax())], "probability": float(out.max())}
                for name, out in zip(names, outputs, strict=True)]


def load_predictor(model_ref: str, tracking_uri: str | None = None) -> Predictor:
    """An export folder (model.keras + model.json) or a registry URI such as models:/fashion@champion."""
    if model_ref.startswith("models:/"):
        return _from_registry(model_ref, tracking_uri)
    folder = Path(model_ref)
    if not (folder / KerasFormat.filename).is_file() or not (folder / CARD_JSON).is_file():
        raise ExportError(f"{model_ref} is not an export folder (expected {KerasFormat.filename} and {CARD_JSON} in "
                          f"it, as `sweeper export` writes) nor a models:/NAME@ALIAS or models:/NAME/VERSION URI")
    metadata = _card(folder / CARD_JSON)
    return Predictor(_model(folder / KerasFormat.filename), metadata, str(folder))


def _card(path: Path) -> dict:
    """An export folder's model card (model.json), with what a prediction reads from it."""
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise _damaged(path, "model card", exc) from exc
    if not isinstance(card, dict):
        raise _damaged(path, "model card", f"a JSON {type(card).__name__}, not an object")
    needed = CARD_KEYS + (("class_names",) if card.get("task") == "classification" else ())
    missing = [key for key in needed if key not in card]
    if missing:
        raise _damaged(path, "model card", f"no {', '.join(missing)} in it")
    return card


def _model(path: Path):
    from sweeper.ml.formats import load_keras

    try:
        return load_keras(path)
    except UNREADABLE_KERAS_FILE as exc:
        raise _damaged(path, "Keras model", exc) from exc


def _damaged(path: Path, what: str, why) -> ExportError:
    return ExportError(f"{path}: not a readable {what} ({why}); export the model again with `sweeper export`")


def _from_registry(uri: str, tracking_uri: str | None) -> Predictor:
    from sweeper.store import Store

    model, metadata = Store.open(tracking_uri, create=False).load_registered(uri)
    if not metadata:
        raise ExportError(f"{uri} was not logged by this version of sweeper (its MLmodel has no sweeper metadata); "
                          f"export it with `sweeper export` and predict from that folder")
    return Predictor(model, metadata, uri)


def read_inputs(path: str | Path, predictor: Predictor) -> tuple[list[str], np.ndarray]:
    """Inputs named for the output table, preprocessed as the model's training data was."""
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{path} does not exist; expected an image (PNG/JPEG), a folder of images, a .npy array "
                          f"or a .csv table")
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ExportError(f"{path} holds no PNG or JPEG images")
        return [str(p) for p in images], np.stack([_read_image(p, predictor) for p in images])
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return [str(path)], _read_image(path, predictor)[None]
    if suffix == ".npy":
        return _read_npy(path, predictor)
    if suffix == ".csv":
        return _read_csv(path, predictor)
    raise ExportError(f"{path}: cannot read {suffix or 'a file without extension'}; expected .png, .jpg, .jpeg, "
                      f".npy or .csv")


def _image_shape(predictor: Predictor, path: Path) -> tuple[int, int]:
    prep = predictor.metadata.get("preprocessing", {})
    if prep.get("kind") != "image" or len(predictor.input_shape) != 2:
        raise ExportError(f"{path}: this model takes {_describe(predictor)}, not images")
    return predictor.input_shape


def _read_image(path: Path, predictor: Predictor) -> np.ndarray:
    """Grey-scaled, resized to the model's input and scaled to 0..1, as the training images were."""
    from PIL import Image, UnidentifiedImageError

    height, width = _image_shape(predictor, path)
    try:
        with Image.open(path) as image:
            grey = image.convert("L").resize((width, height), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError) as exc:
        raise ExportError(f"{path}: not a readable image ({exc})") from None
    return np.asarray(grey, dtype=np.float32) / 255.0


def _read_npy(path: Path, predictor: Predictor) -> tuple[list[str], np.ndarray]:
    """Raw values as the dataset stores them (e.g. 0-255 pixels), one example or a batch of them."""
    try:
        x = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ExportError(f"{path}: not a numeric .npy array ({exc})") from None
    shape = predictor.input_shape
    if x.shape == shape:
        x = x[None]
    if x.shape[1:] != shape or not np.issubdtype(x.dtype, np.number):
        raise ExportError(f"{path}: array of shape {x.shape} ({x.dtype}); expected numbers of shape {shape} or "
                          f"(N, {', '.join(map(str, shape))})")
    return [f"{path.name}[{i}]" for i in range(len(x))], _preprocess(x.astype(np.float32), predictor)


def _read_csv(path: Path, predictor: Predictor) -> tuple[list[str], np.ndarray]:
    import pandas as pd

    prep = predictor.metadata.get("preprocessing", {})
    if prep.get("kind") != "tabular":
        raise ExportError(f"{path}: this model takes {_describe(predictor)}; a CSV fits tabular models only")
    features = prep["features"]
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: not a readable CSV table ({str(exc).strip()})") from None
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise ExportError(f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; the model "
                          f"takes {', '.join(features)}")
    values = frame[features].apply(pd.to_numeric, errors="coerce")
    empty = frame[features].isna()
    text = (values.isna() & ~empty).any(axis=1)
    imputed = prep.get("impute") == "mean"
    for bad, what in ((text, "a text value"), (empty.any(axis=1) & (not imputed), "an empty value")):
        if bad.any():
            line = int(np.argmax(bad.to_numpy())) + 2  # 1-based, after the header line
            hint = "" if what == "a text value" else " (the model was trained without --impute)"
            raise ExportError(f"{path}:{line}: every feature must be a number; line {line} has {what}{hint}")
    return [f"{path.name}:{i + 2}" for i in range(len(frame))], _preprocess(values.to_numpy(np.float32), predictor)


def _preprocess(x: np.ndarray, predictor: Predictor) -> np.ndarray:
    prep = predictor.metadata.get("preprocessing", {})
    if prep.get("kind") == "image":
        return (x * prep["scale"]).astype(np.float32)
    if prep.get("kind") == "tabular":
        # NaN (a value left empty, accepted only for a model trained with --impute mean) -> 0, the training mean
        return np.nan_to_num((x - np.asarray(prep["mean"])) / np.asarray(prep["std"])).astype(np.float32)
    return x


def _describe(predictor: Predictor) -> str:
    prep = predictor.metadata.get("preprocessing", {})
    if prep.get("kind") == "tabular":
        return f"a table with columns {', '.join(prep['features'])}"
    return f"inputs of shape {predictor.input_shape}"
