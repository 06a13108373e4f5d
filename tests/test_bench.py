"""The benchmark suite's scripts still run: one tiny quality round per tool (sweeper, the hand recipe and the search
anchors, each on a small share of the data and for a few seconds: one trial each), a test of its own per tool so
that the suite's workers share them."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("tool", ["sweeper", "recipe", "optuna", "keras-tuner-hyperband"])
def test_quality_bench_runs_sweeper_and_the_anchors(tmp_path, tool):
    # sweeper's --timeout counts its start-up (Keras' import, the data): two trials under a budget they cannot outlast
    budget = ["--timeout", "600", "--trials", "2"] if tool == "sweeper" else ["--timeout", "4"]
    done = subprocess.run([sys.executable, str(BENCH / "quality.py"), "--seeds", "0", *budget,
                           "--max-epochs", "1", "--subset", "2000", "--targets", "0.3", "--tools", tool],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {m.group(1): m for m in re.finditer(r"^seed 0 (\S+) +test (0\.\d{4}) .*?\((\d+) trials.*$", done.stdout, re.M)}
    assert set(rows) == {tool}
    assert 0.3 < float(rows[tool].group(2)) < 1 and int(rows[tool].group(3)) >= 1, done.stdout
    assert "val never" not in done.stdout
    assert re.search(rf"^{tool} +test mean 0\.\d{{4}} ", done.stdout, re.M)  # the summary
    if tool == "sweeper":
        assert "not training" in rows[tool].group(0) and "worker peak" in rows[tool].group(0)


def test_worker_start_bench_times_each_piece_of_a_workers_start_up():
    done = subprocess.run([sys.executable, str(BENCH / "worker_start.py"), "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    pieces = re.findall(r"^(.+?) +(\d+\.\d{3}) s\b", done.stdout, re.M)
    assert [name for name, _ in pieces] == ["import ml_dtypes", "import keras (JAX worker)",
                                            "Fashion-MNIST read and split", "import mlflow, open the store",
                                            "sum of the medians"], done.stdout
    assert all(float(seconds) > 0 for _, seconds in pieces)
    assert re.search(r"^import ml_dtypes .*\(\d+\.\d+\.\d+\)$", done.stdout, re.M)  # its version beside


def test_step_floor_bench_prints_each_piece_of_an_epoch_against_the_ideal():
    done = subprocess.run([sys.executable, str(BENCH / "step_floor.py"), "--batches", "32", "--images", "2048"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = re.findall(r"^(\S.+?) +(\d+\.\d{3}) s = +(\d+\.\d)x$", done.stdout, re.M)
    assert [name for name, *_ in rows] == [
        "matmuls alone, a call per step", "matmuls alone, 64 steps a scan", "matmuls alone, 64 steps a scan (bfloat16)",
        "Keras' train_step, a call per step", "Keras' train_step, 64 steps a scan, rows gathered in it",
        "Keras' fit as sweeper calls it (no validation)"], done.stdout
    assert all(float(seconds) > 0 and float(ratio) > 0 for _, seconds, ratio in rows)
    assert re.search(r"ideal epoch \d+\.\d{3} s \(2048 images\)", done.stdout)


def test_scaling_bench_gives_the_next_sweep_the_first_ones_configurations(tmp_path):
    """--same-trials: a finished sweep's trials, read from its Optuna journal, become the `start` of a space file that
    sweeper accepts, one entry per trial in trial order, the layers' sizes as one `units` list."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from sweeper.domain.places import OPTUNA_JOURNAL
    from sweeper.domain.space import load_space
    from sweeper.engines.optuna_engine import make_storage

    sys.path.insert(0, str(BENCH))
    import scaling

    def distribution(value):
        if isinstance(value, (str, bool)):
            return CategoricalDistribution([value])
        return IntDistribution(1, 4096) if isinstance(value, int) else FloatDistribution(0.0, 1.0)

    journal = tmp_path / OPTUNA_JOURNAL
    journal.parent.mkdir(parents=True)
    study = optuna.create_study(study_name="fashion", storage=make_storage(str(journal)), direction="maximize")
    drawn = [{"n_layers": 2, "units_0": 1024, "units_1": 512, "learning_rate": 0.002, "batch_size": 256,
              "optimizer": "adamw", "dropout": 0.3},
             {"n_layers": 1, "units_0": 1431, "learning_rate": 0.0006, "batch_size": 128, "optimizer": "sgd",
              "momentum": 0.9, "nesterov": True, "dropout": 0.13}]
    for params in drawn:
        study.add_trial(optuna.trial.create_trial(params=params, value=0.9,
                                                  distributions={k: distribution(v) for k, v in params.items()}))

    space = load_space(scaling.space_starting_with(scaling.configurations(str(tmp_path)), str(tmp_path)))

    assert [dict(entry) for entry in space.start] == drawn
