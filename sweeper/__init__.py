"""sweeper: hyperparameter sweeps for Keras MLPs, tracked in MLflow."""

import os

__version__ = "0.1.0"

# Quiet TensorFlow's C++ start-up chatter and pin Keras to TensorFlow before either is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
