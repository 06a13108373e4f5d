"""Fit one trial: early stopping on the objective, per-epoch hooks, NaN -> failed trial."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sweeper.domain.errors import TrialFailed, TrialPruned
from sweeper.domain.space import Objective
from sweeper.ml import steps
from sweeper.ml.data import Dataset
from sweeper.ml.model import build_model, predict_batch, predictions
from sweeper.ml.tensors import batches
from sweeper.runtime import interrupts

#: Keras compile options that make an epoch cheap on CPU: 64 steps per call into TensorFlow instead of one
#: cuts an epoch at batch 32 from about 12x to 5.5x the matmul ideal; XLA did not pay for its compile time
#: (bench/epoch_speed.py, bench/RESULTS.md).
COMPILE_OPTIONS = {"steps_per_execution": 64}

#: After an epoch without improvement the learning rate drops to 30%, when the early-stopping patience
#: leaves room for that to show (patience >= 2): a good configuration gains about half a point of
#: validation accuracy in the same epochs (bench/RESULTS.md).
PLATEAU_FACTOR, PLATEAU_MIN_PATIENCE = 0.3, 2

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
                weights_in: str | None = None, weights_out: str | None = None,
                builder: str | None = None, stop_when: Callable[[], bool] = lambda: False) -> TrialResult:
    """Train one configuration for epochs `initial_epoch + 1 .. max_epochs`, optionally starting from the
    weights of an earlier trial (`weights_in`) and keeping the best epoch's weights (`weights_out`); training
    also ends after the first epoch at whose end `stop_when()` holds (the time budget), the best epoch kept."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model(params, dataset, builder=builder, **COMPILE_OPTIONS)
    if weights_in:
        if not model.optimizer.built:  # `build_model` builds it, unless a builder's model is built at its first call
            model.optimizer.build(model.trainable_variables)  # so that its state (e.g. Adam's moments) loads too
        model.load_weights(weights_in)
    stopper = _early_stopping(params, objective, patience=patience, max_epochs=max_epochs)
    callbacks = [_stop_on_nan(), _checkpoint(), *_averaged_weights(model), stopper]
    schedule = _schedule(params, objective, patience=patience, max_epochs=max_epochs)
    if schedule is not None:  # before the hooks, so that they see (and log) the learning rate
        callbacks.append(schedule)
    callbacks += [_hooks(epoch_hooks), _stop_when(stop_when)]
    started = time.perf_counter()
    try:
        with training_inputs(model, (dataset.for_fit("x_train"), dataset.for_fit("y_train")),
                             (dataset.for_fit("x_val"), dataset.for_fit("y_val")), batch_size=params["batch_size"],
                             divisor=dataset.divisor) as inputs:
            fit = model.fit(**inputs, epochs=max_epochs, initial_epoch=initial_epoch, verbose=0, callbacks=callbacks)
    except TrialPruned as exc:
        exc.train_seconds = time.perf_counter() - started
        raise
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


def _early_stopping(params: dict, objective: Objective, *, patience: int, max_epochs: int):
    """Keras' early stopping on the objective, the best epoch's weights kept. A cosine schedule runs to its end and
    its best epoch is taken from its second half: its gains come as its rate falls, while the validation score is
    noisy at a high rate; a patience of a few epochs stopped the hand recipe's own configuration at 8 epochs of 20,
    and, watching its second half only, at 14 on JAX (val 0.9060 where the whole schedule reaches 0.914-0.916:
    bench/RESULTS.md). Its bad configurations are the pruner's to stop. Any other schedule stops after `patience`
    epochs without improvement."""
    import keras

    cosine = params.get("lr_schedule") == "cosine"
    return keras.callbacks.EarlyStopping(monitor=objective.metric, mode=objective.direction[:3],
                                         patience=max_epochs if cosine else patience, restore_best_weights=True,
                                         start_from_epoch=max_epochs // 2 if cosine else 0)


def _averaged_weights(model) -> list:
    """With weight averaging (`ema`), Keras' swap of the averaged weights into the model at each epoch's end and
    for validation, before the early stopper: the objective, the best epoch and the weights kept are the
    averaged ones (the optimizer's own end of `fit` sets the last average, then the stopper restores the best)."""
    import keras

    return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if getattr(model.optimizer, "use_ema", False) else []


def _schedule(params: dict, objective: Objective, *, patience: int, max_epochs: int):
    """The configuration's learning-rate schedule as a Keras callback (None: the rate is kept)."""
    import keras

    kind = params.get("lr_schedule", "plateau")
    if kind == "cosine":  # epoch by epoch, so that the refit can replay the rates the trial logged
        start = params["learning_rate"]
        return keras.callbacks.LearningRateScheduler(lambda epoch, rate: cosine_rate(start, epoch + 1, max_epochs))
    if kind == "plateau" and patience >= PLATEAU_MIN_PATIENCE:
        return keras.callbacks.ReduceLROnPlateau(monitor=objective.metric, mode=objective.direction[:3],
                                                 factor=PLATEAU_FACTOR, patience=1)
    return None


def cosine_rate(start: float, epoch: int, epochs: int) -> float:
    """The learning rate of (1-based) `epoch` of a cosine decay from `start` towards 0 over `epochs`."""
    return start * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))


