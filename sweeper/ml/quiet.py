"""Quiet the lines TensorFlow's and LiteRT's C++ code writes to stderr, which no Python setting reaches."""

from __future__ import annotations

import contextlib
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
    """Import TensorFlow without the start-up lines its C++ code writes to stderr."""
    from sweeper.runtime.setup import tensorflow_imported

    if "tensorflow" not in sys.modules:
        with quiet_stderr():
            import tensorflow  # noqa: F401
    tensorflow_imported()
