"""build_model(params, dataset) -> a compiled Keras MLP, and nothing else."""

from __future__ import annotations

from sweeper.ml.data import Dataset


def build_model(params: dict, dataset: Dataset, **compile_options):
    """An MLP from one sampled configuration: hidden Dense layers, dropout, task-shaped output."""
    import keras

    regularizer = keras.regularizers.L2(params["l2"]) if params.get("l2") else None
    layers = [keras.Input(shape=dataset.input_shape), keras.layers.Flatten()]
    for i in range(params["n_layers"]):
        layers.append(keras.layers.Dense(params[f"units_{i}"], activation=params["activation"],
                                         kernel_initializer=params["kernel_initializer"],
                                         kernel_regularizer=regularizer, name=f"hidden_{i}"))
        if params["dropout"] > 0:
            layers.append(keras.layers.Dropout(params["dropout"], name=f"dropout_{i}"))
    if dataset.task == "classification":
        layers.append(keras.layers.Dense(dataset.n_outputs, activation="softmax", name="output"))
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    else:
        layers.append(keras.layers.Dense(1, name="output"))
        loss = "mse"
        metrics = [keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.RootMeanSquaredError(name="rmse")]
    model = keras.Sequential(layers, name="sweeper_mlp")
    model.compile(optimizer=make_optimizer(params), loss=loss, metrics=metrics, **compile_options)
    return model


def make_optimizer(params: dict):
    import keras

    name, lr = params["optimizer"], params["learning_rate"]
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=params.get("momentum", 0.0), nesterov=params.get("nesterov", False))
    classes = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
               "adagrad": keras.optimizers.Adagrad, "adamw": keras.optimizers.AdamW,
               "nadam": keras.optimizers.Nadam}
    return classes[name](lr)
