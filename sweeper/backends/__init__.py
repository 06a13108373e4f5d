"""Search engines behind one seam (`base.Backend`). Importing this package imports no engine."""

from .base import Backend, BackendOptions, ShouldPrune, TrialFunction, TrialPlan

#: backend name -> (algorithms, pruners); the first of each is the default
CHOICES = {
    "optuna": (("tpe", "random", "grid", "cmaes", "nsga2"), ("median", "hyperband", "none")),
    "keras-tuner": (("random", "bayesian", "hyperband"), ("none",)),
}


def backend_class(name: str) -> type[Backend]:
    if name == "optuna":
        from .optuna_backend import OptunaBackend

        return OptunaBackend
    if name == "keras-tuner":
        from .keras_tuner_backend import KerasTunerBackend

        return KerasTunerBackend
    raise KeyError(name)


def make_backend(name: str, options: BackendOptions) -> Backend:
    return backend_class(name)(options)


__all__ = ["Backend", "BackendOptions", "CHOICES", "ShouldPrune", "TrialFunction", "TrialPlan", "backend_class",
           "make_backend"]
