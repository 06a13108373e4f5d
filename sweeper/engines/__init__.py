"""Search engines behind one seam (`base.Backend`). Importing this package imports no engine."""

from sweeper.domain.choices import ENGINES
from sweeper.engines.base import Backend, BackendOptions, ShouldPrune, TrialFunction, TrialPlan

CHOICES = ENGINES  # engine name -> (algorithms, pruners), the first of each its default


def backend_class(name: str) -> type[Backend]:
    if name == "optuna":
        from sweeper.engines.optuna_engine import OptunaBackend

        return OptunaBackend
    if name == "keras-tuner":
        from sweeper.engines.keras_tuner_engine import KerasTunerBackend

        return KerasTunerBackend
    raise KeyError(name)


def make_backend(name: str, options: BackendOptions) -> Backend:
    return backend_class(name)(options)


__all__ = ["Backend", "BackendOptions", "CHOICES", "ShouldPrune", "TrialFunction", "TrialPlan", "backend_class",
           "make_backend"]