def refit(trial_model, dataset: Dataset, *, epochs: int, batch_size: int, learning_rates: dict[int, float],
          seed: int = 0, epoch_hooks: Sequence[EpochHook] = ()):
    """The trial's configuration trained afresh on the training and validation splits together, for the
    number of epochs at which the trial did best and with the trial's learning rate per epoch (1-based
    `learning_rates`; epochs missing keep the rate): the final model uses every example but the test split
    (under a subset, the same share of the validation split as of the training one)."""
    import keras

    from sweeper.ml.initial import fresh_copy, optimizer_built

    keras.utils.set_random_seed(seed)
    model = fresh_copy(trial_model)  # same layers and settings, new weights drawn as a trial's are
    model.compile_from_config({**trial_model.get_compile_config(), **COMPILE_OPTIONS})  # a fresh optimizer
    optimizer_built(model)
    x, y = dataset.refit_arrays()
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, rate: learning_rates.get(epoch + 1, rate))
    with training_inputs(model, (x, y), batch_size=batch_size, divisor=dataset.divisor) as inputs:
        model.fit(**inputs, epochs=epochs, verbose=0,
                  callbacks=[_stop_on_nan(), _checkpoint(), schedule, _hooks(epoch_hooks)])
    return model


@contextlib.contextmanager
def training_inputs(model, train: tuple, validation: tuple | None = None, *, batch_size: int,
                    divisor: int | None = None) -> Iterator[dict]:
    """Keras' `fit` arguments for `model` to train on `train` (x, y), shuffled, and be validated on `validation`, for
    the length of the block: on JAX, steps looped over the arrays on the device (`sweeper.ml.steps`), elsewhere
    `_inputs`' batches."""
    if steps.applies(model, *train, *(validation or ())):
        with steps.on_device(model, train, validation, batch_size=batch_size, divisor=divisor) as inputs:
            yield inputs
        return
    inputs = _inputs(*train, batch_size, divisor=divisor)
    if validation is not None:
        inputs["validation_data"] = _validation(*validation, batch_size, divisor=divisor)
    yield inputs


def _inputs(x, y, batch_size: int, shuffle: bool = True, divisor: int | None = None) -> dict:
    """Keras' `fit` or `evaluate` arguments for (x, y) in batches (`sweeper.ml.tensors.batches`)."""
    pipeline = batches(x, y, batch_size=batch_size, shuffle=shuffle, divisor=divisor)
    if pipeline is None:
        return {"x": x, "y": y, "batch_size": batch_size}
    return {"x": pipeline, "shuffle": False} if shuffle else {"x": pipeline}  # it shuffles: Keras' would warn


def _validation(x, y, batch_size: int, divisor: int | None = None):
    """Keras' `validation_data` for (x, y), in batches of `batch_size` as Keras' own would be."""
    pipeline = batches(x, y, batch_size=batch_size, shuffle=False, divisor=divisor)
    return (x, y) if pipeline is None else pipeline


