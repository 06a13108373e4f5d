"""Test-time shifts: the final model's outputs on the images shifted one pixel each way averaged in, as one Keras
model of Keras' own layers that saves, exports and predicts as any other; used only when the best trial's model does
not lose validation accuracy by them, and said so in the summary, the MLflow run and the card."""

import json
import warnings

import mlflow
import numpy as np
import pytest

import sweeper
from sweeper.ml.data import load_dataset
from sweeper.ml.formats import FORMATS

from .conftest import SPACES, write_space
from .conftest import sweeper as cli
from .test_ensemble import DIGITS


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None, "classification", None)


@pytest.fixture(scope="module")
def model(digits):
    """A small real model of digits' 8x8 images, trained one epoch."""
    import keras

    from sweeper.ml.model import build_model

    keras.utils.set_random_seed(0)
    built = build_model(DIGITS, digits)
    built.fit(digits.x_train, digits.y_train, epochs=1, verbose=0)
    return built


def _moved(images, rows, columns):
    """`images` moved `rows` down and `columns` right, zeros shifted in (written out apart from the layers)."""
    moved = np.zeros_like(images)
    height, width = images.shape[1:3]
    moved[:, max(rows, 0):height + min(rows, 0), max(columns, 0):width + min(columns, 0)] = \
        images[:, max(-rows, 0):height + min(-rows, 0), max(-columns, 0):width + min(-columns, 0)]
    return moved


def test_shifted_views_weigh_the_image_two_thirds_and_each_one_pixel_shift_a_twelfth(digits, model):
    from sweeper.ml.ensemble import with_shifted_views

    x = digits.x_test
    assert _moved(x, 1, 0)[:, 1:].tolist() == x[:, :-1].tolist()  # down: row r moves to row r + 1
    expected = (2 / 3 * model.predict(x, verbose=0)
                + sum(model.predict(_moved(x, r, c), verbose=0) for r, c in ((1, 0), (-1, 0), (0, 1), (0, -1))) / 12)
    shifted = with_shifted_views(model, digits)
    assert np.abs(shifted.predict(x, verbose=0) - expected).max() < 1e-6
    assert np.allclose(shifted.predict(x, verbose=0).sum(axis=1), 1, atol=1e-5)  # still class probabilities


@pytest.mark.parametrize("name", list(FORMATS))
def test_a_model_with_shifted_views_is_written_in_every_format_with_the_same_outputs(tmp_path, digits, model, name):
    from sweeper.ml.ensemble import with_shifted_views

    shifted = with_shifted_views(model, digits)
    expected = shifted.predict(digits.x_test, verbose=0)
    path = tmp_path / FORMATS[name].filename
    FORMATS[name].write(shifted, path)
    predicted = np.asarray(FORMATS[name].load(path)(digits.x_test)).reshape(expected.shape)  # its own runtime
    assert np.abs(predicted - expected).max() < 1e-4


def _blocks(n, seed):
    """8x8 byte images of a dark (class 0) or a bright (class 1) 4x4 block in the middle: a shift keeps the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 20, (n, 8, 8)).astype(np.uint8)
    x[:, 2:6, 2:6] = np.where(y == 1, 240, 60)[:, None, None]
    return x, y


def _search_run(workdir, study):
    """The metrics and tags of the study's sweep run."""
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name(study).experiment_id], "tags.run_kind = 'search'")
    return run.data.metrics, run.data.tags


