"""The command line: help without TensorFlow, exact error lines, exit codes, the installed command."""

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from sweeper.domain.choices import KERAS_BACKENDS

from .conftest import SPACES, free_port, sweeper

SWEEPER = str(Path(sys.executable).parent / "sweeper")


def run(*args, cwd=None, env=None):
    """The installed command in a fresh process; `env` adds variables (None: removes one)."""
    env = {**os.environ, "SWEEPER_OFFLINE": "1", **(env or {})}
    return subprocess.run([SWEEPER, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={k: v for k, v in env.items() if v is not None})


def test_help_answers_without_importing_tensorflow_mlflow_or_optuna():
    code = ("import sys; from click.testing import CliRunner; from sweeper.cli import main; "
            "r = CliRunner().invoke(main, ['search', '--help']); assert r.exit_code == 0; "
            "CliRunner().invoke(main, ['search', 'nope']); CliRunner().invoke(main, ['export', '--help']); "
            "CliRunner().invoke(main, ['predict', '--help']); CliRunner().invoke(main, ['export', 'x', '--format', 'zip']); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'mlflow', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("command", [[], ["search"], ["validate"], ["datasets"], ["ui"], ["export"], ["predict"],
                                     ["study", "create"]])
def test_every_help_has_an_example(command):
    result = sweeper(*command, "--help")
    assert result.exit_code == 0 and "Example:" in result.output


def test_bad_space_file_is_an_error_line_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((SPACES / "fashion.yaml").read_text().replace("[adamw, adam, nadam, sgd]", "[adam, lion]"))
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if "lion" in text)
    expected = (f"Error: {bad}:{line}: params.optimizer.choices: must be one of adam, sgd, rmsprop, adagrad, adamw, "
                f"nadam, but got 'lion' (text)")
    for result in (sweeper("validate", bad), sweeper("search", "fashion", "--space", bad, cwd=tmp_path)):
        assert result.exit_code == 1
        assert result.output.strip().splitlines()[-1] == expected
    assert not (tmp_path / "mlruns").exists()


def test_installed_command_validates_and_reports_errors(tmp_path):
    good = run("validate", SPACES / "fashion.yaml")
    assert good.returncode == 0 and "valid. Tunes n_layers, units, learning_rate" in good.stdout
    dup = tmp_path / "dup.yaml"
    dup.write_text("objective: val_loss\nobjective: val_accuracy\n")
    bad = run("validate", dup)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == (f"Error: {dup}:2: objective: duplicated key; each key may appear once per "
                                  f"mapping, but it is also at line 1")
    usage = run("search", "nope")
    assert usage.returncode == 2 and usage.stderr.strip().splitlines()[-1].startswith("Error: Invalid value")


