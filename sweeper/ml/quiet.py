"""Quiet the lines TensorFlow's and LiteRT's C++ code writes to stderr, which no Python setting reaches."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
import warnings


@contextlib.contextmanager
def quiet_stderr():
    """Point file descriptor 2 away for the block; what was written comes back only if the block fails (not
    when it is interrupted)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except KeyboardInterrupt:  # the user stopped it: the libraries' start-up lines would only be noise
            raise
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_keras() -> None:
    """Import Keras, its backend (`KERAS_BACKEND`) and TensorFlow without the start-up lines their C++ code writes
    to stderr. TensorFlow too on JAX: Keras imports it whenever it is installed (to seed it, to save a model), but
    in a sweep's JAX worker, which keeps it out (`runtime.setup.other_backend_kept_out`)."""
    from sweeper.runtime.setup import tensorflow_imported

    if "keras" not in sys.modules or "tensorflow" not in sys.modules:
        with quiet_stderr():
            import keras  # noqa: F401

            if importlib.util.find_spec("tensorflow") is not None:
                with contextlib.suppress(ImportError):  # kept out of a JAX worker (`other_backend_kept_out`)
                    import tensorflow  # noqa: F401
    if "tensorflow" in sys.modules:
        tensorflow_imported()
