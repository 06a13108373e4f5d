"""Search engines behind one seam (`base.Backend`). Importing this package imports no engine."""

from .base import Backend, BackendOptions, ShouldPrune, TrialFunction

#: backend name -> (algorithms, pruners); the first of each is the default
CHOICES = {"optuna": (("tpe", "random", "grid", "cmaes"), ("median", "hyperband", "none"))}


def make_backend(name: str, options: BackendOptions) -> Backend:
    if name == "optuna":
        from .optuna_backend import OptunaBackend

        return OptunaBackend(options)
    raise KeyError(name)


__all__ = ["Backend", "BackendOptions", "CHOICES", "ShouldPrune", "TrialFunction", "make_backend"]
