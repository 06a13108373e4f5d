"""Several trained models as one: a functional Keras model whose output is the mean of its members' outputs (class
probabilities, or values), so that saving, export to every format, the registry and `predict` treat it as a
single model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sweeper.ml.data import Dataset
from sweeper.ml.model import loss_and_metrics


def average(members: Sequence[Any], dataset: Dataset, names: Sequence[str]) -> Any:
    """One model averaging `members` (keras.Models taking the dataset's examples), each kept under its name
    (e.g. trial_007), compiled with the task's plain loss and metrics (for `evaluate`)."""
    import keras

    if len(members) < 2 or len(members) != len(names):
        raise ValueError(f"an ensemble needs two members or more, each with a name; got {len(members)} and "
                         f"{len(names)} names")
    inputs = keras.Input(shape=dataset.input_shape, name="inputs")
    outputs = [_renamed(member, name)(inputs) for member, name in zip(members, names, strict=True)]
    model = keras.Model(inputs, keras.layers.Average(name="average")(outputs), name="sweeper_ensemble")
    loss, metrics = loss_and_metrics(dataset.task)
    model.compile(loss=loss, metrics=metrics)
    return model


def _renamed(member: Any, name: str) -> Any:
    """A copy of the member under a name of its own (every trial's MLP is called sweeper_mlp, and a functional
    model's layers need distinct names), with its weights but without its training state (its optimizer)."""
    import keras

    try:  # from its architecture alone (cloning would compile the copy with the member's optimizer)
        copy = type(member).from_config(member.get_config())
    except (TypeError, ValueError, NotImplementedError):  # a subclassed model of a user's builder
        copy = keras.models.clone_model(member)
    copy.set_weights(member.get_weights())
    copy.name = name
    copy.trainable = False
    return copy
