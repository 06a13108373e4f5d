"""What a newcomer sees (issue 17, items 7-15): hints that work as typed, a display that says what the final
model's making is doing, tables that fit 80 columns, quiet TensorFlow, report axes from the space, fast simple
errors, every error of a space file at once, and the smaller surprises. Real stores, real training."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sweeper.cli.speak import command_name

from .conftest import SMALL, SPACES, here, sweeper, write_space
from .test_sweep import FAILING

SWEEPER = str(Path(sys.executable).parent / "sweeper")


# -- 7. the hints name the command as this shell runs it -------------------------------------------------

def test_hints_name_sweeper_as_this_shell_runs_it(monkeypatch, tmp_path):
    venv_bin = str(Path(SWEEPER).parent)
    bare_path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin) or "/usr/bin"
    monkeypatch.setattr(sys, "argv", [SWEEPER, "search"])
    monkeypatch.setenv("PATH", bare_path)
    monkeypatch.chdir(tmp_path)
    assert command_name() == SWEEPER  # not on PATH, started from elsewhere: the whole path
    monkeypatch.chdir(Path(SWEEPER).parents[2])
    monkeypatch.setattr(sys, "argv", [os.path.relpath(SWEEPER), "search"])
    assert command_name() == os.path.relpath(SWEEPER)  # e.g. .venv/bin/sweeper, as make search runs it
    monkeypatch.setenv("PATH", venv_bin + os.pathsep + bare_path)
    assert command_name() == "sweeper"  # the venv is active: the plain name works


def test_the_summary_hints_work_as_typed_from_a_fresh_shell(tmp_path):
    """`make search` runs .venv/bin/sweeper: its summary's hints must run in a shell without the venv."""
    venv_bin = str(Path(SWEEPER).parent)
    env = {**os.environ, "SWEEPER_OFFLINE": "1",
           "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)}
    result = subprocess.run([SWEEPER, "search", "digits", "--trials", "1", "--max-epochs", "1", "--subset", "200"],
                            capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    hint = next(line for line in result.stdout.splitlines() if line.startswith("Browse every trial:"))
    assert hint.split(":", 1)[1].split() == [SWEEPER, "ui"]
    export = next(line for line in result.stdout.splitlines() if line.startswith("Export the best model:"))
    command = export.split(":", 1)[1].split()
    assert command[0] == SWEEPER
    ran = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)  # typed as printed
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "best-digits" / "model.keras").is_file()
    # the banner: two lines, each within 80 columns, with the right plurals
    banner = result.stderr.splitlines()[:2]
    assert banner == ["Sweeping digits: study digits, 1 trial of up to 1 epoch",
                      "Engine optuna, algorithm tpe, pruner median, Keras on tensorflow"]


# -- 8. the final model's making is shown: the refit's epochs and each step -------------------------------

class Recorder:
    def __init__(self):
        self.events = []

    def __getattr__(self, name):
        return lambda *args: self.events.append((name, *args))


def test_the_display_follows_the_refit_epoch_by_epoch_and_each_final_step(tmp_path, monkeypatch):
    from sweeper.domain.space import load_space
    from sweeper.usecases.plan import make_plan
    from sweeper.usecases.sweep import run_sweep

    monkeypatch.chdir(tmp_path)
    space = load_space(SPACES / "digits.yaml").with_budget(trials=2, max_epochs=3, patience=3)
    listener = Recorder()
    result = run_sweep(make_plan("digits", space=space, pruner="none", subset=300), listener)
    names = [event[0] for event in listener.events]
    refit_at = names.index("refit_started")
    epochs = [event[1] for event in listener.events if event[0] == "refit_epoch_ended"]
    assert epochs == list(range(1, result.refit_epochs + 1))
    assert all("loss" in event[2] for event in listener.events if event[0] == "refit_epoch_ended")
    steps = [event[1] for event in listener.events if event[0] == "final_step"]
    assert steps == [f"evaluating trial {result.best.number}'s model on the test split",
                     "evaluating the final model on the test split", "saving the final model in MLflow",
                     "logging and registering models:/digits@champion", "fitting the baseline on the same split"]
    assert names.index("final_step") < refit_at < names.index("refit_epoch_ended")


# -- 9. tables fit 80 columns by leaving out whole columns ------------------------------------------------

