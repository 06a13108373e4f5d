"""A dataset held for TensorFlow: every fit reads the arrays in place, and trains as on the arrays themselves."""

import dataclasses

import numpy as np
import pytest

from sweeper.domain.space import Objective
from sweeper.ml import tensors
from sweeper.ml.data import load_dataset
from sweeper.ml.tensors import ALIGNMENT, batches, in_place, shareable
from sweeper.ml.train import train_trial
from sweeper.runtime.setup import keras_backend

pytestmark = pytest.mark.skipif(keras_backend() != "tensorflow", reason="only Keras on TensorFlow copies arrays")

PARAMS = {"n_layers": 1, "units_0": 32, "learning_rate": 1e-2, "batch_size": 64, "optimizer": "adam", "dropout": 0.1,
          "activation": "relu", "kernel_initializer": "he_normal", "l2": 0.0}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_a_held_split_is_a_tensor_over_the_arrays_own_memory(digits):
    import tensorflow as tf

    own = dataclasses.replace(digits, x_train=digits.x_train.copy())  # written to below
    held = own.held()
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        array, tensor = getattr(held, name), held.for_fit(name)
        assert isinstance(tensor, tf.Tensor) and np.array_equal(array, getattr(own, name))
        assert np.shares_memory(array, np.asarray(tensor))
    first = (0,) * held.x_train.ndim
    held.x_train[first] += 1  # one memory: what the array holds is what fit reads
    assert float(held.for_fit("x_train")[first]) == held.x_train[first]
    assert own.for_fit("x_train") is own.x_train  # a dataset not held gives its arrays
    part = held.subset(len(held.x_train) - 1)
    assert part.for_fit("x_train") is part.x_train  # and so does a subset taken after: its arrays are others


def test_fashion_images_load_aligned_and_are_held_without_a_copy():
    fashion = load_dataset("fashion")
    assert fashion.x_train.ctypes.data % ALIGNMENT == 0
    assert fashion.held().x_train is fashion.x_train


def test_the_final_models_images_are_the_held_training_and_validation_images_not_a_copy():
    fashion = load_dataset("fashion").held()
    x, y = fashion.refit_arrays()
    assert np.shares_memory(x, fashion.x_train) and np.shares_memory(x, fashion.x_val)
    assert np.shares_memory(np.asarray(in_place(x)), fashion.x_train)  # and so is the tensor the refit trains on
    assert np.array_equal(x[:len(fashion.x_train)], fashion.x_train) and np.array_equal(x[-1], fashion.x_val[-1])
    assert np.array_equal(y, np.concatenate([fashion.y_train, fashion.y_val]))
    part = fashion.subset(300)  # the training images' first 300, then the validation split's same share: a copy
    x, _ = part.refit_arrays()
    assert len(x) == 300 + 27 and np.array_equal(x[300:], fashion.x_val[:27]) and not np.shares_memory(x, part.x_val)
    assert x.ctypes.data % ALIGNMENT == 0


@pytest.mark.parametrize("array", [np.arange(10.0, dtype=np.float32)[1:], np.ones((4, 3), np.float32).T],
                         ids=["unaligned", "not contiguous"])
def test_an_array_a_tensor_cannot_read_in_place_is_copied_first(array):
    shared = shareable(array)
    assert shared is not array and np.array_equal(shared, array)
    assert shared.ctypes.data % ALIGNMENT == 0 and shared.flags.c_contiguous


def test_training_on_a_held_dataset_is_training_on_its_arrays(digits):
    objective = Objective("val_accuracy", "maximize")
    on_arrays = train_trial(PARAMS, digits, objective, max_epochs=2, patience=2, seed=3)
    on_tensors = train_trial(PARAMS, digits.held(), objective, max_epochs=2, patience=2, seed=3)
    assert on_tensors.history == on_arrays.history
    for a, b in zip(on_arrays.model.get_weights(), on_tensors.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_training_on_bytes_is_training_on_the_divided_floats():
    """Fashion-MNIST's images, held as bytes, are divided in the pipeline: the same model as from the floats."""
    fashion = load_dataset("fashion").subset(300)
    fashion = dataclasses.replace(fashion, x_val=fashion.x_val[:500], y_val=fashion.y_val[:500])
    objective = Objective("val_accuracy", "maximize")
    on_floats = train_trial(PARAMS, fashion.as_inputs().held(), objective, max_epochs=2, patience=2, seed=3)
    on_bytes = train_trial(PARAMS, fashion.held(), objective, max_epochs=2, patience=2, seed=3)
    assert on_bytes.history == on_floats.history and fashion.held().for_fit("x_train").dtype.name == "uint8"
    for a, b in zip(on_floats.model.get_weights(), on_bytes.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def _orders(pipeline, epochs):
    """The labels of each epoch's batches, epoch by epoch (a new iterator each, as Keras makes)."""
    return [[batch[1].numpy().tolist() for batch in pipeline] for _ in range(epochs)]


@pytest.mark.parametrize("gathered_rows", [8, tensors.GATHERED_ROWS])  # 8: the 10 rows in two gathers, 8 and 2
def test_batches_come_in_another_order_at_every_epoch_the_same_orders_for_the_same_seed(monkeypatch, gathered_rows):
    import keras

    monkeypatch.setattr(tensors, "GATHERED_ROWS", gathered_rows)
    x, y = np.arange(10, dtype=np.float32).reshape(10, 1), np.arange(10)
    keras.utils.set_random_seed(0)
    first = _orders(batches(x, y, batch_size=4, shuffle=True), 3)
    assert all(sorted(sum(epoch, [])) == list(range(10)) and [len(b) for b in epoch] == [4, 4, 2] for epoch in first)
    assert len({str(epoch) for epoch in first}) == 3  # Keras' own pipeline, seeded, repeats its first order
    keras.utils.set_random_seed(0)
    assert _orders(batches(x, y, batch_size=4, shuffle=True), 3) == first
    assert _orders(batches(x, y, batch_size=4, shuffle=False), 1) == [[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]]
    assert int(batches(x, y, batch_size=4, shuffle=True).cardinality()) == 3  # Keras knows an epoch's steps


def test_batches_are_not_autotuned():
    """An autotuned tf.data iterator's release waits for its model thread's sleep (up to its optimisation period,
    seconds): Keras releases one per epoch."""
    pipeline = batches(np.zeros((8, 2), np.float32), np.zeros(8), batch_size=4, shuffle=True)
    assert pipeline.options().autotune.enabled is False
