"""`sweeper lr-find`: the learning-rate range test on real data, its suggestion, its plot, MLflow and --write."""

import math
import re

import mlflow
import numpy as np
import pytest

from sweeper.domain.space import load_space
from sweeper.usecases.lr_find import _round_down, _round_up, _suggest, write_range

from .conftest import SPACES, sweeper, write_space


def test_lr_find_suggests_a_range_plots_it_records_it_and_writes_it_into_a_space(tmp_path):
    space = write_space(tmp_path / "digits.yaml", (SPACES / "digits.yaml").read_text())
    result = sweeper("lr-find", "digits", "--steps", 120, "--write", space, "--out", tmp_path / "lr.png", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    low, high = map(float, re.search(r"low: (\S+), high: (\S+), log: true", result.output).groups())
    assert 1e-6 < low < high < 10
    written = load_space(space).params["learning_rate"]
    assert (written.low, written.high, written.log) == (low, high, True)
    assert "# one per layer" not in (SPACES / "digits.yaml").read_text() or "# one per layer" in space.read_text()
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("digits").experiment_id], "tags.run_kind = 'lr-find'")
    losses = client.get_metric_history(run.info.run_id, "lr_find_loss")
    rates = client.get_metric_history(run.info.run_id, "lr_find_learning_rate")
    assert len(losses) == len(rates) == run.data.metrics["steps"] and len(losses) >= 20
    assert all(b.value > a.value for a, b in zip(rates, rates[1:], strict=False))  # exponentially growing, per batch
    assert run.data.metrics["suggested_low"] == low and run.data.metrics["suggested_high"] == high
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["lr.png"]
    assert run.info.status == "FINISHED" and run.data.params["optimizer"] == "adam"


def test_the_suggestion_brackets_the_fall_of_a_known_curve():
    rates = list(np.geomspace(1e-6, 10, 200))
    # the loss falls fastest at 1e-3 and is lowest at 3e-2, then diverges
    loss = [2.0 - math.tanh(math.log10(r / 1e-3)) + (max(0.0, math.log10(r / 3e-2)) * 6) ** 2 for r in rates]
    test = _suggest({}, rates, loss, loss, False)
    assert test.lr_steepest == pytest.approx(1e-3, rel=0.1)
    assert test.lr_min_loss == pytest.approx(3e-2, rel=0.35)
    assert test.low <= test.lr_steepest / 10 and test.high >= test.lr_min_loss / 3 and test.high < test.lr_min_loss
    assert (test.low, test.high) == (5e-5, 0.01)  # 9.6e-5 and 1e-2, rounded outwards


@pytest.mark.parametrize("x,down,up", [(3.4e-4, 2e-4, 5e-4), (1e-3, 1e-3, 1e-3), (7e-2, 5e-2, 0.1)])
def test_bounds_are_rounded_outwards_to_1_2_5_values(x, down, up):
    assert (_round_down(x), _round_up(x)) == (down, up)


def test_writing_a_range_that_excludes_a_start_configuration_changes_nothing(tmp_path):
    space = write_space(tmp_path / "fashion.yaml", (SPACES / "fashion.yaml").read_text())
    before = space.read_text()
    with pytest.raises(Exception, match=r"start\[0\]\.learning_rate: must lie inside the space"):
        write_range(space, 1e-5, 1e-4)  # fashion.yaml starts from 2e-3
    assert space.read_text() == before and list(tmp_path.iterdir()) == [space]


def test_an_optimizer_outside_the_space_is_one_error_line(tmp_path):
    result = sweeper("lr-find", "digits", "--optimizer", "lion", cwd=tmp_path)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == ("Error: --optimizer lion is not among the space's optimizers "
                                                      "(adam, sgd, rmsprop, adagrad)")
