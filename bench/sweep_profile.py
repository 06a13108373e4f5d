"""One real sweep, profiled: its worker processes' peak memory, its wall time by phase, and the gap before each trial.

Run: .venv/bin/python bench/sweep_profile.py [--recycle-after N] [--recycle-growth MIB] [-- SEARCH ARGS]
Default search: `sweeper search fashion --timeout 15m --seed 0` (what `make search` runs, seed fixed), in a fresh
folder under /tmp with a copy of search_spaces/. `--recycle-after N` and `--recycle-growth MIB` set
SWEEPER_RECYCLE_AFTER and SWEEPER_RECYCLE_GROWTH_MIB for the sweep. While it runs, the resident memory of every
worker process (multiprocessing's `spawn_main` children) is read from /proc every 0.5 s. Afterwards it prints each
worker's peak, `bench/overhead.py`'s split of the wall time, and for each trial the seconds between the previous
trial's run ending and its own starting, marking the trials that began in a new worker process (a replacement),
and the resident memory of its worker as it began (the last reading before its run started). Nothing is
compared here: run it twice in one hour (e.g. two values of --recycle-growth) and compare the two printouts.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from overhead import breakdown, print_breakdown  # noqa: E402

DEFAULT_SEARCH = ["search", "fashion", "--timeout", "15m", "--seed", "0"]


def worker_resident_mib() -> dict[int, float]:
    """Resident MiB of every worker process now running, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"spawn_main" not in (entry / "cmdline").read_bytes():
                continue
            pages = int((entry / "statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        found[int(entry.name)] = pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    return found


class PeakSampler:
    """Each worker process's peak resident memory, sampled until `stop()`."""

    def __init__(self, every: float = 0.5):
        self.peaks: dict[int, float] = {}
        self.peaked_at: dict[int, float] = {}  # when (time.time()) each worker's peak was read
        self.readings: list[tuple[float, int, float]] = []  # (time.time(), pid, MiB)
        self.every, self.done = every, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while not self.done.wait(self.every):
            now = time.time()
            for pid, mib in worker_resident_mib().items():
                if mib > self.peaks.get(pid, 0.0):
                    self.peaks[pid], self.peaked_at[pid] = mib, now
                self.readings.append((now, pid, mib))

    def at(self, pid: int, moment: float) -> float | None:
        """`pid`'s resident MiB at its last reading before `moment` (time.time())."""
        before = [mib for when, who, mib in self.readings if who == pid and when <= moment]
        return before[-1] if before else None

    def stop(self) -> dict[int, float]:
        self.done.set()
        self.thread.join()
        return self.peaks


def trial_gaps(workdir: Path, study: str) -> list[tuple[int, str, bool, float, int, float, float]]:
    """Each trial's number, state, whether it began in another process than the trial before, the seconds
    since that trial's run ended (0 for the first), its worker's pid, when it started and when it ended
    (time.time())."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(study).experiment_id], "tags.run_kind = 'trial'",
                              max_results=10_000)
    rows, before = [], None
    for run in sorted(runs, key=lambda r: r.info.start_time):
        worker = run.data.tags.get("worker", "")
        gap = (run.info.start_time - before.info.end_time) / 1000 if before else 0.0
        new = before is not None and worker != before.data.tags.get("worker", "")
        pid = int(worker.split(":")[1]) if worker.count(":") == 2 else 0
        rows.append((int(run.data.tags["trial_number"]), run.data.tags.get("state", "?"), new, gap, pid,
                     run.info.start_time / 1000, (run.info.end_time or run.info.start_time) / 1000))
        before = run
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recycle-after", type=int, help="SWEEPER_RECYCLE_AFTER for the sweep")
    parser.add_argument("--recycle-growth", type=float, help="SWEEPER_RECYCLE_GROWTH_MIB for the sweep")
    parser.add_argument("search", nargs="*", help="the sweeper arguments (after --); default: " +
                        " ".join(DEFAULT_SEARCH))
    args = parser.parse_args()
    search = args.search or DEFAULT_SEARCH
    study = next((search[i + 1] for i, a in enumerate(search[:-1]) if a == "--study"), search[1])
    workdir = Path(tempfile.mkdtemp(prefix="sweep-profile-"))
    shutil.copytree(ROOT / "search_spaces", workdir / "search_spaces")
    env = dict(os.environ)
    settings = {"SWEEPER_RECYCLE_AFTER": args.recycle_after, "SWEEPER_RECYCLE_GROWTH_MIB": args.recycle_growth}
    settings = {name: str(value) for name, value in settings.items() if value is not None}
    env.update(settings)
    sampler = PeakSampler()
    started = time.time()
    done = subprocess.run([str(Path(sys.executable).parent / "sweeper"), *search], cwd=workdir, env=env,
                          capture_output=True, text=True)
    ended = time.time()
    peaks = sampler.stop()
    if done.returncode != 0:
        sys.exit(f"the sweep failed ({done.returncode}):\n{done.stderr[-3000:]}")
    print(f"sweeper {' '.join(search)} in {workdir}" +
          "".join(f" {name}={value}" for name, value in settings.items()))
    rows = trial_gaps(workdir, study)
    print("worker peaks: " + ", ".join(f"{mib:.0f} MiB ({phase_at(rows, sampler.peaked_at[pid])})"
                                       for pid, mib in sorted(peaks.items())) + " (by pid)")
    print_breakdown(breakdown(workdir, started, ended, study))
    print("gap before each trial: " + ", ".join(
        f"{number} {state}{' (new worker)' if new else ''} {gap:.2f} s" for number, state, new, gap, *_ in rows))
    print("worker's resident memory as each trial began: " + ", ".join(
        f"{number}{' (new worker)' if new else ''} {_mib(sampler.at(pid, start))}"
        for number, _, new, _, pid, start, _ in rows))
    print(next((line for line in done.stdout.splitlines() if "test_accuracy" in line), "").strip())


def phase_at(rows: list, moment: float) -> str:
    """What the sweep was doing at `moment` (time.time()): which trial was running (or had just ended), the
    start-up, or the final model (after the last trial's run)."""
    started = [row for row in rows if row[5] <= moment]
    if not started:
        return "start-up"
    if moment > max(row[6] for row in rows):
        return "final model"
    return f"trial {started[-1][0]}"


def _mib(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f} MiB"


if __name__ == "__main__":
    main()
