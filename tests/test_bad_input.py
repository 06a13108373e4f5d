"""Every bad input: one exact `Error:` line, the right exit code, and nothing written to MLflow or a study."""

import csv
import os

import pytest

from .conftest import SPACES, sweeper

FASHION = (SPACES / "fashion.yaml").read_text()


def _space(old, new):
    assert old in FASHION
    return FASHION.replace(old, new)


SPACE_FILES = {
    "unknown-key.yaml": _space("patience: 3", "patience: 3\nepochs: 3"),
    "no-lr.yaml": _space("  learning_rate: {type: float, low: 3e-4, high: 1e-2, log: true}\n", ""),
    "low-high.yaml": _space("low: 3e-4, high: 1e-2", "low: 3e-2, high: 1e-4"),
    "log-zero.yaml": _space("momentum: {type: float, low: 0.8, high: 0.95}",
                            "momentum: {type: float, low: 0.0, high: 0.95, log: true}"),
    "optimizer.yaml": _space("[adamw, adam, nadam, sgd]", "[adam, lion]"),
    "lr-text.yaml": _space("  learning_rate: {type: float, low: 3e-4, high: 1e-2, log: true}",
                           "  learning_rate: fast"),
    "mae.yaml": _space("metric: val_accuracy\n  direction: maximize", "metric: val_mae\n  direction: minimize"),
    "direction.yaml": _space("direction: maximize", "direction: minimize"),
    "duplicate.yaml": _space("trials: 60", "trials: 60\ntrials: 30"),
    "syntax.yaml": "params: [unclosed\n",
}


def _line(name, text):
    """The line of SPACE_FILES[name] that starts with `text` (after indentation)."""
    return next(i for i, line in enumerate(SPACE_FILES[name].splitlines(), 1) if line.strip().startswith(text))


