"""The anchors sweeper is judged against: what a user writes by hand with Keras Tuner or Optuna alone.

Run one: .venv/bin/python bench/anchors.py keras-tuner|optuna --seed 0 --workdir DIR
Same space as search_spaces/fashion.yaml, written out by hand in each library's own API; same
data split as sweeper (sweeper.data); library defaults everywhere else (Keras Tuner RandomSearch;
Optuna TPESampler + MedianPruner). Prints one JSON line: the best model's test accuracy, the
number of trials, and the wall-clock time at which a model first reached the target validation
accuracy (None if never).
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ACTIVATIONS = ["relu", "elu", "selu", "tanh", "sigmoid", "leaky_relu"]
INITIALIZERS = ["he_normal", "glorot_uniform", "lecun_normal"]
OPTIMIZERS = ["adam", "sgd", "rmsprop", "adagrad"]
BATCH_SIZES = [32, 64, 128, 256]


def build_mlp(keras, values: dict):
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten()])
    for i in range(values["n_layers"]):
        model.add(keras.layers.Dense(values[f"units_{i}"], activation=values["activation"],
                                     kernel_initializer=values["kernel_initializer"]))
        if values["dropout"] > 0:
            model.add(keras.layers.Dropout(values["dropout"]))
    model.add(keras.layers.Dense(10, activation="softmax"))
    lr = values["learning_rate"]
    optimizer = {"adam": lambda: keras.optimizers.Adam(lr), "rmsprop": lambda: keras.optimizers.RMSprop(lr),
                 "adagrad": lambda: keras.optimizers.Adagrad(lr),
                 "sgd": lambda: keras.optimizers.SGD(lr, momentum=values["momentum"], nesterov=values["nesterov"])}
    model.compile(optimizer=optimizer[values["optimizer"]](), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


class TargetClock:
    """A Keras callback noting the wall-clock time of the first epoch whose val_accuracy reached the target."""

    def __new__(cls, keras, target, found):
        class Clock(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if found.get("at") is None and (logs or {}).get("val_accuracy", 0) >= target:
                    found["at"] = time.time()

        return Clock()


def keras_tuner_random(data, args, found) -> tuple[float, int]:
    import keras
    import keras_tuner as kt

    class MLP(kt.HyperModel):
        def build(self, hp):
            values = {"n_layers": hp.Int("n_layers", 1, 3)}
            for i in range(3):
                with hp.conditional_scope("n_layers", list(range(i + 1, 4))):
                    values[f"units_{i}"] = hp.Int(f"units_{i}", 32, 512, sampling="log")
            values["learning_rate"] = hp.Float("learning_rate", 1e-4, 3e-2, sampling="log")
            values["optimizer"] = hp.Choice("optimizer", OPTIMIZERS)
            with hp.conditional_scope("optimizer", ["sgd"]):
                values["momentum"] = hp.Float("momentum", 0.0, 0.95)
                values["nesterov"] = hp.Boolean("nesterov")
            values["dropout"] = hp.Float("dropout", 0.0, 0.5)
            values["activation"] = hp.Choice("activation", ACTIVATIONS)
            values["kernel_initializer"] = hp.Choice("kernel_initializer", INITIALIZERS)
            return build_mlp(keras, values)

        def fit(self, hp, model, *fit_args, **kwargs):
            return model.fit(*fit_args, batch_size=hp.Choice("batch_size", BATCH_SIZES), **kwargs)

    tuner = kt.RandomSearch(MLP(), objective="val_accuracy", max_trials=args.trials, seed=args.seed,
                            directory=args.workdir, project_name="kt", overwrite=True)
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=args.patience)
    tuner.search(data.x_train, data.y_train, epochs=args.max_epochs, validation_data=(data.x_val, data.y_val),
                 callbacks=[stop, TargetClock(keras, args.target, found)], verbose=0)
    best = tuner.get_best_models(1)[0]
    return best.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)["accuracy"], len(tuner.oracle.trials)


def optuna_tpe(data, args, found) -> tuple[float, int]:
    import keras
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    best = {"value": -1.0, "path": str(Path(args.workdir) / "best.keras")}

    class Pruning(keras.callbacks.Callback):
        def __init__(self, trial):
            super().__init__()
            self.trial = trial

        def on_epoch_end(self, epoch, logs=None):
            self.trial.report(logs["val_accuracy"], epoch)
            if self.trial.should_prune():
                self.model.stop_training = True
                self.pruned = True

    def objective(trial):
        values = {"n_layers": trial.suggest_int("n_layers", 1, 3)}
        for i in range(values["n_layers"]):
            values[f"units_{i}"] = trial.suggest_int(f"units_{i}", 32, 512, log=True)
        values["learning_rate"] = trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True)
        values["batch_size"] = trial.suggest_categorical("batch_size", BATCH_SIZES)
        values["optimizer"] = trial.suggest_categorical("optimizer", OPTIMIZERS)
        if values["optimizer"] == "sgd":
            values["momentum"] = trial.suggest_float("momentum", 0.0, 0.95)
            values["nesterov"] = trial.suggest_categorical("nesterov", [True, False])
        values["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
        values["activation"] = trial.suggest_categorical("activation", ACTIVATIONS)
        values["kernel_initializer"] = trial.suggest_categorical("kernel_initializer", INITIALIZERS)
        keras.backend.clear_session()
        model = build_mlp(keras, values)
        pruning = Pruning(trial)
        stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=args.patience,
                                             restore_best_weights=True)
        history = model.fit(data.x_train, data.y_train, batch_size=values["batch_size"], epochs=args.max_epochs,
                            validation_data=(data.x_val, data.y_val), verbose=0,
                            callbacks=[stop, pruning, TargetClock(keras, args.target, found)])
        if getattr(pruning, "pruned", False):
            raise optuna.TrialPruned()
        value = max(history.history["val_accuracy"])
        if value > best["value"]:
            best["value"] = value
            model.save(best["path"])
        return value

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed),
                                pruner=optuna.pruners.MedianPruner())
    study.optimize(objective, n_trials=args.trials)
    model = keras.saving.load_model(best["path"])
    return model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)["accuracy"], len(study.trials)


ANCHORS = {"keras-tuner": keras_tuner_random, "optuna": optuna_tpe}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("anchor", choices=list(ANCHORS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.89)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    from sweeper.ml import quiet
    from sweeper.ml.data import load_dataset

    quiet.import_tensorflow()
    import keras

    keras.utils.set_random_seed(args.seed)
    found = {}
    accuracy, trials = ANCHORS[args.anchor](load_dataset("fashion"), args, found)
    print(json.dumps({"test_accuracy": accuracy, "trials": trials, "target_reached_at": found.get("at")}))


if __name__ == "__main__":
    main()
