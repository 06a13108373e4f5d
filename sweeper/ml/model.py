"""A compiled Keras model for one sampled configuration: sweeper's MLP, or the model a user's builder makes."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sweeper.domain.errors import SweeperError
from sweeper.ml import initial
from sweeper.ml.data import Dataset

#: at most this many examples per step when a trained model predicts or is evaluated: Keras' default of 32 makes
#: evaluating the test split cost 0.7-1.3 s where 1,024 costs 0.35-0.4 s (bench/RESULTS.md)
PREDICT_BATCH = 1024


def predict_batch(rows: int) -> int:
    """The batch size for predicting or evaluating `rows` examples: at most PREDICT_BATCH, the batches as even as
    they can be, so that a split whose size allows it (Fashion-MNIST's 10,000 test images: 10 of 1,000, not 9 of
    1,024 and one of 784) runs in batches of one shape; on JAX each shape is compiled, 0.3 s of a model's first
    evaluation on the test split (bench/RESULTS.md)."""
    return -(-rows // -(-rows // PREDICT_BATCH)) if rows > 0 else PREDICT_BATCH


def predictions(model, x):
    """`model`'s outputs for the examples `x`, in `predict_batch` batches."""
    return model.predict(x, verbose=0, batch_size=predict_batch(len(x)))


def outputs_like(model, x):
    """Zeros of the shape and type of `model`'s outputs for the examples `x`, from its symbolic output spec: what a
    signature needs, without compiling a prediction (0.2 s on JAX for a new model)."""
    import keras
    import numpy as np

    try:
        spec = model.compute_output_spec(keras.KerasTensor(x.shape, dtype=str(x.dtype)))
    except (NotImplementedError, TypeError, ValueError):  # a user's layer that cannot be traced symbolically
        return predictions(model, x)
    return np.zeros(spec.shape, dtype=spec.dtype)


#: builders given in memory (a notebook's function), by the name their space records: this process only
_LOCAL_BUILDERS: dict[str, Callable] = {}


@dataclass(frozen=True)
class DataInfo:
    """What a model builder is told about the data: the shape of one example, the outputs, the task."""

    input_shape: tuple[int, ...]
    n_outputs: int  # classes, or 1 for regression
    task: str  # classification or regression
    class_names: tuple[str, ...] | None


def build_model(params: dict, dataset: Dataset, *, builder: str | None = None, **compile_options) -> Any:
    """The model of one configuration, compiled with its optimizer and learning rate and the task's loss and
    metrics: sweeper's MLP, or `builder(params, data_info)`'s model (`package.module:function`)."""
    if builder is None:
        model = _mlp(params, dataset)
    else:
        info = DataInfo(dataset.input_shape, dataset.n_outputs, dataset.task, dataset.class_names)
        model = resolve_builder(builder)(params, info)
        _check_output(model, info, builder)
    loss, metrics = loss_and_metrics(dataset.task, params.get("label_smoothing", 0.0))
    model.compile(optimizer=make_optimizer(params), loss=loss, metrics=metrics, **compile_options)
    initial.optimizer_built(model)
    return model


def _mlp(params: dict, dataset: Dataset):
    """An MLP from one sampled configuration: inputs optionally standardised, hidden Dense layers (each
    optionally batch-normalised before its activation), dropout, task-shaped output; no hidden layer at all is a
    linear model."""
    import keras

    kernel, output, zeros, ones = (initial.drawn_by_numpy(name)
                                   for name in (params["kernel_initializer"], "glorot_uniform", "zeros", "ones"))
    regularizer = keras.regularizers.L2(params["l2"]) if params.get("l2") else None
    normalised = params.get("batch_norm", False)
    layers = [keras.Input(shape=dataset.input_shape), keras.layers.Flatten()]
    if params.get("standardize"):
        layers.append(_standardizer(dataset))
    for i in range(params["n_layers"]):
        layers.append(keras.layers.Dense(params[f"units_{i}"], activation=None if normalised else params["activation"],
                                         use_bias=not normalised, kernel_initializer=kernel, bias_initializer=zeros,
                                         kernel_regularizer=regularizer, name=f"hidden_{i}"))
        if normalised:  # the normalisation's own shift replaces the Dense bias
            layers.append(keras.layers.BatchNormalization(
                gamma_initializer=ones, beta_initializer=zeros, moving_mean_initializer=zeros,
                moving_variance_initializer=ones, name=f"batch_norm_{i}"))
            layers.append(keras.layers.Activation(params["activation"], name=f"activation_{i}"))
        if params["dropout"] > 0:
            layers.append(keras.layers.Dropout(params["dropout"], name=f"dropout_{i}"))
    classify = dataset.task == "classification"
    layers.append(keras.layers.Dense(dataset.n_outputs if classify else 1, activation="softmax" if classify else None,
                                     kernel_initializer=output, bias_initializer=zeros, name="output"))
    return initial.keras_initializers_restored(keras.Sequential(layers, name="sweeper_mlp"))