def for_users(model):
    """The model recompiled with Keras' default execution options and loss, as a user of a saved model expects
    (training's 64 steps per call would show `64/4` steps in a plain predict(); sweeper's smoothed loss would
    need sweeper to load); its weights are kept."""
    from sweeper.ml.losses import plain

    config = model.get_compile_config()
    if config and (config.get("steps_per_execution", 1) != 1 or plain(config) is not config):
        model.compile_from_config({**plain(config), "steps_per_execution": 1})
    return model


def evaluate(model, dataset: Dataset) -> dict[str, float]:
    """Test-split metrics of a trained model, named test_*; the loss is always Keras' own (a model that trained
    on smoothed labels is scored as the users' copy of it is)."""
    from sweeper.ml.losses import plain

    config = model.get_compile_config() or {}
    if plain(config) is not config:
        return _evaluated_unsmoothed(model, dataset)
    batch = predict_batch(len(dataset.x_test))
    scores = model.evaluate(**_inputs(dataset.for_fit("x_test"), dataset.for_fit("y_test"), batch, shuffle=False,
                                      divisor=dataset.divisor), verbose=0, return_dict=True)
    return {f"test_{k}": float(v) for k, v in scores.items()}


def _evaluated_unsmoothed(model, dataset: Dataset) -> dict[str, float]:
    """`evaluate` of a model trained on sweeper's smoothed loss (a classifier compiled with accuracy alone), from
    its predictions on the test split: the accuracy, and the cross-entropy Keras' own loss computes (probabilities
    normalised and clipped to Keras' epsilon). In NumPy: on JAX, Keras' eager ops would each compile (0.2-0.4 s)."""
    import keras

    predicted = np.asarray(predictions(model, dataset.inputs(dataset.x_test)), dtype=np.float64)
    truth = np.asarray(dataset.y_test, dtype=np.int64)
    accuracy = np.mean(predicted.argmax(axis=1) == truth)
    probability = predicted[np.arange(len(truth)), truth] / predicted.sum(axis=1)
    loss = -np.log(np.clip(probability, keras.config.epsilon(), 1 - keras.config.epsilon())).mean()
    return {"test_accuracy": float(accuracy), "test_loss": float(loss)}


def model_costs(model, dataset: Dataset, *, latency: bool = False) -> dict[str, float]:
    """What a trained model costs: its parameter count, and (when asked: it takes about a second) the
    median wall time in milliseconds of predicting one example, over 50 calls after 5 to warm up."""
    costs = {"param_count": float(model.count_params())}
    if latency:
        example = dataset.inputs(dataset.x_test[:1])
        for _ in range(5):
            model.predict_on_batch(example)
        times = []
        for _ in range(50):
            started = time.perf_counter()
            model.predict_on_batch(example)
            times.append(time.perf_counter() - started)
        costs["latency_ms"] = 1000 * sorted(times)[len(times) // 2]
    return costs


def _fail_on_nan(history: dict, metric: str) -> None:
    for name in ("loss", metric):
        for epoch, value in enumerate(history.get(name, []), start=1):
            if not math.isfinite(value):
                raise TrialFailed(f"{name} became {value} at epoch {epoch}")
    if metric not in history:
        raise TrialFailed(f"training reported no '{metric}' (it reported {', '.join(history)})")


def _hooks(epoch_hooks: Sequence[EpochHook]):
    """The hooks called after every epoch with the 1-based epoch and Keras' logs."""
    import keras

    return keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: [hook(epoch + 1, dict(logs or {})) for hook in epoch_hooks])


def _stop_on_nan():
    """Keras' TerminateOnNaN, without its message on stdout (the trial's state says it)."""
    import keras

    class StopOnNaN(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.model.stop_training = True

    return StopOnNaN()


def _stop_when(condition: Callable[[], bool]):
    """Ends training after an epoch at whose end `condition()` holds; the early stopper's end of training then
    restores the best epoch's weights, as when it stops."""
    import keras

    class StopWhen(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if condition():
                self.model.stop_training = True

    return StopWhen()


def _checkpoint():
    """An interrupt checkpoint every few batches (see sweeper.interrupts): a Ctrl-C or SIGTERM that Python
    swallowed where it landed still stops the training."""
    import keras

    class InterruptCheckpoint(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            interrupts.check()

    return InterruptCheckpoint()
