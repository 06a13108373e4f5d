"""The engines: the seam (`base.Engine`, driven by a trial function over a Suggester) and one adapter per search
engine, Optuna (`optuna_engine`, the default) and Keras Tuner (`keras_tuner_engine`). They see only the domain:
neither the store nor Keras training. Importing this package imports no engine."""

from sweeper.engines.base import Engine, EngineOptions, LastTrial, ShouldPrune, TrialFunction, TrialPlan


def engine_class(name: str) -> type[Engine]:
    if name == "optuna":
        from sweeper.engines.optuna_engine import OptunaEngine

        return OptunaEngine
    if name == "keras-tuner":
        from sweeper.engines.keras_tuner_engine import KerasTunerEngine

        return KerasTunerEngine
    raise KeyError(name)


def make_engine(name: str, options: EngineOptions) -> Engine:
    return engine_class(name)(options)


__all__ = ["Engine", "EngineOptions", "LastTrial", "ShouldPrune", "TrialFunction", "TrialPlan", "engine_class",
           "make_engine"]
