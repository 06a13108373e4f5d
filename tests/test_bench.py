"""The benchmark suite's scripts still run: one tiny quality round (sweeper and both hand-written anchors)."""

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_quality_bench_runs_sweeper_and_both_anchors(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH / "quality.py"), "--seeds", "0", "--trials", "1", "--max-epochs",
                           "1", "--target", "0.5"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {m.group(1): m for m in re.finditer(r"^seed 0 (\S+) +test (0\.\d{4}) .*?\((\d+) trials.*$", done.stdout, re.M)}
    assert set(rows) == {"sweeper", "keras-tuner", "optuna"}
    for row in rows.values():
        assert 0.5 < float(row.group(2)) < 1 and row.group(3) == "1", done.stdout
    assert "not training" in rows["sweeper"].group(0) and "val never" not in done.stdout
    assert re.search(r"^sweeper +0\.\d{4} ", done.stdout, re.M)  # the summary table
