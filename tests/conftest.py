"""Shared fixtures: real data slices, a real MLflow store and Optuna journal in temporary folders."""

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from sweeper.cli import main

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"
#: a few hundred real Fashion-MNIST images, 2 epochs: the real stack, in seconds
SMALL = ["--subset", "300", "--max-epochs", "2", "--patience", "1"]


def sweeper(*args, cwd=None):
    """Run the CLI in-process (CliRunner); the embedded store lands in `cwd`."""
    old = os.getcwd()
    os.chdir(cwd or old)
    try:
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.chdir(old)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("SWEEPER_OFFLINE", "1")


@pytest.fixture(scope="session")
def fashion_study(tmp_path_factory):
    """One real sweep shared by the read-only tests: 3 trials on 300 Fashion-MNIST images."""
    workdir = tmp_path_factory.mktemp("fashion-study")
    result = sweeper("search", "fashion", "--trials", 3, *SMALL, "--pruner", "none", cwd=workdir)
    assert result.exit_code == 0, result.output
    return workdir, result


@pytest.fixture
def store(fashion_study):
    """An MlflowClient on the shared study's embedded store."""
    import mlflow

    workdir, _ = fashion_study
    return mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")


def write_space(path, text):
    path.write_text(text)
    return path
