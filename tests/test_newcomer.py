"""What a newcomer meets first: their own CSV (gaps, one class), --subset, the model the summary names,
the hints it prints, and the screen (issue 17). Real data, real training, real stores."""

import csv
import json

import numpy as np
import pytest

from sweeper.domain.errors import DatasetError
from sweeper.ml.data import load_csv, load_dataset

from .conftest import sweeper


def _table(path, rows, header=("a", "b", "y")):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([list(header)] + rows)
    return path


def _gappy_rows(n=120):
    """Column b carries the label; some of its cells are empty."""
    rows = [[i % 5, (i % 2) * 10 + (i % 3), i % 2] for i in range(n)]
    for i in (3, 8, 15, 40, 77):
        rows[i][1] = ""
    return rows


# -- 1. missing values: refused, or imputed the same way at training and prediction -----------------------

def test_missing_values_are_refused_naming_the_column_and_lines(tmp_path):
    path = _table(tmp_path / "gaps.csv", _gappy_rows())
    with pytest.raises(DatasetError) as caught:
        load_csv(str(path), "y")
    assert str(caught.value) == (f"csv:{path}: column b has 5 missing values (lines 5, 10, 17, ...); "
                                 f"fill or drop them, or pass --impute mean")


def test_a_search_on_a_table_with_gaps_stops_before_any_work(tmp_path):
    path = _table(tmp_path / "gaps.csv", _gappy_rows())
    result = sweeper("search", f"csv:{path}", "--target", "y", "--trials", 1, cwd=tmp_path)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: csv:{path}: column b has 5 missing values (lines 5, 10, 17, ...); fill or drop them, "
        f"or pass --impute mean")
    assert not (tmp_path / "mlruns").exists()