#: a feature varying less than this share of the most varying one is scaled as if it varied that much: the
#: near-constant pixels at an image's border would otherwise turn a faint stroke there into a huge input
LEAST_SCALE = 0.01


def _standardizer(dataset: Dataset):
    """A Keras Rescaling layer that standardises each (flattened) feature with its mean and standard deviation over
    the training split, so that the saved model standardises its inputs itself (held as arrays in the layer's
    config, they become constants of every exported format; Normalization's own tensors do not convert to ONNX)."""
    import keras
    import numpy as np

    x = dataset.x_train.reshape(len(dataset.x_train), -1)
    mean, std = x.mean(axis=0, dtype=np.float64), x.std(axis=0, dtype=np.float64)
    if dataset.divisor is not None:  # of the model's inputs, the held values divided
        mean, std = mean / dataset.divisor, std / dataset.divisor
    std = np.maximum(std, LEAST_SCALE * std.max()) if std.max() > 0 else np.ones_like(std)
    return keras.layers.Rescaling(scale=(1 / std).astype("float32"), offset=(-mean / std).astype("float32"),
                                  name="standardize")


def loss_and_metrics(task: str, label_smoothing: float = 0.0):
    import keras

    if task == "classification":
        if label_smoothing:
            from sweeper.ml.losses import SmoothedSparseCrossentropy

            return SmoothedSparseCrossentropy(label_smoothing), ["accuracy"]
        return "sparse_categorical_crossentropy", ["accuracy"]
    return "mse", [keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.RootMeanSquaredError(name="rmse")]


def _check_output(model, info: DataInfo, builder: str) -> None:
    import keras

    if not isinstance(model, keras.Model):
        raise SweeperError(f"the model builder {builder} returned {type(model).__name__}, but a keras.Model is "
                           f"needed")
    shape = tuple(model.output_shape[1:]) if not isinstance(model.output_shape, list) else None
    if shape != (info.n_outputs,):
        raise SweeperError(f"the model builder {builder} makes outputs of shape {shape}, but this "
                           f"{info.task} needs ({info.n_outputs},): one "
                           f"{'probability per class (softmax)' if info.task == 'classification' else 'value'}")


def local_builder(function: Callable) -> str:
    """A builder given in memory under a name its space can record; it runs in this process only."""
    name = f"local:{function.__module__}.{function.__qualname__}"
    _LOCAL_BUILDERS[name] = function
    return name


def importable_name(function: Callable) -> str | None:
    """`package.module:function` when other processes can import this very function, else None."""
    module, name = getattr(function, "__module__", None), getattr(function, "__qualname__", "")
    if not module or module == "__main__" or "." in name or "<" in name:
        return None
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return f"{module}:{name}" if found is function else None


def resolve_builder(builder: str) -> Callable:
    """The function a space's `model:` names (or a builder given in memory to this process)."""
    if builder in _LOCAL_BUILDERS:
        return _LOCAL_BUILDERS[builder]
    if builder.startswith("local:"):
        raise SweeperError(f"the model builder {builder[6:]} was given in memory to another process; give it "
                           f"again (sweeper.search(..., build=...)) or name an importable one as module:function")
    module, _, name = builder.partition(":")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise SweeperError(f"cannot import the model builder {builder} ({exc}); the module must be importable "
                           f"where trials run (on the PYTHONPATH, or installed)") from None
    if not callable(function):
        raise SweeperError(f"the model builder {builder} is not a function")
    return function


def make_optimizer(params: dict):
    """The configuration's optimizer at its learning rate, with decoupled weight decay when asked (AdamW's
    own, every other Keras optimizer's `weight_decay`) and an exponential moving average of the weights when
    `ema` is a momentum (Keras' `use_ema`; training evaluates and keeps the averaged weights)."""
    import keras

    name, lr = params["optimizer"], params["learning_rate"]
    decay = {"weight_decay": params.get("weight_decay") or (0.0 if name == "adamw" else None)}
    if params.get("ema"):
        decay |= {"use_ema": True, "ema_momentum": params["ema"]}
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=params.get("momentum", 0.0), nesterov=params.get("nesterov", False),
                                    **decay)
    classes = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
               "adagrad": keras.optimizers.Adagrad, "adamw": keras.optimizers.AdamW,
               "nadam": keras.optimizers.Nadam}
    return classes[name](lr, **decay)