def test_tables_fit_80_columns_by_leaving_out_whole_columns(fashion_study, monkeypatch):
    workdir, _ = fashion_study
    monkeypatch.setenv("COLUMNS", "80")
    for args in (["trials", "fashion"], ["studies"]):
        output = sweeper(*args, cwd=workdir).output
        lines = output.rstrip("\n").splitlines()
        assert max(len(line) for line in lines) <= 80, output
        assert "…" not in output, output  # no word is cut
    trials = " ".join(sweeper("trials", "fashion", cwd=workdir).output.split())  # the caption wraps
    assert "Left out to fit the terminal: activation" in trials
    assert "optimizer" in trials and "complete" in trials  # what matters most stays
    monkeypatch.setenv("COLUMNS", "200")
    wide = sweeper("trials", "fashion", cwd=workdir).output
    assert "activation" in wide and "Left out" not in wide


def test_the_summary_table_fits_80_columns():
    from rich.console import Console

    from sweeper.present.console import FittedTable

    rows = [["12", "0.8846", "15", "512-256-128", "0.000353", "256", "rmsprop", "0.214", "leaky_relu"]] * 3
    table = FittedTable("Best trials by val_accuracy", ["trial", "accuracy", "epochs", "units", "lr", "batch",
                                                        "optimizer", "dropout", "activation"], rows)
    console = Console(width=80, record=True, force_terminal=False)
    console.print(table)
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    assert "512-256-128" in text and "rmsprop" in text and "leaky_relu" not in text
    wide = Console(width=140, record=True, force_terminal=False)
    wide.print(table)
    assert "leaky_relu" in wide.export_text()


# -- 10. TensorFlow's own warnings stay out of the terminal ------------------------------------------------

def test_tensorflow_retracing_warnings_stay_out_of_the_terminal():
    code = """
from sweeper.runtime.setup import configure_process
from sweeper.ml.quiet import import_keras
configure_process()  # what the command line and its worker processes do first
import_keras()
import numpy as np, tensorflow as tf
f = tf.function(lambda x: x * 2)
for n in range(1, 12):  # a new shape each call: TensorFlow warns that it retraces
    f(np.ones(n)); f(np.ones((n, 1))); f(float(n))
print("done")
"""
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "done"
    assert "retracing" not in ran.stderr and "WARNING" not in ran.stderr, ran.stderr


# -- 12. the report's axes come from the space the study recorded; fixed parameters are left out -----------

def test_report_axes_follow_the_recorded_space_and_leave_fixed_parameters_out(fashion_study):
    from sweeper.present.figures import optuna_study, study_figures
    from sweeper.store import Store

    workdir, _ = fashion_study
    store = Store.open(f"sqlite:///{workdir}/mlruns/mlflow.db", create=False)
    record = store.study("fashion", trials=True)
    space = store.recorded_space(record)
    assert space is not None and space.signature() == store.space_signature(record)
    curves = store.curves(record.trials, record.metric)
    study = optuna_study(record, curves, space)
    distributions = {k: v for t in study.trials for k, v in t.distributions.items()}
    assert distributions["units_0"].log and not distributions["dropout"].log  # as fashion.yaml says
    assert distributions["learning_rate"].log and distributions["learning_rate"].low == 3e-4
    assert "l2" not in distributions  # fixed: not a parameter of the search
    slice_figure = next(f.figure for f in study_figures(record, curves, space) if f.key == "slice")
    assert slice_figure.layout.width is None  # it takes the page's width, not 300 px a parameter


# -- 14. simple errors answer at once; a space file's errors all at once -----------------------------------

def test_simple_errors_answer_before_tensorflow_mlflow_or_optuna_are_imported(fashion_study, tmp_path):
    workdir, _ = fashion_study
    (tmp_path / "taken").mkdir()
    code = ("import sys; from click.testing import CliRunner; from sweeper.cli import main; "
            "outs = [CliRunner().invoke(main, args).output.strip().splitlines()[-1] for args in "
            f"(['export', 'fashion', '--out', {str(tmp_path / 'taken')!r}], ['export', 'nope', '--out', 'x'], "
            "['trials', 'nope'], ['report', 'nope'], ['refine', 'nope'], ['search', 'csv:missing.csv', '--target', 'y'])]; "
            "print('\\n'.join(outs)); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'mlflow', 'optuna') if m in sys.modules))")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=workdir, check=True)
    lines = ran.stdout.strip().splitlines()
    store = f"sqlite:///{(workdir / 'mlruns' / 'mlflow.db').resolve()}"
    assert lines == [f"Error: {tmp_path / 'taken'} already exists; choose another --out or add --force to replace it",
                     *[f"Error: no study 'nope' in the MLflow store {store}; studies: fashion"] * 4,
                     "Error: csv:missing.csv: no such file", "[]"]