def test_impute_mean_uses_training_means_and_predict_does_the_same(tmp_path):
    path = _table(tmp_path / "gaps.csv", _gappy_rows())
    data = load_csv(str(path), "y", impute="mean")
    prep = data.preprocessing
    assert prep["impute"] == "mean" and np.isfinite(prep["mean"]).all()
    assert np.isfinite(data.x_train).all() and np.isfinite(data.x_test).all()
    assert data.x_train[:, 1].std() > 0.5  # the gaps did not zero the column that carries the label

    result = sweeper("search", f"csv:{path}", "--target", "y", "--impute", "mean", "--study", "gaps",
                     "--trials", 1, "--max-epochs", 2, "--no-refit", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert sweeper("export", "gaps", "--trial-model", "--out", tmp_path / "best", cwd=tmp_path).exit_code == 0
    card = json.loads((tmp_path / "best" / "model.json").read_text())  # strict JSON: no NaN
    assert card["preprocessing"]["impute"] == "mean"
    (tmp_path / "new.csv").write_text("a,b\n1,\n2,11\n")
    rows = json.loads(sweeper("predict", tmp_path / "best", tmp_path / "new.csv", "--json").output)
    assert [r["input"] for r in rows] == ["new.csv:2", "new.csv:3"]


def test_predict_refuses_gaps_for_a_model_trained_without_impute(tmp_path):
    rows = [[i % 5, (i % 2) * 10 + (i % 3), i % 2] for i in range(120)]
    path = _table(tmp_path / "full.csv", rows)
    result = sweeper("search", f"csv:{path}", "--target", "y", "--study", "full", "--trials", 1,
                     "--max-epochs", 1, "--no-refit", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert sweeper("export", "full", "--trial-model", "--out", tmp_path / "best", cwd=tmp_path).exit_code == 0
    (tmp_path / "new.csv").write_text("a,b\n1,3\n2,\n")
    refused = sweeper("predict", tmp_path / "best", tmp_path / "new.csv")
    assert refused.exit_code == 1
    assert refused.output.strip() == (f"Error: {tmp_path}/new.csv:3: every feature must be a number; line 3 has "
                                      f"an empty value (the model was trained without --impute)")


def test_impute_applies_to_csv_tables_only(tmp_path):
    result = sweeper("search", "fashion", "--impute", "mean", cwd=tmp_path)
    assert result.exit_code == 2 and "Error: --impute applies to csv:PATH datasets only" in result.output


# -- 2. a classification target needs two classes with rows for every split -------------------------------

def test_a_single_class_target_is_refused(tmp_path):
    path = _table(tmp_path / "one.csv", [[i, i * 2, "cat"] for i in range(40)])
    result = sweeper("search", f"csv:{path}", "--target", "y", "--task", "classification", cwd=tmp_path)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: csv:{path}: the target 'y' has a single class ('cat'); classification needs at least two "
        f"(or pass --task regression for a number)")
    assert not (tmp_path / "mlruns").exists()


def test_a_class_too_small_for_the_splits_is_refused(tmp_path):
    path = _table(tmp_path / "rare.csv", [[i, i * 2, "ab"[i % 2]] for i in range(40)] + [[1, 2, "c"]] * 2)
    with pytest.raises(DatasetError, match=r"class 'c' \(2 rows\) of 'y' has fewer than 3 rows; each class needs "
                                           r"one for each of the training, validation and test splits"):
        load_csv(str(path), "y")


# -- 3. --subset: checked, said, and honoured by the refit ---------------------------------------------------

def test_subset_larger_than_the_training_split_is_refused(tmp_path):
    result = sweeper("search", "digits", "--subset", 5000, "--trials", 1, cwd=tmp_path)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: subset 5,000 is more than the 1,149 training examples of digits; expected at most 1,149")


def test_subset_missing_classes_is_refused():
    with pytest.raises(DatasetError, match=r"subset 3: the first 3 training examples of fashion hold only 3 of "
                                           r"its 10 classes; expected a subset with every class"):
        load_dataset("fashion").subset(3)


def test_refit_on_a_subset_takes_the_same_share_of_the_validation_split():
    full = load_dataset("fashion")
    part = full.subset(5500)  # a tenth of the training split
    x, y = part.refit_arrays()
    assert len(x) == len(y) == 5500 + 500
    assert len(full.refit_arrays()[0]) == 55000 + 5000
    assert part.describe_splits() == "5,500 of 55,000 training examples, 5,000 validation, 10,000 test"


def test_the_banner_says_which_examples_are_used(fashion_study):
    _, result = fashion_study  # a sweep of 300 of the training images
    assert "Data: 300 of 55,000 training examples, 5,000 validation, 10,000 test" in result.output


# -- 4, 5. the model exported is the one the summary reports, saved as its users expect ---------------------

def test_trial_model_exports_the_best_trials_own_model(fashion_study, store, tmp_path):
    workdir, _ = fashion_study
    out = tmp_path / "trial"
    result = sweeper("export", "fashion", "--trial-model", "--out", out, cwd=workdir)
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model.json").read_text())
    parent = store.search_runs([store.get_experiment_by_name("fashion").experiment_id], "tags.run_kind = 'search'")[0]
    assert card["mlflow_model_run_id"] == parent.data.tags["best_run_id"] and card["model"].endswith("own model")
    assert card["test_metrics"]["test_accuracy"] == pytest.approx(parent.data.metrics["trial_test_accuracy"], abs=1e-4)
    both = sweeper("export", "fashion", "--trial-model", "--retrain", "--out", tmp_path / "x", cwd=workdir)
    assert both.exit_code == 2 and "Error: --trial-model and --retrain choose different models; pass one of them" \
        in both.output


def test_saved_models_carry_keras_default_execution_options(fashion_study, tmp_path):
    import keras

    workdir, _ = fashion_study
    assert sweeper("export", "fashion", "--out", tmp_path / "best", cwd=workdir).exit_code == 0
    model = keras.saving.load_model(tmp_path / "best" / "model.keras")
    assert model.get_compile_config()["steps_per_execution"] == 1


# -- the baseline a sweep must beat (issue 19, item 7) -----------------------------------------------------

def test_a_small_table_sweep_shows_its_baseline_in_the_summary_trials_and_the_card(tmp_path):
    """A linearly separable table: logistic regression is near perfect, a 2-epoch sweep is not; the user is told."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 2))
    path = _table(tmp_path / "linear.csv", [[f"{a:.4f}", f"{b:.4f}", int(a + b > 0)] for a, b in x])
    result = sweeper("search", f"csv:{path}", "--target", "y", "--study", "lin", "--trials", 1, "--max-epochs", 1,
                     cwd=tmp_path)
    assert result.exit_code == 0, result.output
    summary = " ".join(result.output.split())
    assert "Baseline (logistic regression, the same split): test_accuracy " in summary
    baseline = float(summary.split("Baseline (logistic regression, the same split): test_accuracy ")[1][:6])
    assert baseline >= 0.9
    assert ("the final model is" in summary and ("ahead." in summary or "behind." in summary)) or "a tie" in summary
    listed = " ".join(sweeper("trials", "lin", cwd=tmp_path).output.split())
    assert f"Baseline (logistic regression, the same split): test_accuracy {baseline:.4f}" in listed
    assert "Final model (trial 0's configuration): test_accuracy" in listed
    assert sweeper("export", "lin", "--out", tmp_path / "best", cwd=tmp_path).exit_code == 0
    card = json.loads((tmp_path / "best" / "model.json").read_text())
    assert card["baseline"] == {"model": "logistic regression", "test_metrics": {"test_accuracy": baseline}}
    assert f"Baseline (logistic regression, the same split): test_accuracy {baseline:.4f}" in \
        (tmp_path / "best" / "MODEL_CARD.md").read_text()


def test_the_baseline_of_a_large_image_set_is_the_majority_class_and_of_a_table_a_linear_regression():
    from sweeper.ml.baseline import fit_baseline
    from sweeper.ml.data import from_arrays

    rng = np.random.default_rng(1)
    images = from_arrays(rng.integers(0, 255, (1000, 28, 28), dtype=np.uint8), np.arange(1000) % 3)
    assert fit_baseline(images).name == "the majority class"  # 500k values and more: no linear fit in a second
    x = rng.normal(size=(300, 3))
    table = from_arrays(x, x @ [1.0, -2.0, 0.5] + 3.0, task="regression")
    fitted = fit_baseline(table)
    assert fitted.name == "linear regression" and fitted.test_metrics["test_rmse"] < 1e-6
