"""How an entry point sets up its process: Keras on its training backend (TensorFlow unless chosen), and the
libraries' own logging, progress bars and warnings kept out of the user's terminal. Library code never calls this; the
command line does, and so do the worker processes it starts."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import warnings
from collections.abc import Iterator

from sweeper.domain.choices import KERAS_BACKENDS

DEFAULT_KERAS_BACKEND = KERAS_BACKENDS[0]

_configured = False  # whether this process's entry point asked for the libraries to be quiet
_backend_chosen = "KERAS_BACKEND" in os.environ  # by the user, not by configure_process


def configure_process(*, optuna: bool = False) -> None:
    """Keras trains on `KERAS_BACKEND`, else TensorFlow (on JAX, compiled programs are cached); TensorFlow's C++
    code, MLflow, Alembic and TensorFlow's Python logger say errors only, MLflow draws no progress bar and prints
    no run URL; `optuna`: Optuna too (it sets its own level when imported, so this imports it: call it where
    Optuna is used). Call it before Keras is imported."""
    global _configured
    _configured = True
    os.environ.setdefault("KERAS_BACKEND", DEFAULT_KERAS_BACKEND)
    if os.environ["KERAS_BACKEND"] == "jax":
        _jax_compilation_cache()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # MLflow sets its loggers' level from it on import
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # its "View run at" per run ended
    # TensorFlow's: a sweep builds many models, and its warning that tf.functions are retraced is about that
    for name in ("mlflow", "alembic", "alembic.runtime.migration", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # MLflow logs every database error with its traceback before raising it; sweeper reports the error once.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    # tqdm (through a library) asks for ipywidgets in a notebook; its plain bars are never shown here anyway.
    warnings.filterwarnings("ignore", message="IProgress not found")
    # JAX warns on any fork; sweeper forks only to exec at once (subprocess), its workers are spawned
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    # sweeper runs the heartbeat thread around each trial itself (ask and tell keep the budget exact).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    if optuna:
        import optuna as optuna_library

        optuna_library.logging.set_verbosity(optuna_library.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna_library.exceptions.ExperimentalWarning)


def _jax_compilation_cache() -> None:
    """JAX keeps what it compiles under the user's cache (read when JAX is imported): a model of the same shape
    (a resumed or repeated sweep, the same configuration, its refit's evaluation) skips XLA's compile, about
    0.2 s per function here, several per trial. Every program is kept, however short its compile; where the
    cache cannot be made, nothing is kept."""
    from sweeper.domain.places import user_cache

    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        cache = user_cache() / "jax"
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError:  # not writable here: JAX compiles every time, as without a cache
            return
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def keras_backend() -> str:
    """What Keras runs on (or will, once imported) in this process."""
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend()
    return os.environ.get("KERAS_BACKEND", DEFAULT_KERAS_BACKEND)


def choose_keras_backend(name: str) -> None:
    """Keras on `name` in this process and the worker processes it starts (`--keras-backend`); before Keras is
    imported, as Keras reads it once."""
    global _backend_chosen
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != name:
            from sweeper.domain.errors import UsageError

            raise UsageError(f"Keras already runs on {keras.backend.backend()} in this process, and cannot change "
                             f"to {name}; set KERAS_BACKEND={name} before Python starts")
    os.environ["KERAS_BACKEND"] = name
    _backend_chosen = True


def prefer_keras_backend(name: str) -> None:
    """Keras on `name` in this process and the worker processes it starts (export: the formats other than `.keras`
    are written on TensorFlow; a space's `keras_backend`), unless the user chose one (`--keras-backend`,
    `KERAS_BACKEND`) or Keras is already imported."""
    if not _backend_chosen and "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = name
        if name == "jax" and _configured:
            _jax_compilation_cache()


def tensorflow_imported() -> None:
    """TensorFlow sets its logger's level again when imported in an interactive session (a notebook): keep it to
    errors, as the entry point asked (nothing when no entry point configured this process)."""
    if _configured:
        logging.getLogger("tensorflow").setLevel(logging.ERROR)


def end_process(code: int | str | None = 0) -> None:
    """End this process as `sys.exit(code)` would, without the interpreter's teardown: once TensorFlow is loaded,
    freeing every module and object one by one takes about 2.4 s (bench/RESULTS.md) that the operating system does
    at once. What a normal exit does before its teardown is kept: other threads are waited for, the `atexit`
    handlers (MLflow's, logging's, multiprocessing's) run, and the standard streams are flushed."""
    import atexit
    import threading

    if sys.getprofile() is not None or sys.gettrace() is not None:  # a profiler, coverage: they write at the exit
        sys.exit(code)
    # what the interpreter does first at exit: stop idle thread pools (MLflow's), then wait for the other threads
    threading._shutdown()  # the standard library has no public way to do this, nor to run the atexit handlers
    if isinstance(code, str):  # as sys.exit("message"): the message on stderr, status 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`sweeper ... | head`): as at a normal exit, nothing to add
            pass
    os._exit(code or 0)


_own_worker = False  # whether this process is a worker process sweeper started (`other_backend_kept_out`)


def other_backend_kept_out() -> None:
    """A worker imports only the Keras backend it trains on. On TensorFlow, not JAX, which TensorFlow imports
    whenever it is installed (for its LiteRT converter's optional JAX input): 105 MiB of a worker's resident memory.
    On JAX, not TensorFlow, which Keras imports whenever it is installed (to seed it, to convert its types when a
    model is saved) and which a JAX worker never runs: 457 MiB (bench/RESULTS.md); a JAX worker then runs as on an
    install without TensorFlow, which Keras supports. Only in worker processes: they are sweeper's own, and a user's
    process keeps its modules (this process is one from now on: `keras_extras_kept_out`). Formats that need
    TensorFlow are written by a process of their own (`ml.formats`)."""
    global _own_worker
    _own_worker = True
    other = {"tensorflow": "jax", "jax": "tensorflow"}.get(os.environ.get("KERAS_BACKEND", ""))
    if other and other not in sys.modules:
        sys.meta_path.insert(0, _NotImported(other))  # ImportError, which either library expects when it is missing


#: what `import keras` imports whenever it is installed, for what a sweep's worker never does with Keras (its
#: scikit-learn wrappers, its image galleries, its file editor's notebook display); a Fashion-MNIST worker imports
#: none of them otherwise before the finish: 1.0-1.2 s and 78 MiB of a JAX worker's start-up (bench/RESULTS.md)
KERAS_EXTRAS = ("sklearn", "matplotlib", "IPython")


@contextlib.contextmanager
def keras_extras_kept_out() -> Iterator[None]:
    """In the block (a worker's `import keras`), `KERAS_EXTRAS` not yet imported raise ImportError, which Keras
    takes for not installed; after it they import as usual, for the code that needs them (a baseline's
    scikit-learn, MLflow's notebook check). Only in sweeper's own worker processes (`other_backend_kept_out`): in a
    user's or a Dask worker's process, Keras keeps its extras."""
    kept_out = [_NotImported(name) for name in KERAS_EXTRAS if _own_worker and name not in sys.modules]
    sys.meta_path[:0] = kept_out
    try:
        yield
    finally:
        sys.meta_path[:] = [finder for finder in sys.meta_path if finder not in kept_out]


class _NotImported(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import name` (and its submodules) raises ImportError, as where it is not installed. Not `sys.modules[name] =
    None`: Keras takes a name there for a module imported (`"tensorflow" in sys.modules`) and would then import it."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name or fullname.startswith(f"{self.name}."):
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        raise ImportError(f"{spec.name} is not imported in this sweeper worker", name=spec.name)

    def exec_module(self, module):  # never reached: create_module refuses
        raise ImportError(module.__name__)
