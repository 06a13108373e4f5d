"""Model file formats: each one writes a Keras model, and loads what it wrote back for a prediction check.

Keras 3 writes every format itself (`model.save`, `model.export(format=...)`); the formats differ in what
must be installed to write and to read them back, and all but `.keras` are written by Keras on TensorFlow:
a process whose Keras trains on another backend has a TensorFlow process write them (`python -m
sweeper.ml.formats`), from the model saved as a `.keras` file, which loads on any backend.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from sweeper.domain.choices import FORMATS as FORMAT_NAMES
from sweeper.domain.errors import ExportError
from sweeper.ml.model import predictions
from sweeper.ml.quiet import quiet_stderr

#: Largest absolute difference in outputs allowed between a written file and the in-memory model.
TOLERANCE = 1e-4

Predict = Callable[[np.ndarray], np.ndarray]


class Format:
    """One way to write a model to disk (a file or a folder named `filename` in the export folder)."""

    name: str
    filename: str
    description: str
    modules: tuple[str, ...] = ()  # importable modules needed to write and to read back
    extra: str | None = None  # `pip install 'sweeper[extra]'` installs them
    on_tensorflow = True  # Keras writes it only when it runs on TensorFlow

    def missing(self) -> list[str]:
        return [m for m in self.modules if not _importable(m)]

    def write(self, model, path: Path) -> None:
        import keras

        if self.on_tensorflow and keras.backend.backend() != "tensorflow":
            _write_on_tensorflow(self, model, path)
        else:
            self._write(model, path)

    def _write(self, model, path: Path) -> None:
        raise NotImplementedError

    def load(self, path: Path) -> Predict:
        raise NotImplementedError


#: what loading a damaged .keras file raises (truncated, not a zip, weights not HDF5, a configuration not Keras')
UNREADABLE_KERAS_FILE = (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError)


def load_keras(path):
    """A `.keras` file as a Keras model (safe mode: no code is run from the file), its layers not drawing initial
    weights with Keras (`initial.loaded_drawn_by_numpy`)."""
    import sweeper.ml.losses  # noqa: F401  (a trial's model may have trained with sweeper's loss)
    from sweeper.ml.initial import loaded_drawn_by_numpy

    return loaded_drawn_by_numpy(path)


def save_keras(model, path) -> None:
    """`model` (with its optimizer's state) as a `.keras` file, its weights written through a temporary file beside
    it rather than copied into memory first (`weights_through_a_file`)."""
    with weights_through_a_file():
        model.save(path)


@contextlib.contextmanager
def weights_through_a_file() -> Iterator[None]:
    """Keras saves a model's weights to its `.keras` file through a temporary file when they exceed half the free
    memory (`saving_lib.is_memory_sufficient`), and otherwise through an in-memory buffer that it copies once more:
    for the widest trial of a Fashion-MNIST sweep (4.9 million weights and Nadam's two slots, a 57 MiB file) that
    raised the worker's memory by 106 MiB for the save, where the file took 0 MiB and half the time
    (bench/RESULTS.md). In the block, Keras takes its temporary-file path for every model (its default where a Keras
    version has no such switch)."""
    from keras.src.saving import saving_lib

    keras_choice = getattr(saving_lib, "is_memory_sufficient", None)
    if keras_choice is None:
        yield
        return
    saving_lib.is_memory_sufficient = lambda model: False
    try:
        yield
    finally:
        saving_lib.is_memory_sufficient = keras_choice


class KerasFormat(Format):
    name, filename, description = "keras", "model.keras", "Keras 3 native (keras.saving.load_model)"
    on_tensorflow = False

    def _write(self, model, path):
        save_keras(model, path)

    def load(self, path):
        loaded = load_keras(path)
        return lambda x: predictions(loaded, x)


class SavedModelFormat(Format):
    name, filename, description = "savedmodel", "savedmodel", "TensorFlow SavedModel (TF Serving, tf.saved_model.load)"

    def _write(self, model, path):
        model.export(str(path), format="tf_saved_model", verbose=False)

    def load(self, path):
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return lambda x: loaded.serve(x).numpy()


class OnnxFormat(Format):
    name, filename, description = "onnx", "model.onnx", "ONNX (onnxruntime and other ONNX runtimes)"
    modules, extra = ("tf2onnx", "onnx", "onnxruntime"), "onnx"

    def _write(self, model, path):
        model.export(str(path), format="onnx", verbose=False)

    def load(self, path):
        import onnxruntime

        try:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # e.g. gelu's Erfc, which the converter writes and onnxruntime has no op for
            raise ExportError(f"the onnx format cannot hold this model: onnxruntime refuses the converted file "
                               f"({str(exc).split(' : ')[-1][:200]}); the keras, savedmodel and tflite formats "
                               f"can") from None
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]


class TFLiteFormat(Format):
    name, filename, description = "tflite", "model.tflite", "LiteRT / TensorFlow Lite (mobile and edge)"
    modules, extra = ("ai_edge_litert",), "tflite"

    def _write(self, model, path):
        model.export(str(path), format="litert", verbose=False)

    def load(self, path):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))

        def predict(x):
            entry, exit_ = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
            interpreter.resize_tensor_input(entry["index"], x.shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(entry["index"], x)
            interpreter.invoke()
            return interpreter.get_tensor(exit_["index"]).copy()

        return predict


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


FORMATS: dict[str, Format] = {f.name: f for f in (KerasFormat(), SavedModelFormat(), OnnxFormat(), TFLiteFormat())}
if tuple(FORMATS) != FORMAT_NAMES:  # the choices the command line offers without importing this module
    raise ImportError(f"sweeper.domain.choices.FORMATS {FORMAT_NAMES} does not name the formats {tuple(FORMATS)}")


def check_installed(names) -> None:
    """Refuse, before any work, a format whose converter or runtime is not installed."""
    for name in names:
        missing = FORMATS[name].missing()
        if missing:
            raise ExportError(f"the {name} format needs {', '.join(missing)}, which is not installed; install it "
                              f"with: pip install 'sweeper[{FORMATS[name].extra}]'")


def write_and_check(fmt: Format, model, path: Path, x: np.ndarray) -> float:
    """Write `model` in `fmt` at `path`, load it back and return the largest difference of its outputs on `x`
    from the in-memory model's; more than TOLERANCE is an error."""
    with quiet_stderr():
        fmt.write(model, path)
        got = np.asarray(fmt.load(path)(x), dtype=np.float64)
    expected = predictions(model, x)
    got = got.reshape(expected.shape)
    difference = float(np.max(np.abs(got - expected))) if len(x) else 0.0
    if not difference <= TOLERANCE:
        raise ExportError(f"the {fmt.name} file {path.name} does not reproduce the model: its outputs differ by up "
                          f"to {difference:.2e} on {len(x)} test inputs, more than the {TOLERANCE:.0e} allowed")
    return difference


def _write_on_tensorflow(fmt: Format, model, path: Path) -> None:
    """`fmt` written at `path` by a process whose Keras runs on TensorFlow, from `model` saved as `.keras`."""
    with tempfile.TemporaryDirectory(prefix="sweeper-format-") as scratch:
        saved = Path(scratch) / "model.keras"
        save_keras(model, saved)
        done = subprocess.run([sys.executable, "-m", "sweeper.ml.formats", fmt.name, str(saved), str(path)],
                              env={**os.environ, "KERAS_BACKEND": "tensorflow"}, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise ExportError(lines[-1].removeprefix("Error: "))


if __name__ == "__main__":  # python -m sweeper.ml.formats FORMAT MODEL.keras PATH (see _write_on_tensorflow)
    from sweeper.runtime.setup import end_process

    try:
        loaded = load_keras(sys.argv[2])
        loaded(np.zeros((1, *loaded.input_shape[1:]), dtype="float32"))  # built, not yet called: LiteRT needs a call
        FORMATS[sys.argv[1]].write(loaded, Path(sys.argv[3]))
    except ExportError as exc:
        end_process(f"Error: {exc}")
    end_process(0)  # a process that loaded TensorFlow: its teardown would add seconds to every export on JAX
