"""Import TensorFlow without the start-up lines its C++ logging writes to stderr before any setting applies."""

from __future__ import annotations

import os
import sys
import tempfile


def import_tensorflow() -> None:
    """Import TensorFlow with file descriptor 2 pointed away; the lines come back only if the import fails."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
