"""sweeper's own Keras loss, registered with Keras when this module is imported: import it before loading a
model that trained with it (a trial's model; the models users get are recompiled with Keras' own loss)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="sweeper")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy against labels smoothed towards the uniform distribution (Keras' sparse
    loss has no `label_smoothing`; its categorical one has, on one-hot labels)."""

    def __init__(self, label_smoothing: float = 0.1, name: str = "smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        one_hot = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), ops.shape(y_pred)[-1])
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def plain(compile_config: dict) -> dict:
    """A compile configuration with sweeper's loss replaced by Keras' own (what it smooths is training only)."""
    loss = compile_config.get("loss")
    if isinstance(loss, dict) and loss.get("class_name", "").endswith("SmoothedSparseCrossentropy"):
        return {**compile_config, "loss": "sparse_categorical_crossentropy"}
    return compile_config
