"""What a sweep must beat to be worth it: a model fitted in about a second on the same split as the final model
(training + validation data), scored on the same test split. A logistic regression (classification) or a linear
regression (regression) from scikit-learn where the data is small enough to fit one in about a second; else the
majority class or the mean."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from sweeper.ml.data import Dataset

#: above this many feature values a logistic regression may take more than a few seconds (10 s for 2M on 2
#: loaded cores): the trivial model instead
LINEAR_MAX_VALUES = 500_000


@dataclass(frozen=True)
class Baseline:
    name: str  # what was fitted, in words
    test_metrics: dict[str, float]  # named as the final model's: test_accuracy, or test_loss/test_mae/test_rmse


def fit_baseline(dataset: Dataset) -> Baseline:
    """The baseline of `dataset`, fitted on its training + validation splits and scored on its test split."""
    from threadpoolctl import threadpool_limits

    (x, y), x_test = dataset.refit_arrays(), dataset.x_test
    linear = x.size <= LINEAR_MAX_VALUES
    if linear:  # a linear model is fitted to the model's inputs (the majority and the mean need none)
        x, x_test = dataset.inputs(x), dataset.inputs(x_test)
    x, x_test = x.reshape(len(x), -1), x_test.reshape(len(x_test), -1)
    # One BLAS thread: for matrices this small, OpenBLAS's threads spin-wait for each other whenever TensorFlow or
    # another process holds a core (0.2 s on one thread against 5.7 s on two, 300 images on a busy machine).
    with threadpool_limits(limits=1, user_api="blas"):
        if dataset.task == "classification":
            return _classifier(x, y, x_test, dataset.y_test, linear)
        return _regressor(x, y, x_test, dataset.y_test, linear)


def _classifier(x, y, x_test, y_test, linear: bool) -> Baseline:
    if linear and len(np.unique(y)) > 1:
        from sklearn.linear_model import LogisticRegression

        with warnings.catch_warnings():  # not converged in 300 steps: still the baseline asked for
            warnings.simplefilter("ignore")
            predicted = LogisticRegression(max_iter=300).fit(x, y).predict(x_test)
        name = "logistic regression"
    else:
        predicted = np.full(len(y_test), np.bincount(y.astype(int)).argmax())
        name = "the majority class"
    return Baseline(name, {"test_accuracy": float(np.mean(predicted == y_test))})


def _regressor(x, y, x_test, y_test, linear: bool) -> Baseline:
    if linear:
        from sklearn.linear_model import LinearRegression

        predicted = LinearRegression().fit(x, y).predict(x_test).reshape(-1)
        name = "linear regression"
    else:
        predicted = np.full(len(y_test), float(np.mean(y)))
        name = "the mean"
    errors = predicted - np.asarray(y_test, dtype=float).reshape(-1)
    mse = float(np.mean(errors ** 2))
    return Baseline(name, {"test_loss": mse, "test_mae": float(np.mean(np.abs(errors))), "test_rmse": mse ** 0.5})
