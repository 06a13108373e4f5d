"""The model card: what a model is, how it was found and how well it does, as MODEL_CARD.md with its figures.

Every figure comes from the run: the test split evaluated here, the trial's per-epoch metrics from MLflow.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from sweeper.domain.wording import baseline_line
from sweeper.ml.model import predictions

CARD_FILE, CARD_JSON = "MODEL_CARD.md", "model.json"
CONFUSION_PNG, CURVES_PNG = "confusion_matrix.png", "learning_curves.png"
_LIBRARIES = ("sweeper", "tensorflow-cpu", "tensorflow", "jax", "keras", "optuna", "keras-tuner", "mlflow", "numpy")


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def confusion_matrix(model, dataset) -> np.ndarray:
    """Rows: true class, columns: predicted class, counts on the test split."""
    predicted = predictions(model, dataset.inputs(dataset.x_test)).argmax(axis=1)
    n = len(dataset.class_names)
    return np.bincount(dataset.y_test.astype(int) * n + predicted, minlength=n * n).reshape(n, n)


def per_class_accuracy(matrix: np.ndarray) -> list[float]:
    totals = matrix.sum(axis=1)
    return [float(matrix[i, i] / totals[i]) if totals[i] else float("nan") for i in range(len(matrix))]


def plot_confusion(matrix: np.ndarray, class_names, path: Path) -> None:
    plt = pyplot()
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n, 0.8 + 0.55 * n), dpi=110)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > threshold else "black")
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_learning_curves(history: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """One panel for the losses, one for the other metrics; each `name: [(epoch, value), ...]`."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    losses = {k: v for k, v in history.items() if k.endswith("loss")}
    others = {k: v for k, v in history.items() if not k.endswith("loss")}
    panels = [p for p in (losses, others) if p]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5.2 * max(len(panels), 1), 3.6), dpi=110,
                             squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=False):  # one axis even without a panel
        for name, points in sorted(panel.items()):
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle("Learning curves of the best trial")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render(card: dict) -> str:
    """MODEL_CARD.md from the card's data (model.json)."""
    lines = [f"# Model card: {card['study']}", "",
             f"{card['model'].capitalize()}, found by a sweeper sweep of the `{card['dataset']}` dataset "
             f"({card['task']}).", "",
             "## Data", "",
             f"- Dataset: `{card['dataset']}`, input shape {tuple(card['input_shape'])}"
             + (f", {len(card['class_names'])} classes" if card.get("class_names") else ""),
             f"- Splits: {_splits(card['splits'])}",
             f"- Preprocessing: {_preprocessing(card['preprocessing'])}", "",
             "## Model", "",
             f"- Parameters: {card['parameter_count']:,}",
             f"- Layers: {card['architecture']}", "",
             "| hyperparameter | value |", "|---|---|",
             *[f"| {k} | {v} |" for k, v in card["hyperparameters"].items()], "",
             "## Metrics", "",
             "| metric | value |", "|---|---|",
             *[f"| {k} | {v:.4f} |" for k, v in {**card["validation_metrics"], **card["test_metrics"]}.items()], ""]
    if card.get("single_model_test_metrics"):
        single = ", ".join(f"{k} {v:.4f}" for k, v in card["single_model_test_metrics"].items())
        lines += [f"Trial {card['trial_number']}'s final model alone scored {single} on the same test split (measured "
                  f"by the sweep): the difference is what averaging bought.", ""]
    if card.get("unshifted_test_metrics"):
        unshifted = ", ".join(f"{k} {v:.4f}" for k, v in card["unshifted_test_metrics"].items())
        lines += [f"Without its test-time shifts it scored {unshifted} on the same test split (measured by the "
                  f"sweep): the difference is what the shifts bought.", ""]
    if card.get("baseline"):
        lines += [f"{baseline_line(card['baseline']['model'], card['baseline']['test_metrics'], card['test_metrics'])}"
                  f" (fitted on the same training data, scored on the same test split)", ""]
    if card.get("per_class_accuracy"):
        lines += ["### Per class (test split)", "",
                  f"![confusion matrix]({CONFUSION_PNG})", "",
                  "| class | accuracy | test examples |", "|---|---|---|",
                  *[f"| {name} | {acc:.4f} | {n} |" for name, (acc, n) in card["per_class_accuracy"].items()], ""]
    lines += ["## Training", "", f"![learning curves]({CURVES_PNG})", "",
              f"- Best trial: {card['trial_number']}, best epoch {card['best_epoch']}",
              f"- Sweep: {_search(card['search'])}", "",
              "## Files", "",
              "| format | file | max abs difference from the trained model |", "|---|---|---|",
              *[f"| {name} | `{f['file']}` | {f['max_abs_difference']:.1e} on {f['checked_on']} test inputs |"
                for name, f in card["formats"].items()], "",
              "## Provenance", "",
              f"- MLflow tracking URI: `{card['mlflow_tracking_uri']}`",
              f"- Trial run: `{card['mlflow_run_id']}`; model run: `{card['mlflow_model_run_id']}`; "
              f"search run: `{card['mlflow_search_run_id']}`",
              f"- Exported {card['exported_at']} with " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()),
              ""]
    return "\n".join(lines)


def _splits(splits: dict) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in splits.items())


def _preprocessing(prep: dict) -> str:
    if prep.get("kind") == "image":
        return f"pixel values times {prep['scale']:.6g} (images of shape {tuple(prep['shape'])})"
    if prep.get("kind") == "tabular":
        imputed = "; a missing value is replaced by that mean" if prep.get("impute") == "mean" else \
            "; every value must be present"
        return f"each feature standardised with the training split's mean and standard deviation{imputed}"
    return "none"


def _search(search: dict) -> str:
    keys = ("backend", "algorithm", "pruner", "trials", "max_epochs", "patience", "seed")
    return ", ".join(f"{k} {search[k]}" for k in keys if k in search)
