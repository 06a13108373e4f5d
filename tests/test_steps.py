"""On JAX, an epoch's steps looped over the arrays on the device train and validate as Keras' own loop over the same
batches.

Each test runs Keras on JAX in a fresh interpreter (the suite's own process may run on TensorFlow).
"""

import os
import subprocess
import sys

import pytest

#: 333 rows in batches of 5: 66 whole batches (a program of 64 steps, then one of 2) and a last batch of 3
COMMON = """
import dataclasses, numpy as np, keras
from sweeper.ml.data import load_dataset
from sweeper.ml.model import build_model
from sweeper.ml.tensors import _divided_batches
from sweeper.ml.train import COMPILE_OPTIONS, training_inputs
fashion = load_dataset("fashion").subset(333)
PARAMS = {"n_layers": 2, "units_0": 24, "units_1": 12, "learning_rate": 0.05, "batch_size": 5, "optimizer": "sgd",
          "momentum": 0.9, "dropout": 0.2, "batch_norm": True, "activation": "relu", "kernel_initializer": "he_normal", "l2": 0.0}

def trained(data, scanned):  # 2 epochs on data's training rows, validated on 203 rows (40 batches of 5, then 3)
    keras.utils.set_random_seed(7)
    model = build_model(PARAMS, data, **COMPILE_OPTIONS)
    train, validation = (data.x_train, data.y_train), (data.x_val[:203], data.y_val[:203])
    if scanned:
        with training_inputs(model, train, validation, batch_size=5, divisor=data.divisor) as inputs:
            history = model.fit(**inputs, epochs=2, verbose=0).history
        assert model.train_function is None and model.test_function is None
    else:  # Keras' own loop, a compiled step per batch, over sweeper's batches (divided by 1: the floats as given),
        batches = _divided_batches()(*train, batch_size=5, shuffle=True, divisor=data.divisor or 1)
        model._symbolic_build(data_batch=batches[0])  # built first as the scanned steps build it: no order drawn
        history = model.fit(batches, shuffle=False, epochs=2, verbose=0, validation_data=_divided_batches()(
            *validation, batch_size=5, shuffle=False, divisor=data.divisor or 1)).history
    return model, history
"""


def run_on_jax(code: str) -> str:
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "-c", COMMON + code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("images", ["bytes", "floats"])
def test_looped_steps_train_and_validate_as_kerass_own_loop_over_the_same_batches(images):
    """The same rows in the same order, divided as the bytes would be, every batch once, the last smaller one too,
    and every row of the validation: the weights, the optimizer's step count and the history agree (the sums of a
    step inside a loop may round differently from a step compiled alone, hence a tolerance, far below what a lost or
    reordered batch moves; SGD, as Adam's first steps turn a rounding difference in a gradient near zero into a
    whole step)."""
    out = run_on_jax(f"""
data = fashion if {images == "bytes"!r} else fashion.as_inputs()
(own, own_history), (scanned, history) = (trained(data, scanned) for scanned in (False, True))
assert int(scanned.optimizer.iterations.numpy()) == int(own.optimizer.iterations.numpy()) == 2 * 67
for a, b in zip(own.get_weights(), scanned.get_weights(), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-3)
assert sorted(history) == sorted(own_history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
for name in history:
    np.testing.assert_allclose(history[name], own_history[name], rtol=1e-4)
print("agree")
""")
    assert out.split()[-1] == "agree"


def test_a_fit_that_raises_gives_the_model_back_its_own_train_function():
    """A pruned or interrupted trial ends its fit with an exception: the model keeps no program over the arrays."""
    out = run_on_jax("""
class Pruned(Exception):
    pass

model = build_model(PARAMS, fashion, **COMPILE_OPTIONS)
stop = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: (_ for _ in ()).throw(Pruned()))
try:
    with training_inputs(model, (fashion.x_train, fashion.y_train), batch_size=5, divisor=fashion.divisor) as inputs:
        model.fit(**inputs, epochs=3, verbose=0, callbacks=[stop])
except Pruned:
    pass
print(model.train_function is None, int(model.optimizer.iterations.numpy()))
model.fit(fashion.as_inputs().x_train, fashion.y_train, batch_size=5, epochs=1, verbose=0)  # Keras' own again
print(int(model.optimizer.iterations.numpy()))
""")
    assert out.split()[-3:] == ["True", "67", "134"]
