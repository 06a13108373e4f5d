"""Where an MLP tops out on Fashion-MNIST at a 15-minute budget: the hand recipe, several seeds averaged, and with
augmentation.

Run: .venv/bin/python bench/ceiling.py [--seeds 0 1 2] [--epochs 20] [--augment flip flip+shift]
Trains the hand recipe of bench/anchors.py (the configuration fashion.yaml starts from) on the training split for
--epochs (20: a trial's most in the default space) once per seed, then once per augmentation (seed 0; Keras'
RandomFlip and RandomTranslation in front of the MLP, active in training only). Prints, measured in this one run,
each model's seconds and test accuracy, and the test accuracy of the seeds' softmax outputs averaged: what a final
model averaging copies of the best configuration could buy over one copy.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anchors import RECIPE, build_mlp, one_hot


def augmented(keras, model, kind: str):
    """`model` behind Keras' augmentation layers (horizontal flip; with `flip+shift`, shifts up to 8%)."""
    layers = [keras.Input((28, 28)), keras.layers.Reshape((28, 28, 1)), keras.layers.RandomFlip("horizontal")]
    if kind == "flip+shift":
        layers.append(keras.layers.RandomTranslation(0.08, 0.08, fill_mode="constant"))
    wrapped = keras.Sequential([*layers, *model.layers])
    wrapped.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"])
    return wrapped


def train(keras, data, args, seed: int, augment: str | None = None):
    """(seconds, best validation accuracy, test softmax outputs) of the recipe trained once."""
    y_train, y_val, _ = one_hot(data)
    keras.utils.set_random_seed(seed)
    model = build_mlp(keras, RECIPE, args.epochs, -(-len(data.x_train) // RECIPE["batch_size"]))
    if augment:
        model = augmented(keras, model, augment)
    started = time.perf_counter()
    history = model.fit(data.x_train, y_train, batch_size=RECIPE["batch_size"], epochs=args.epochs,
                        validation_data=(data.x_val, y_val), verbose=0)
    seconds = time.perf_counter() - started
    return seconds, max(history.history["val_accuracy"]), model.predict(data.x_test, verbose=0, batch_size=1024)


def accuracy(outputs, data) -> float:
    return float(np.mean(np.argmax(outputs, axis=1) == data.y_test))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--augment", nargs="*", default=["flip", "flip+shift"], choices=["flip", "flip+shift"])
    args = parser.parse_args()

    from sweeper.ml import quiet
    from sweeper.ml.data import load_dataset

    quiet.import_keras()
    import keras

    data = load_dataset("fashion").as_inputs()
    outputs = []
    for seed in args.seeds:
        seconds, val, out = train(keras, data, args, seed)
        outputs.append(out)
        print(f"recipe, seed {seed}: {seconds:.0f} s, best val {val:.4f}, test {accuracy(out, data):.4f}", flush=True)
    singles = [accuracy(out, data) for out in outputs]
    print(f"one copy, mean of {len(singles)} seeds: test {np.mean(singles):.4f}")
    for k in range(2, len(outputs) + 1):
        print(f"the first {k} seeds averaged: test {accuracy(np.mean(outputs[:k], axis=0), data):.4f}")
    for kind in args.augment:
        seconds, val, out = train(keras, data, args, args.seeds[0], kind)
        print(f"recipe + {kind}, seed {args.seeds[0]}: {seconds:.0f} s, best val {val:.4f}, "
              f"test {accuracy(out, data):.4f}", flush=True)


if __name__ == "__main__":
    main()
