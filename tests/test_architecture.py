"""The architecture's rules (pyproject.toml's import-linter contracts, README "Layout") hold for the package, and
each rule is shown to fail when broken on purpose in a copy of it (lazy imports inside functions included)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")
RULES = {
    "layers": "Layers: imports point down only",
    "cycle": "No import cycle between the modules of a package",
    "mlflow": "Only the store imports MLflow",
    "engines": "Engines import neither the store nor Keras training",
    "present": "Presentation imports no engine",
    "cli": "The command line and the Python API import no engine or store directly",
}


def lint(root: Path) -> dict[str, str]:
    """Each contract's verdict (KEPT or BROKEN) for the package under `root`."""
    done = subprocess.run([LINT_IMPORTS, "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    verdicts = {}
    for rule, name in RULES.items():
        found = re.search(re.escape(name) + r".*?\b(KEPT|BROKEN)\b", done.stdout, re.S)
        assert found, done.stdout + done.stderr
        verdicts[rule] = found.group(1)
    return verdicts


def test_the_package_keeps_every_rule():
    assert lint(ROOT) == dict.fromkeys(RULES, "KEPT")


#: rule -> (module to edit, the import that breaks the rule), each inside a function: lazy imports count too
BREAKS = {
    "layers": ("sweeper/domain/wording.py", "from sweeper.usecases import plan"),
    "cycle": ("sweeper/store/files.py", "from sweeper.store import store"),
    "mlflow": ("sweeper/usecases/export.py", "import mlflow"),
    "engines": ("sweeper/engines/base.py", "from sweeper.ml import train"),
    "present": ("sweeper/present/figures.py", "from sweeper.engines import optuna_engine"),
    "cli": ("sweeper/cli/options.py", "from sweeper.store import Store"),
}


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("architecture")
    shutil.copytree(ROOT / "sweeper", root / "sweeper", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize("rule", list(BREAKS))
def test_a_rule_broken_on_purpose_is_caught(copy, rule):
    module, statement = BREAKS[rule]
    path = copy / module
    original = path.read_text()
    path.write_text(original + f"\n\ndef _broken_on_purpose():\n    {statement}  # noqa\n")
    try:
        verdicts = lint(copy)
    finally:
        path.write_text(original)
    assert verdicts[rule] == "BROKEN", verdicts
