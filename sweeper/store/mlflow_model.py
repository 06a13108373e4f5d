"""The MLflow model sweeper registers, logged as code (MLflow's models from code): the Keras model,
predicting quietly, so that `mlflow models predict` prints only its result on stdout.

This file is copied into each logged model and run by MLflow when the model is loaded; it needs
keras and mlflow only, not sweeper.
"""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class QuietKerasModel(PythonModel):
    """A Keras model saved as `.keras`; predict() shows no progress bar."""

    _skip_type_hint_validation = True  # inputs are checked against the logged signature instead

    def load_context(self, context):
        import keras

        keras.config.disable_interactive_logging()
        self.keras_model = keras.saving.load_model(context.artifacts["keras_model"], safe_mode=True)

    def predict(self, context, model_input, params=None):
        x = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
        return self.keras_model.predict(x.astype("float32"), verbose=0)


mlflow.models.set_model(QuietKerasModel())