def test_validate_names_every_error_of_a_file_at_once(tmp_path):
    bad = write_space(tmp_path / "typos.yaml", """\
objective: {metric: val_accuracy, direction: maximize}
trials: 0
params:
  n_layers: {type: int, low: 3, high: 1}
  units: {type: int, low: 16, hihg: 64}
  learning_rate: 1e-3
  optimiser: adam
""")
    result = sweeper("validate", bad)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {bad}:2: trials: must be an integer >= 1, but got 0 (integer)",
        f"Error: {bad}:4: params.n_layers: `low <= high` must hold, but got (low=3, high=1)",
        f"Error: {bad}:5: params.units.hihg: unknown key; expected one of type, low, high, step, log",
        f"Error: {bad}:7: params.optimiser: unknown key; expected one of n_layers, units, learning_rate, batch_size, "
        f"optimizer, momentum, nesterov, dropout, activation, kernel_initializer, l2, batch_norm, weight_decay, "
        f"label_smoothing, lr_schedule, ema, standardize"]


# -- 15. the smaller surprises -------------------------------------------------------------------------------

def test_an_all_fixed_space_says_each_trial_trains_the_same_configuration(tmp_path):
    fixed = write_space(tmp_path / "fixed.yaml", "objective: val_accuracy\nparams:\n  n_layers: 1\n  units: 16\n"
                                                 "  learning_rate: 0.01\n")
    checked = sweeper("validate", fixed)
    assert checked.exit_code == 0 and "Tunes nothing: every parameter is fixed, so each trial trains the same " \
                                      "configuration" in checked.output
    result = sweeper("search", "digits", "--space", fixed, "--trials", 1, "--max-epochs", 1, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert f"Note: every parameter of {fixed} is fixed: each trial trains the same configuration" in result.output


def test_a_report_without_a_complete_trial_says_so(tmp_path):
    failing = write_space(tmp_path / "nan.yaml", FAILING)
    sweep = sweeper("search", "fashion", "--space", failing, "--trials", 2, *SMALL, "--max-failures", 1, cwd=tmp_path)
    assert sweep.exit_code == 1, sweep.output
    report = sweeper("report", "fashion", "--out", tmp_path / "r.html", cwd=tmp_path)
    assert report.exit_code == 0, report.output
    assert report.output.startswith(f"Wrote {tmp_path / 'r.html'}: no figures yet; not drawn: optimization_history "
                                    f"(no complete trial yet)")


def test_the_model_card_keeps_the_sweep_settings_as_numbers(fashion_study, tmp_path):
    workdir, _ = fashion_study
    assert sweeper("export", "fashion", "--out", tmp_path / "best", cwd=workdir).exit_code == 0
    search = json.loads((tmp_path / "best" / "model.json").read_text())["search"]
    assert (search["trials"], search["max_epochs"], search["subset"], search["timeout_s"]) == (3, 2, 300, None)


def test_export_while_a_search_runs_says_it_is_the_best_so_far(tmp_path):
    import mlflow

    env = {**os.environ, "SWEEPER_OFFLINE": "1"}
    search = subprocess.Popen([SWEEPER, "search", "digits", "--trials", "200", "--subset", "300", "--max-epochs", "2",
                               "--pruner", "none"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while True:  # until a trial has completed with its model kept: there is a best model to export
            assert search.poll() is None and time.monotonic() < deadline
            if (tmp_path / "mlruns" / "mlflow.db").exists():
                client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
                experiment = client.get_experiment_by_name("digits")
                if experiment and client.search_runs([experiment.experiment_id],
                                                     "tags.has_model = 'true' and tags.state = 'complete'"):
                    break
            time.sleep(0.5)
        exported = here(tmp_path, "export", "digits", "--out", "now")  # a read: no process of its own needed
    finally:
        os.killpg(search.pid, signal.SIGINT)
        search.wait(timeout=120)
    assert exported.returncode == 0, exported.stderr
    assert "Study digits has a sweep running: this is the best model so far (trial" in exported.stderr
    assert (tmp_path / "now" / "model.keras").is_file()
