"""Quiet the lines TensorFlow's and LiteRT's C++ code writes to stderr, which no Python setting reaches."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings


@contextlib.contextmanager
def quiet_stderr():
    """Point file descriptor 2 away for the block; what was written comes back only if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow() -> None:
    """Import TensorFlow without its start-up lines, and keep its Python logger to errors: a sweep builds
    many models, and TensorFlow's warning that tf.functions are retraced is about that, not for users."""
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if "tensorflow" in sys.modules:
        return
    with quiet_stderr():
        import tensorflow  # noqa: F401