CASES = [
    # (arguments, exit code, the exact last line)
    (["search", "cifar"], 2, "Error: Invalid value for 'DATASET': unknown dataset 'cifar'; expected one of "
                             "fashion, mnist, digits, california or csv:PATH"),
    (["search", "fashion", "--space", "missing.yaml"], 1,
     "Error: missing.yaml: no such file; expected a search-space YAML file"),
    (["search", "fashion", "--space", "binary.yaml"], 1, "Error: binary.yaml: cannot read the file: 'utf-8' codec "
                                                         "can't decode byte 0xff in position 0: invalid start byte"),
    (["search", "fashion", "--space", "syntax.yaml"], 1,
     "Error: syntax.yaml:2: invalid YAML: expected ',' or ']', but got '<stream end>'"),
    (["search", "fashion", "--space", "unknown-key.yaml"], 1,
     f"Error: unknown-key.yaml:{_line('unknown-key.yaml', 'epochs: 3')}: epochs: unknown key; expected one of "
     f"description, objective, trials, max_epochs, patience, ensemble, test_time_shifts, keras_backend, model, params, "
     f"start"),
    (["search", "fashion", "--space", "no-lr.yaml"], 1,
     f"Error: no-lr.yaml:{_line('no-lr.yaml', 'n_layers:')}: params.learning_rate: missing required key in `params`"),
    (["search", "fashion", "--space", "low-high.yaml"], 1,
     f"Error: low-high.yaml:{_line('low-high.yaml', 'learning_rate')}: params.learning_rate: `low <= high` must "
     f"hold, but got (low=0.03, high=0.0001)"),
    (["search", "fashion", "--space", "log-zero.yaml"], 1,
     f"Error: log-zero.yaml:{_line('log-zero.yaml', 'momentum')}: params.momentum.low: `low > 0` must hold for "
     f"`log: true`, but got (low=0.0, high=0.95)"),
    (["search", "fashion", "--space", "optimizer.yaml"], 1,
     f"Error: optimizer.yaml:{_line('optimizer.yaml', 'optimizer:')}: params.optimizer.choices: must be one of adam, sgd, "
     f"rmsprop, adagrad, adamw, nadam, but got 'lion' (text)"),
    (["search", "fashion", "--space", "lr-text.yaml"], 1,
     f"Error: lr-text.yaml:{_line('lr-text.yaml', 'learning_rate')}: params.learning_rate: must be a number > 0 and < 10, "
     f"but got 'fast' (text)"),
    (["search", "fashion", "--space", "mae.yaml"], 2,
     "Error: objective metric val_mae does not fit fashion, a classification dataset; expected one of "
     "val_accuracy, val_loss in mae.yaml"),
    (["search", "fashion", "--space", "direction.yaml"], 1,
     f"Error: direction.yaml:{_line('direction.yaml', 'direction:')}: objective.direction: must be maximize for "
     f"val_accuracy, but got 'minimize' (text)"),
    (["search", "fashion", "--space", "duplicate.yaml"], 1,
     f"Error: duplicate.yaml:{_line('duplicate.yaml', 'trials: 30')}: trials: duplicated key; each key may appear "
     f"once per mapping, but it is also at line {_line('duplicate.yaml', 'trials: 60')}"),
    (["search", "fashion", "--trials", "0"], 2, "Error: Invalid value for '--trials': 0 is not in the range x>=1."),
    (["search", "fashion", "--max-epochs", "-1"], 2,
     "Error: Invalid value for '--max-epochs': -1 is not in the range x>=1."),
    (["search", "fashion", "--patience", "-1"], 2,
     "Error: Invalid value for '--patience': -1 is not in the range x>=0."),
    (["search", "fashion", "--subset", "0"], 2, "Error: Invalid value for '--subset': 0 is not in the range x>=1."),
    (["search", "fashion", "--timeout", "soon"], 2,
     "Error: Invalid value for '--timeout': 'soon' is not a duration; expected e.g. 90s, 30m, 2h or 1h30m"),
    (["search", "fashion", "--timeout", "0s"], 2, "Error: Invalid value for '--timeout': '0s' must be longer than zero"),
    (["search", "fashion", "--backend", "ray"], 2,
     "Error: Invalid value for '--backend': 'ray' is not one of 'optuna', 'keras-tuner'."),
    (["search", "fashion", "--algorithm", "bohb"], 2, "Error: Invalid value for '--algorithm': 'bohb' is not an "
                                                      "algorithm of the optuna backend; expected one of tpe, random, "
                                                      "grid, cmaes, nsga2"),
    (["search", "fashion", "--pruner", "asha"], 2, "Error: Invalid value for '--pruner': 'asha' is not a pruner of "
                                                   "the optuna backend; expected one of median, hyperband, none"),
    (["search", "fashion", "--backend", "keras-tuner", "--algorithm", "cmaes"], 2,
     "Error: Invalid value for '--algorithm': 'cmaes' is not an algorithm of the keras-tuner backend; expected one "
     "of random, bayesian, hyperband"),
    (["search", "fashion", "--backend", "keras-tuner", "--pruner", "median"], 2,
     "Error: Invalid value for '--pruner': 'median' is not a pruner of the keras-tuner backend; expected one of "
     "none"),
    (["search", "fashion", "--backend", "keras-tuner", "--jobs", "2"], 2,
     "Error: --jobs 2 needs the optuna backend: a keras-tuner study serves one process at a time"),
    (["search", "fashion", "--backend", "keras-tuner", "--storage", "sqlite:///kt.db"], 2,
     "Error: the keras-tuner backend keeps its state in a folder, but --storage is the URL sqlite:///kt.db; give a "
     "folder path (default: mlruns/keras-tuner)"),
    (["search", "fashion", "--jobs", "0"], 2, "Error: Invalid value for '--jobs': 0 is not in the range x>=1."),
    (["search", "fashion", "--algorithm", "grid"], 2,
     "Error: the grid algorithm needs a `step` on float parameter 'learning_rate' (or a categorical list of values), "
     "but it has none"),
    (["search", "fashion", "--target", "y"], 2, "Error: --target applies to csv:PATH datasets only"),
    (["search", "csv:table.csv"], 2, "Error: csv:table.csv needs --target COLUMN naming the column to predict"),
    (["search", "csv:table.csv", "--target", "z"], 1, "Error: csv:table.csv: no column 'z'; the columns are: a, b, y"),
    (["search", "csv:text.csv", "--target", "y"], 1,
     "Error: csv:text.csv: column 'name' is text with 80 distinct values, but a text column is one-hot encoded and "
     "may have at most 50; drop it or turn it into numbers"),
    (["search", "csv:missing.csv", "--target", "y"], 1, "Error: csv:missing.csv: no such file"),
    (["search", "fashion", "--tracking-uri", "http://127.0.0.1:9"], 1,
     "Error: cannot reach the MLflow tracking server http://127.0.0.1:9: [Errno 111] Connection refused; start it, "
     "or leave out --tracking-uri to use the embedded store"),
    (["export", "fashion", "--out", "best"], 1,
     "Error: no MLflow store here (mlruns/mlflow.db); run `sweeper search` in this folder first, or give "
     "--tracking-uri"),
    (["export", "fashion", "--out", "note.txt/best"], 1, "Error: cannot create note.txt/best: note.txt is a file, "
                                                         "not a folder"),
    (["export", "fashion"], 2, "Error: Missing option '--out'."),
    (["validate", "missing.yaml"], 1, "Error: missing.yaml: no such file; expected a search-space YAML file"),
    (["search", "fashion", "--cluster", "tcp://127.0.0.1:8786"], 2,
     "Error: --cluster needs stores that every Dask worker reaches, but the study would be the embedded journal and "
     "MLflow would be the embedded SQLite file; pass --storage postgresql+psycopg://USER:PASSWORD@HOST/DB (the "
     "study) and --tracking-uri http://HOST:5000 (an MLflow server)"),
    (["search", "fashion", "--cluster", "tcp://127.0.0.1:8786", "--storage", "sqlite:///s.db", "--tracking-uri",
      "http://127.0.0.1:5000"], 2,
     "Error: --cluster needs stores that every Dask worker reaches, but the study would be in sqlite:///s.db; pass "
     "--storage postgresql+psycopg://USER:PASSWORD@HOST/DB (the study) and --tracking-uri http://HOST:5000 (an "
     "MLflow server)"),
    (["search", "fashion", "--tracking-uri", "notaurl"], 2,
     "Error: --tracking-uri notaurl is not a tracking URI; expected http://HOST:PORT (an MLflow server), "
     "sqlite:///PATH or postgresql://..., or leave it out for the embedded store"),
    (["search", "fashion", "--storage", "sqlite:////nonexistent/dir/x.db"], 2,
     "Error: --storage sqlite:////nonexistent/dir/x.db: the folder /nonexistent/dir does not exist; create it "
     "first, or choose a file in an existing folder"),
    (["search", "fashion", "--tracking-uri", "sqlite:///no/such/folder/mlflow.db"], 2,
     "Error: --tracking-uri sqlite:///no/such/folder/mlflow.db: the folder no/such/folder does not exist; create "
     "it first, or choose a file in an existing folder"),
]


