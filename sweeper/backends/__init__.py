"""Search engines behind one seam (`base.Backend`). Importing this package imports no engine."""

from .base import Backend, BackendOptions, ShouldPrune, TrialFunction, TrialPlan

#: backend name -> (algorithms, pruners); the first of each is the default
CHOICES = {
    "optuna": (("tpe", "random", "grid", "cmaes", "nsga2"), ("median", "hyperband", "none")),
    "keras-tuner": (("random", "bayesian", "hyperband"), ("none",)),
}


def make_backend(name: str, options: BackendOptions) -> Backend:
    if name == "optuna":
        from .optuna_backend import OptunaBackend

        return OptunaBackend(options)
    if name == "keras-tuner":
        from .keras_tuner_backend import KerasTunerBackend

        return KerasTunerBackend(options)
    raise KeyError(name)


__all__ = ["Backend", "BackendOptions", "CHOICES", "ShouldPrune", "TrialFunction", "TrialPlan",
           "make_backend"]
