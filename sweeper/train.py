"""Fit one trial: early stopping on the objective, per-epoch hooks, NaN -> failed trial."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .data import Dataset
from .errors import TrialFailed
from .model import build_model
from .search_space import Objective

#: Called after every epoch with the 1-based epoch and Keras' logs; may raise TrialPruned.
EpochHook = Callable[[int, dict], None]


@dataclass
class TrialResult:
    objective: float
    metrics: dict[str, float]  # at the best epoch, whose weights the model holds
    history: dict[str, list[float]]
    epochs: int  # epochs trained by this call
    best_epoch: int  # 1-based, counted from the model's first epoch (see initial_epoch)
    seconds: float
    model: Any  # keras.Model


def train_trial(params: dict, dataset: Dataset, objective: Objective, *, max_epochs: int, patience: int,
                seed: int = 0, epoch_hooks: Sequence[EpochHook] = (), initial_epoch: int = 0,
                weights_in: str | None = None, weights_out: str | None = None) -> TrialResult:
    """Train one configuration for epochs `initial_epoch + 1 .. max_epochs`, optionally starting from the
    weights of an earlier trial (`weights_in`) and keeping the best epoch's weights (`weights_out`)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model(params, dataset)
    if weights_in:
        model.optimizer.build(model.trainable_variables)  # so that its state (e.g. Adam's moments) loads too
        model.load_weights(weights_in)
    stopper = keras.callbacks.EarlyStopping(monitor=objective.metric, mode=objective.direction[:3],
                                            patience=patience, restore_best_weights=True)
    hooks = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: [hook(epoch + 1, dict(logs or {})) for hook in epoch_hooks])
    started = time.perf_counter()
    fit = model.fit(dataset.x_train, dataset.y_train, batch_size=params["batch_size"], epochs=max_epochs,
                    initial_epoch=initial_epoch, validation_data=(dataset.x_val, dataset.y_val), verbose=0,
                    callbacks=[_stop_on_nan(), stopper, hooks])
    seconds = time.perf_counter() - started
    history = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    _fail_on_nan(history, objective.metric)
    best = stopper.best_epoch - initial_epoch if stopper.best_weights is not None else len(history["loss"]) - 1
    metrics = {k: vs[best] for k, vs in history.items()}
    if weights_out:  # written beside, then renamed: an interrupted save never leaves half a checkpoint
        partial = f"{weights_out}.partial.weights.h5"
        model.save_weights(partial)
        os.replace(partial, weights_out)
    return TrialResult(metrics[objective.metric], metrics, history, len(history["loss"]), initial_epoch + best + 1,
                       seconds, model)


def evaluate(model, dataset: Dataset) -> dict[str, float]:
    """Test-split metrics of a trained model, named test_*."""
    scores = model.evaluate(dataset.x_test, dataset.y_test, verbose=0, return_dict=True)
    return {f"test_{k}": float(v) for k, v in scores.items()}


def _fail_on_nan(history: dict, metric: str) -> None:
    for name in ("loss", metric):
        for epoch, value in enumerate(history.get(name, []), start=1):
            if not math.isfinite(value):
                raise TrialFailed(f"{name} became {value} at epoch {epoch}")
    if metric not in history:
        raise TrialFailed(f"training reported no '{metric}' (it reported {', '.join(history)})")


def _stop_on_nan():
    """Keras' TerminateOnNaN, without its message on stdout (the trial's state says it)."""
    import keras

    class StopOnNaN(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.model.stop_training = True

    return StopOnNaN()