@pytest.fixture
def inputs(tmp_path):
    for name, text in SPACE_FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00bad")
    (tmp_path / "note.txt").write_text("not a folder")
    with open(tmp_path / "table.csv", "w", newline="") as f:
        csv.writer(f).writerows([["a", "b", "y"]] + [[i, 2 * i, i % 2] for i in range(40)])
    with open(tmp_path / "text.csv", "w", newline="") as f:
        csv.writer(f).writerows([["name", "b", "y"]] + [[f"person {i}", i, i % 2] for i in range(80)])
    return tmp_path


@pytest.mark.parametrize("args,code,line", CASES, ids=[" ".join(a) for a, _, _ in CASES])
def test_bad_input_gets_one_error_line_and_writes_nothing(inputs, args, code, line):
    before = sorted(p.name for p in inputs.iterdir())
    result = sweeper(*args, cwd=inputs)
    assert result.exit_code == code
    assert result.output.strip().splitlines()[-1] == line
    assert "Traceback" not in result.output
    created = sorted(set(p.name for p in inputs.iterdir()) - set(before))
    assert created in ([], ["mlruns"])  # at most an empty store: no experiment, no run, no study
    assert not os.path.exists("/nonexistent")  # a store's folder is never made for a URL given
    if created:
        assert not (inputs / "mlruns" / "optuna").exists() and not (inputs / "mlruns" / "keras-tuner").exists()
        import mlflow

        client = mlflow.MlflowClient(f"sqlite:///{inputs}/mlruns/mlflow.db")
        assert [e.name for e in client.search_experiments()] in ([], ["Default"])


def test_resuming_with_another_search_space_is_refused_naming_the_difference(fashion_study, tmp_path):
    import mlflow

    workdir, _ = fashion_study
    changed = tmp_path / "changed.yaml"
    changed.write_text(_space("low: 3e-4, high: 1e-2", "low: 1e-3, high: 1e-2").replace("[128, 256, 512]",
                                                                                        "[128, 256]"))
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("fashion")
    runs_before = len(client.search_runs([experiment.experiment_id]))
    result = sweeper("search", "fashion", "--space", changed, "--trials", 5, cwd=workdir)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: study 'fashion' was run with another search space (batch_size: was one of [128, 256, 512], now "
        "one of [128, 256]; learning_rate: was float 0.0003..0.01 log, now float 0.001..0.01 log); resume it with "
        "the same space or choose another --study")
    assert len(client.search_runs([experiment.experiment_id])) == runs_before
