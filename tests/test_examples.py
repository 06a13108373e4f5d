"""The example notebooks run top to bottom on a real Jupyter kernel (ipykernel, driven by nbclient), at the tiny
budget their parameter cell takes from SWEEPER_EXAMPLES_TINY; any cell's error fails the test."""

import json

import pytest

from .conftest import ROOT

EXAMPLES = ROOT / "examples"


def run_notebook(name, workdir, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("SWEEPER_EXAMPLES_TINY", "1")
    monkeypatch.setenv("SWEEPER_OFFLINE", "1")
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=600,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return notebook


def outputs(notebook, mime):
    return [output["data"][mime] for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.get("outputs", []) if mime in output.get("data", {})]


@pytest.mark.parametrize("name", ["quickstart.ipynb", "own_dataframe.ipynb", "own_model.ipynb"])
def test_the_examples_are_stored_without_outputs(name):
    notebook = json.loads((EXAMPLES / name).read_text())
    assert all(not cell.get("outputs") and not cell.get("execution_count") for cell in notebook["cells"]
               if cell["cell_type"] == "code")


def test_the_quick_start_notebook_shows_progress_and_the_summary(tmp_path, monkeypatch):
    notebook = run_notebook("quickstart.ipynb", tmp_path, monkeypatch)
    html = outputs(notebook, "text/html")
    progress = [page for page in html if "Study fashion</b>: trials" in page]
    assert progress and "2/2" in progress[0]  # the live block, updated in place to the end of the budget
    assert any("Best trials by val_accuracy" in page for page in html)  # the summary, as a table
    assert outputs(notebook, "application/vnd.plotly.v1+json")  # the history, a plotly figure inline
    texts = "\n".join(outputs(notebook, "text/plain"))
    assert "test_accuracy" in texts and "best-fashion" in texts
    all_text = "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                         for output in cell.get("outputs", []))
    assert "tensorflow" not in all_text.lower() and "Traceback" not in all_text  # no start-up noise in the cells
    assert (tmp_path / "best-fashion" / "model.keras").is_file()


def test_the_dataframe_notebook_sweeps_a_regression(tmp_path, monkeypatch):
    notebook = run_notebook("own_dataframe.ipynb", tmp_path, monkeypatch)
    assert "test_rmse" in "\n".join(outputs(notebook, "text/plain"))
    card = json.loads((tmp_path / "best-houses" / "model.json").read_text())
    assert card["task"] == "regression" and "city_north" in card["preprocessing"]["features"]


def test_the_own_model_notebook_sweeps_and_exports_a_cnn(tmp_path, monkeypatch):
    run_notebook("own_model.ipynb", tmp_path, monkeypatch)
    card = json.loads((tmp_path / "best-cnn" / "model.json").read_text())
    assert "Conv2D" in card["architecture"] or "Conv" in json.dumps(card)
