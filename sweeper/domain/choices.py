"""The engines and what each offers, the first of each list its default: the one table every layer reads (the
command line for its choices, the plan for its checks, the engines for their defaults)."""

from __future__ import annotations

#: the model file formats `sweeper export` writes (sweeper.ml.formats has one class each)
FORMATS = ("keras", "savedmodel", "onnx", "tflite")

#: engine name -> (algorithms, pruners)
ENGINES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "optuna": (("tpe", "random", "grid", "cmaes", "nsga2"), ("median", "hyperband", "none")),
    "keras-tuner": (("random", "bayesian", "hyperband"), ("none",)),
}

#: the Keras backends sweeper trains on, the default first (README, "Keras backends": JAX's epochs are faster on
#: large models, its compiles make short trials slower, and Keras imports TensorFlow beside it)
KERAS_BACKENDS = ("tensorflow", "jax")