def test_shifts_that_keep_the_validation_accuracy_go_into_the_final_model_and_its_card(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = {"objective": "val_accuracy", "params": {
        "n_layers": 1, "units": 16, "learning_rate": 0.01, "batch_size": 32, "optimizer": "adam"}}
    s = sweeper.search(_blocks(300, 0), validation=_blocks(100, 1), test=_blocks(100, 2), study="blocks",
                       space=space, trials=1, max_epochs=4, refit=False, test_time_shifts=True, progress=False)
    metrics, tags = _search_run(tmp_path, "blocks")
    assert metrics["shifts_validation_with"] >= metrics["shifts_validation_without"]
    assert tags["test_time_shifts"] == "on" and "unshifted_test_accuracy" in metrics
    with warnings.catch_warnings(record=True) as caught:  # the kept model loads without optimizer state to mismatch
        warnings.simplefilter("always")
        out = s.export(tmp_path / "model", formats=["keras", "onnx"])
    card = json.loads((out / "model.json").read_text())
    assert card["model"].endswith("with test-time shifts (its outputs on the images shifted one pixel down, up, "
                                  "right and left averaged in, a third of the output: five predictions per image)")
    assert card["test_metrics"]["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert card["unshifted_test_metrics"]["test_accuracy"] == pytest.approx(metrics["unshifted_test_accuracy"])
    assert card["formats"]["onnx"]["max_abs_difference"] < 1e-4
    assert card["architecture"].count("ZeroPadding2D") == 4  # one per shift
    assert "Without its test-time shifts it scored test_accuracy" in (out / "MODEL_CARD.md").read_text()
    assert [str(w.message) for w in caught if "Skipping variable loading" in str(w.message)] == []


def test_the_summary_says_whether_the_shifts_were_used_and_on_what_figures(tmp_path):
    result = cli("search", "digits", "--trials", 1, "--max-epochs", 2, "--pruner", "none", "--test-time-shifts",
                 cwd=tmp_path)
    assert result.exit_code == 0, result.output
    metrics, tags = _search_run(tmp_path, "digits")
    best = tags["best_trial_number"]
    without, shifted = metrics["shifts_validation_without"], metrics["shifts_validation_with"]
    judged = f"val_accuracy of trial {best}'s model on the validation split {without:.4f} without them, {shifted:.4f} with"
    summary = " ".join(result.output.split())
    if tags["test_time_shifts"] == "off":
        assert shifted < without
        assert f"Test-time shifts: not used ({judged})." in summary
    else:
        test, unshifted = metrics["test_accuracy"], metrics["unshifted_test_accuracy"]
        assert (f"Test-time shifts: used ({judged}); on the test split: test_accuracy {test:.4f}, "
                f"{abs(test - unshifted):.4f} {'ahead of' if test >= unshifted else 'behind'} the model without "
                f"them.") in summary


def test_shifts_asked_for_a_table_are_one_error_line(tmp_path):
    result = cli("search", "california", "--test-time-shifts", "--trials", 1, cwd=tmp_path)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: test-time shifts move images a pixel each way, but the examples of california are not images of 3 x 3 "
        "pixels or more; turn them off (--no-test-time-shifts, or test_time_shifts: false in the space)")
    assert not (tmp_path / "mlruns").exists()


def test_a_space_files_shifts_that_are_not_true_or_false_name_their_line(tmp_path):
    text = (SPACES / "digits.yaml").read_text() + "\ntest_time_shifts: yes please\n"
    path = write_space(tmp_path / "space.yaml", text)
    line = path.read_text().splitlines().index("test_time_shifts: yes please") + 1
    result = cli("validate", path)
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: {path}:{line}: test_time_shifts: must be true or false, but got "
                                     f"'yes please' (text)")


def test_the_bundled_fashion_space_asks_for_shifts_and_keeps_them_when_dumped(tmp_path):
    from sweeper.domain.space import dump_space, load_space

    space = load_space(SPACES / "fashion.yaml")
    dumped = write_space(tmp_path / "dumped.yaml", dump_space(space))
    assert space.test_time_shifts and load_space(dumped).test_time_shifts
    assert not load_space(SPACES / "digits.yaml").test_time_shifts


def test_shifts_asked_for_images_too_small_to_shift_are_refused_before_any_work(tmp_path, monkeypatch):
    from sweeper.domain.errors import UsageError

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (120, 2, 2)).astype(np.uint8), np.arange(120) % 2  # 2x2 images
    with pytest.raises(UsageError, match="not images of 3 x 3 pixels or more"):
        sweeper.search((x, y), study="tiny", trials=1, test_time_shifts=True, progress=False)
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
