"""The anchors sweeper is judged against: what a careful user writes by hand with Keras, Keras Tuner or Optuna alone.

Run one: .venv/bin/python bench/anchors.py recipe|optuna|keras-tuner|keras-tuner-hyperband --seed 0 --timeout 900
--workdir DIR

- recipe: the careful hand recipe, trained once (784-1024-512-10, batch normalisation and ReLU, dropout 0.3,
  AdamW with weight decay 1e-4, label smoothing 0.1, cosine decay from 2e-3 over 30 epochs, batch 256);
- optuna: Optuna TPE + MedianPruner over the same enlarged space as search_spaces/fashion.yaml, the best model kept;
- keras-tuner / keras-tuner-hyperband: Keras Tuner RandomSearch / Hyperband over that space.

Every search anchor: the space written out by hand in each library's own API, early stopping with the best
weights restored, the same data split as sweeper (sweeper.ml.data), and the same wall-clock budget (`--timeout`:
no trial starts after it). Prints one JSON line: the best model's test accuracy, the number of trials, and the
wall-clock times at which a model first reached each target validation accuracy (None if never).
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ACTIVATIONS = ["relu", "swish", "elu"]
OPTIMIZERS = ["adamw", "adam", "nadam", "sgd"]
BATCH_SIZES = [128, 256, 512]
RECIPE = {"n_layers": 2, "units_0": 1024, "units_1": 512, "learning_rate": 2e-3, "batch_size": 256,
          "optimizer": "adamw", "dropout": 0.3, "activation": "relu", "batch_norm": True, "weight_decay": 1e-4,
          "label_smoothing": 0.1, "lr_schedule": "cosine"}
RECIPE_EPOCHS, SEARCH_EPOCHS = 30, 20


def build_mlp(keras, values: dict, epochs: int, steps_per_epoch: int):
    """The MLP of one configuration, compiled: one-hot targets (for Keras' label smoothing)."""
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten()])
    for i in range(values["n_layers"]):
        normalised = values["batch_norm"]
        model.add(keras.layers.Dense(values[f"units_{i}"], activation=None if normalised else values["activation"],
                                     kernel_initializer="he_normal", use_bias=not normalised))
        if normalised:
            model.add(keras.layers.BatchNormalization())
            model.add(keras.layers.Activation(values["activation"]))
        model.add(keras.layers.Dropout(values["dropout"]))
    model.add(keras.layers.Dense(10, activation="softmax"))
    lr = values["learning_rate"]
    if values["lr_schedule"] == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=epochs * steps_per_epoch)
    decay = values["weight_decay"]
    optimizer = {"adamw": lambda: keras.optimizers.AdamW(lr, weight_decay=decay),
                 "adam": lambda: keras.optimizers.Adam(lr, weight_decay=decay),
                 "nadam": lambda: keras.optimizers.Nadam(lr, weight_decay=decay),
                 "sgd": lambda: keras.optimizers.SGD(lr, momentum=values.get("momentum", 0.9),
                                                     nesterov=values.get("nesterov", False), weight_decay=decay)}
    model.compile(optimizer=optimizer[values["optimizer"]](),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=values["label_smoothing"]),
                  metrics=["accuracy"])
    return model


