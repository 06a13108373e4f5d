"""Several trained models as one: a functional Keras model whose output is the mean of its members' outputs (class
probabilities, or values), so that saving, export to every format, the registry and `predict` treat it as a
single model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sweeper.domain.space import Objective
from sweeper.ml.data import Dataset
from sweeper.ml.model import loss_and_metrics, predictions


def average(members: Sequence[Any], dataset: Dataset, names: Sequence[str]) -> Any:
    """One model averaging `members` (keras.Models taking the dataset's examples), each kept under its name
    (e.g. trial_007), compiled with the task's plain loss and metrics (for `evaluate`)."""
    import keras

    if len(members) < 2 or len(members) != len(names):
        raise ValueError(f"an ensemble needs two members or more, each with a name; got {len(members)} and "
                         f"{len(names)} names")
    inputs = keras.Input(shape=dataset.input_shape, name="inputs")
    outputs = [_renamed(member, name)(inputs) for member, name in zip(members, names, strict=True)]
    return _compiled(keras.Model(inputs, keras.layers.Average(name="average")(outputs), name="sweeper_ensemble"),
                     dataset)


#: one-pixel shifts of an image, (rows down, columns right)
SHIFTS = {"down": (1, 0), "up": (-1, 0), "right": (0, 1), "left": (0, -1)}
#: the share of a model's output with test-time shifts that its outputs on the four shifted images take together
SHIFTED_SHARE = 1 / 3


def with_shifted_views(model: Any, dataset: Dataset) -> Any:
    """One model whose output is `model`'s on the image (2/3) averaged with its outputs on the image shifted one
    pixel down, up, right and left (1/12 each; the pixels shifted in are 0): test-time augmentation, built of
    Keras' own layers (padding and cropping) so that it saves, exports and predicts as any model does. `model` is
    shared, not copied: see `shifted_to_keep` for a model to save."""
    import keras

    if not dataset.shiftable():
        raise ValueError(f"test-time shifts need images of height x width (x channels), but the inputs of "
                         f"{dataset.name} have shape {dataset.input_shape}")
    inputs = keras.Input(shape=dataset.input_shape, name="inputs")
    views = [model(inputs), *(model(_shifted(inputs, name, dataset.input_shape)) for name in SHIFTS)]
    weights = [1 - SHIFTED_SHARE] + [SHIFTED_SHARE / len(SHIFTS)] * len(SHIFTS)
    weighted = [keras.layers.Rescaling(w, name=f"weight_{i}")(v)
                for i, (w, v) in enumerate(zip(weights, views, strict=True))]
    return _compiled(keras.Model(inputs, keras.layers.Add(name="shifted_views")(weighted),
                                 name="sweeper_shifted_views"), dataset)


def shifted_to_keep(model: Any, dataset: Dataset) -> Any:
    """`with_shifted_views` of a frozen copy of `model` without its optimizer, as an ensemble holds its members:
    saved, it loads without optimizer state to match. The copy shares `model`'s arrays, which the next call of
    either on JAX may give away: use the result, not `model`, from here on."""
    return with_shifted_views(_renamed(model, model.name), dataset)


def _shifted(images: Any, way: str, shape: tuple[int, ...]) -> Any:
    """`images` moved one pixel `way` (one of SHIFTS), zeros shifted in (a channel added and taken away again for
    images without one)."""
    import keras

    (dy, dx), name = SHIFTS[way], f"shift_{way}"
    x = keras.layers.Reshape((*shape, 1), name=f"{name}_channel")(images) if len(shape) == 2 else images
    x = keras.layers.ZeroPadding2D(((max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))), name=f"{name}_pad")(x)
    x = keras.layers.Cropping2D(((max(-dy, 0), max(dy, 0)), (max(-dx, 0), max(dx, 0))), name=f"{name}_crop")(x)
    return keras.layers.Reshape(shape, name=f"{name}_back")(x) if len(shape) == 2 else x


def _compiled(model: Any, dataset: Dataset) -> Any:
    loss, metrics = loss_and_metrics(dataset.task)
    model.compile(loss=loss, metrics=metrics)
    return model


def _renamed(member: Any, name: str) -> Any:
    """A copy of the member under a name of its own (every trial's MLP is called sweeper_mlp, and a functional
    model's layers need distinct names), with its weights but without its training state (its optimizer)."""
    from sweeper.ml.initial import copy_with_weights

    copy = copy_with_weights(member)  # not a clone: Keras' would compile the copy with the member's optimizer
    copy.name = name
    copy.trainable = False
    return copy


def validation_predictions(model: Any, dataset: Dataset) -> np.ndarray:
    return np.asarray(predictions(model, dataset.inputs(dataset.x_val)), dtype=np.float64)


def choose_members(predicted: Sequence[np.ndarray], dataset: Dataset, objective: Objective) -> list[int]:
    """Which candidates to average, from their predictions on the validation split (models trained on the training
    split, the best trial's first), by greedy forward selection (Caruana et al., 2004): starting from the best
    alone, add the candidate whose addition improves the averaged prediction's validation objective most, while
    one does. Returns their indices, 0 first; [0] alone when averaging buys nothing (weaker trials pull a mean
    down)."""
    chosen, best = [0], _score(objective.metric, dataset, predicted[0])
    while len(chosen) < len(predicted):
        scores = {i: _score(objective.metric, dataset, np.mean([predicted[j] for j in [*chosen, i]], axis=0))
                  for i in range(len(predicted)) if i not in chosen}
        pick = (max if objective.direction == "maximize" else min)(scores, key=scores.get)
        if not objective.better(scores[pick], best):
            break
        chosen.append(pick)
        best = scores[pick]
    return chosen


def scores_without_and_with_shifts(model: Any, dataset: Dataset, objective: Objective) -> tuple[float, float]:
    """The validation objective of `model` (trained on the training split alone) without and with test-time
    shifts."""
    return tuple(_score(objective.metric, dataset, validation_predictions(m, dataset))
                 for m in (model, with_shifted_views(model, dataset)))


def _score(metric: str, dataset: Dataset, predicted: np.ndarray) -> float:
    """A validation metric (as Keras names it in the logs) of predictions on the validation split."""
    y = np.asarray(dataset.y_val)
    if dataset.task == "classification":
        if metric == "val_accuracy":
            return float(np.mean(predicted.argmax(axis=1) == y))
        picked = predicted[np.arange(len(y)), y.astype(int).reshape(-1)]
        return float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))  # val_loss: cross-entropy
    errors = predicted.reshape(-1) - y.astype(np.float64).reshape(-1)
    return {"val_mae": float(np.mean(np.abs(errors))), "val_rmse": float(np.sqrt(np.mean(errors ** 2)))}.get(
        metric, float(np.mean(errors ** 2)))  # val_loss: mean squared error
