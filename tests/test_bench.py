"""The benchmark suite's scripts still run: one tiny quality round (sweeper, the hand recipe and the search
anchors, each on a small share of the data and
for a few seconds: one trial each)."""

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_quality_bench_runs_sweeper_and_the_anchors(tmp_path):
    tools = ["sweeper", "recipe", "optuna", "keras-tuner-hyperband"]
    done = subprocess.run([sys.executable, str(BENCH / "quality.py"), "--seeds", "0", "--timeout", "4",
                           "--max-epochs", "1", "--subset", "2000", "--targets", "0.3", "--tools", *tools],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {m.group(1): m for m in re.finditer(r"^seed 0 (\S+) +test (0\.\d{4}) .*?\((\d+) trials.*$", done.stdout, re.M)}
    assert set(rows) == set(tools)
    for row in rows.values():
        assert 0.3 < float(row.group(2)) < 1 and int(row.group(3)) >= 1, done.stdout
    assert "not training" in rows["sweeper"].group(0) and "val never" not in done.stdout
    assert re.search(r"^sweeper +test mean 0\.\d{4} ", done.stdout, re.M)  # the summary