def callbacks(keras, values, args, found):
    """Early stopping (best weights restored), the plateau drop when asked, and the clock of the targets."""
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=args.patience, restore_best_weights=True)
    more = [keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", factor=0.3, patience=1)] \
        if values["lr_schedule"] == "plateau" else []
    return [stop, *more, TargetClock(keras, args.targets, found)]


class TargetClock:
    """A Keras callback noting the wall-clock time of the first epoch whose val_accuracy reached each target."""

    def __new__(cls, keras, targets, found):
        class Clock(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                for target in targets:
                    if found.get(target) is None and (logs or {}).get("val_accuracy", 0) >= target:
                        found[target] = time.time()

        return Clock()


def one_hot(data):
    import numpy as np

    eye = np.eye(10, dtype="float32")
    return eye[data.y_train], eye[data.y_val], eye[data.y_test]


def recipe(data, args, found, deadline) -> tuple[float, int]:
    import keras

    y_train, y_val, y_test = one_hot(data)
    steps, epochs = -(-len(data.x_train) // RECIPE["batch_size"]), args.max_epochs or RECIPE_EPOCHS
    model = build_mlp(keras, RECIPE, epochs, steps)
    model.fit(data.x_train, y_train, batch_size=RECIPE["batch_size"], epochs=epochs,
              validation_data=(data.x_val, y_val), verbose=0, callbacks=[TargetClock(keras, args.targets, found)])
    return model.evaluate(data.x_test, y_test, verbose=0, return_dict=True)["accuracy"], 1


def _sample(suggest_int, suggest_float, suggest_choice) -> dict:
    """The enlarged space (search_spaces/fashion.yaml), through one library's suggest calls."""
    values = {"n_layers": suggest_int("n_layers", 1, 3)}
    for i in range(values["n_layers"]):
        values[f"units_{i}"] = suggest_int(f"units_{i}", 128, 2048, log=True)
    values["learning_rate"] = suggest_float("learning_rate", 3e-4, 1e-2, log=True)
    values["batch_size"] = suggest_choice("batch_size", BATCH_SIZES)
    values["optimizer"] = suggest_choice("optimizer", OPTIMIZERS)
    if values["optimizer"] == "sgd":
        values["momentum"] = suggest_float("momentum", 0.8, 0.95)
        values["nesterov"] = suggest_choice("nesterov", [True, False])
    values["dropout"] = suggest_float("dropout", 0.1, 0.5)
    values["activation"] = suggest_choice("activation", ACTIVATIONS)
    values["batch_norm"] = suggest_choice("batch_norm", [True, False])
    values["weight_decay"] = suggest_float("weight_decay", 1e-5, 1e-3, log=True)
    values["label_smoothing"] = suggest_choice("label_smoothing", [0.0, 0.1])
    values["lr_schedule"] = suggest_choice("lr_schedule", ["cosine", "plateau"])
    return values


def keras_tuner(data, args, found, deadline, kind="random") -> tuple[float, int]:
    import contextlib

    import keras
    import keras_tuner as kt

    y_train, y_val, y_test = one_hot(data)

    class MLP(kt.HyperModel):
        def build(self, hp):
            self.values = _sample(lambda n, lo, hi, log=False: hp.Int(n, lo, hi, sampling="log" if log else "linear"),
                                  lambda n, lo, hi, log=False: hp.Float(n, lo, hi,
                                                                        sampling="log" if log else "linear"),
                                  hp.Choice)
            epochs = hp.values.get("tuner/epochs", args.max_epochs)
            return build_mlp(keras, self.values, epochs, -(-len(data.x_train) // self.values["batch_size"]))

        fitted = 0

        def fit(self, hp, model, *fit_args, **kwargs):
            # The budget is spent: no more training (Keras Tuner has no time limit). As Optuna's `timeout`, the
            # first trial always runs: a search gives a model.
            if time.time() > deadline and self.fitted:
                raise kt.errors.FatalError("time budget spent")
            self.fitted += 1
            kwargs["callbacks"] = kwargs.get("callbacks", []) + callbacks(keras, self.values, args, found)
            return model.fit(*fit_args, batch_size=self.values["batch_size"], **kwargs)

    common = dict(objective="val_accuracy", seed=args.seed, directory=args.workdir, project_name="kt", overwrite=True)
    tuner = kt.Hyperband(MLP(), max_epochs=args.max_epochs, **common) if kind == "hyperband" else \
        kt.RandomSearch(MLP(), max_trials=10_000, **common)
    with contextlib.suppress(kt.errors.FatalError, RuntimeError):
        tuner.search(data.x_train, y_train, epochs=args.max_epochs, validation_data=(data.x_val, y_val), verbose=0)
    best = tuner.get_best_models(1)[0]
    return best.evaluate(data.x_test, y_test, verbose=0, return_dict=True)["accuracy"], len(tuner.oracle.trials)


def optuna_tpe(data, args, found, deadline) -> tuple[float, int]:
    import keras
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    y_train, y_val, y_test = one_hot(data)
    best = {"value": -1.0, "path": str(Path(args.workdir) / "best.keras")}

    class Pruning(keras.callbacks.Callback):
        def __init__(self, trial):
            super().__init__()
            self.trial, self.pruned = trial, False

        def on_epoch_end(self, epoch, logs=None):
            self.trial.report(logs["val_accuracy"], epoch)
            if self.trial.should_prune():
                self.model.stop_training, self.pruned = True, True

    def objective(trial):
        values = _sample(trial.suggest_int, trial.suggest_float, trial.suggest_categorical)
        keras.backend.clear_session()
        model = build_mlp(keras, values, args.max_epochs, -(-len(data.x_train) // values["batch_size"]))
        pruning = Pruning(trial)
        history = model.fit(data.x_train, y_train, batch_size=values["batch_size"], epochs=args.max_epochs,
                            validation_data=(data.x_val, y_val), verbose=0,
                            callbacks=[*callbacks(keras, values, args, found), pruning])
        if pruning.pruned:
            raise optuna.TrialPruned()
        value = max(history.history["val_accuracy"])
        if value > best["value"]:
            best["value"] = value
            model.save(best["path"])
        return value

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2))
    study.optimize(objective, timeout=max(1.0, deadline - time.time()))
    model = keras.saving.load_model(best["path"])
    return model.evaluate(data.x_test, y_test, verbose=0, return_dict=True)["accuracy"], len(study.trials)


ANCHORS = {"recipe": recipe, "optuna": optuna_tpe, "keras-tuner": keras_tuner,
           "keras-tuner-hyperband": lambda *a: keras_tuner(*a, kind="hyperband")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("anchor", choices=list(ANCHORS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=900, help="seconds; no trial starts after it")
    parser.add_argument("--max-epochs", type=int, help="every tool's epoch cap (default: the searches' 20, as "
                                                         "fashion.yaml's, and the recipe's 30)")
    parser.add_argument("--subset", type=int, help="train on only this many images (a quick look)")
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.89, 0.90])
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    if args.anchor != "recipe":
        args.max_epochs = args.max_epochs or SEARCH_EPOCHS
    started = time.time()
    from sweeper.ml import quiet
    from sweeper.ml.data import load_dataset

    quiet.import_keras()
    import keras

    keras.utils.set_random_seed(args.seed)
    found = {}
    data = load_dataset("fashion").subset(args.subset).as_inputs()  # arrays, as a user gives Keras
    accuracy, trials = ANCHORS[args.anchor](data, args, found, started + args.timeout)
    print(json.dumps({"test_accuracy": accuracy, "trials": trials,
                      "targets_reached_at": {str(t): found.get(t) for t in args.targets}}))


if __name__ == "__main__":
    main()