@pytest.mark.parametrize("keras_backend", KERAS_BACKENDS)
def test_installed_command_trains_on_each_backend_and_its_model_exports_and_predicts(tmp_path, keras_backend):
    import json

    import numpy as np

    from sweeper.ml.data import raw_arrays

    from .test_faults import runs

    cache = tmp_path / "cache"  # a user's first sweep: nothing compiled yet
    space = tmp_path / "jax.yaml"  # a space that names JAX: the user's --keras-backend wins over it
    space.write_text((SPACES / "digits.yaml").read_text() + "keras_backend: jax\n")
    result = run("search", "fashion", "--space", space, "--trials", 2, "--max-epochs", 2, "--subset", 300, "--pruner",
                 "none", "--keras-backend", keras_backend, cwd=tmp_path,
                 env={"XDG_CACHE_HOME": str(cache), "JAX_COMPILATION_CACHE_DIR": None, "KERAS_BACKEND": None})
    assert result.returncode == 0, result.stderr
    assert any((cache / "sweeper" / "jax").glob("*")) == (keras_backend == "jax")  # JAX keeps what it compiled
    assert "Best trials by val_accuracy" in result.stdout and "models:/fashion@champion" in result.stdout
    assert (tmp_path / "mlruns" / "mlflow.db").is_file() and (tmp_path / "mlruns" / "optuna").is_dir()
    assert {r.data.tags["keras_backend"] for r in runs(tmp_path, "fashion")} == {keras_backend}
    exported = run("export", "fashion", "--out", "best", "--format", "keras", "--format", "tflite", cwd=tmp_path,
                   env={"KERAS_BACKEND": keras_backend})  # on JAX, a TensorFlow process writes the tflite file
    assert exported.returncode == 0, exported.stderr
    card = json.loads((tmp_path / "best" / "model.json").read_text())
    assert card["trained_on"] == keras_backend
    (_, _), (images, labels) = raw_arrays("fashion")  # the test images as bytes, as users have them
    np.save(tmp_path / "test.npy", images)
    predicted = run("predict", "best", "test.npy", "--json", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    classes = [row["class"] for row in json.loads(predicted.stdout)]
    accuracy = np.mean(np.array(classes) == np.array(card["class_names"])[labels])
    assert accuracy == pytest.approx(card["test_metrics"]["test_accuracy"], abs=2e-4)  # the inputs trained on


def test_a_jax_worker_never_imports_tensorflow_and_still_saves_and_registers_its_models(tmp_path):
    """TensorFlow, 457 MiB of a JAX worker's memory, stays out of it: each trial (the second of a worker's after its
    first saved its model) and the final model (retrained, saved, registered) run without it. The space chose JAX,
    the user nothing. Keras' extras stay out too, but for what the worker itself needs: scikit-learn, which loads
    the digits after Keras was imported without it."""
    from .test_faults import runs

    space, probe = tmp_path / "probe.yaml", tmp_path / "probe.txt"
    space.write_text("objective: val_accuracy\nmodel: tests.probe_builder:probing_mlp\nkeras_backend: jax\n"
                     "trials: 4\nmax_epochs: 1\nparams:\n  learning_rate: 0.01\n  width: {type: int, low: 8, high: 32}\n")
    result = run("search", "digits", "--space", space, "--jobs", 2, "--subset", 200, "--pruner", "none", cwd=tmp_path,
                 env={"KERAS_BACKEND": None, "SWEEPER_PROBE_FILE": str(probe),
                      "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert result.returncode == 0, result.stderr
    parent, = [r for r in runs(tmp_path) if r.data.tags["run_kind"] == "search"]
    assert parent.data.metrics["refit_epochs"] == 1 and parent.data.tags["model_version"] == "1"
    calls = [line.split() for line in probe.read_text().splitlines()]
    assert len(calls) == 4 and len({pid for pid, _, _ in calls}) == 2  # two workers, two trials each
    assert {imported for _, imported, _ in calls} == {"jax"}
    assert {extras for _, _, extras in calls} == {"sklearn"}
    assert {r.data.tags["keras_backend"] for r in runs(tmp_path)} == {"jax"}


KERAS_IMPORT = ("import sys\nfrom sweeper.runtime import setup\n{worker}"
                "with setup.keras_extras_kept_out():\n    import keras\n"
                "print(sorted(name for name in setup.KERAS_EXTRAS if name in sys.modules))\n"
                "import sklearn.linear_model, matplotlib.pyplot\nprint(keras.src.wrappers.fixes.sklearn is None)")


@pytest.mark.parametrize("worker, kept", [(True, "[]\nTrue"), (False, "['IPython', 'matplotlib', 'sklearn']\nFalse")])
def test_keras_imports_without_its_extras_only_in_a_worker_and_they_import_after(worker, kept):
    """A worker's Keras is imported without scikit-learn, matplotlib and IPython (1.0-1.2 s, 78 MiB), which import
    as usual afterwards; a user's process (or a Dask worker's) keeps Keras' extras, its scikit-learn wrappers."""
    code = KERAS_IMPORT.format(worker="setup.other_backend_kept_out()\n" if worker else "")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "jax"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == kept


def test_jax_compiles_without_a_cache_where_the_cache_cannot_be_made(tmp_path, monkeypatch):
    from sweeper.runtime import setup

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # a file where the folder would go
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    setup._jax_compilation_cache()
    assert "JAX_COMPILATION_CACHE_DIR" not in os.environ  # no cache, no warning from JAX about one
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    setup._jax_compilation_cache()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "home" / "sweeper" / "jax")


def test_the_keras_backend_cannot_change_once_keras_runs_in_the_process():
    import keras

    other = next(name for name in KERAS_BACKENDS if name != keras.backend.backend())
    result = sweeper("search", "digits", "--keras-backend", other)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: Invalid value for '--keras-backend': Keras already runs on {keras.backend.backend()} in this "
        f"process, and cannot change to {other}; set KERAS_BACKEND={other} before Python starts")


def test_datasets_lists_each_dataset_and_where_it_is():
    result = sweeper("datasets")
    assert result.exit_code == 0
    assert "/usr/share/datasets/fashion-mnist" in result.output or "SWEEPER_DATA_DIR" in os.environ
    assert "scikit-learn (bundled)" in result.output and "csv:PATH" in result.output


def test_ui_serves_the_store_on_localhost(fashion_study):
    workdir, _ = fashion_study
    port = free_port()
    server = subprocess.Popen([SWEEPER, "ui", "--port", str(port)], cwd=workdir, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        body = None
        for _ in range(120):
            try:
                url = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=fashion"
                body = urllib.request.urlopen(url, timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert body is not None and '"name": "fashion"' in body.replace('":"', '": "')
        started = [" ".join(p.cmdline()) for p in psutil.Process(server.pid).children(recursive=True)]
        assert not [c for c in started if "huey" in c], started  # no runner of MLflow's GenAI jobs
    finally:
        os.killpg(server.pid, 15)
        out, err = server.communicate(timeout=30)
    # the terminal gets sweeper's own lines only: MLflow's start-up and request log go to the log file
    log = Path(tempfile.gettempdir()) / f"sweeper-ui-{port}.log"
    assert err.strip() == (f"MLflow UI on http://127.0.0.1:{port}/ (store mlruns/mlflow.db); Ctrl-C to "
                           f"stop. Server log: {log}") and out == ""
    assert "get-by-name" in log.read_text() or log.stat().st_size > 0
