"""Memory of one worker over a 50-trial sweep: resident set after trial 5 and trial 50, and its peak.

Run: .venv/bin/python bench/memory.py [--trials 50] [--dataset fashion] [--subset 2000]
Prints the resident memory of the training process (the worker, which sweeper replaces every
RECYCLE_AFTER trials) after each 5th trial, and the growth from trial 5 to the last, measured in
this one run. The whole dataset is loaded (all of Fashion-MNIST by default); trials train on its
first --subset images for 2 epochs, so that 50 trials take minutes.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeper.domain.events import SweepListener
from sweeper.domain.space import bundled_space_path, load_space
from sweeper.usecases.plan import make_plan
from sweeper.usecases.sweep import run_sweep


def resident_mib(pid="self") -> float:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker_mib() -> float:
    """The resident memory of the process that trains: a worker child when there is one, else this one."""
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    sizes = []
    for pid in children:
        try:
            sizes.append(resident_mib(pid))  # the largest child is the worker (beside a small resource tracker)
        except OSError:
            pass
    return max(sizes) if sizes else resident_mib()


class MemoryLog(SweepListener):
    def __init__(self):
        self.after = {}

    def trial_ended(self, number, state, value, note=""):
        self.after[len(self.after) + 1] = worker_mib()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--dataset", default="fashion")
    parser.add_argument("--subset", type=int, default=2000)
    args = parser.parse_args()
    space = load_space(bundled_space_path(args.dataset)).with_budget(trials=args.trials, max_epochs=2, patience=1)
    log = MemoryLog()
    with tempfile.TemporaryDirectory() as workdir:
        os.chdir(workdir)
        run_sweep(make_plan(args.dataset, space=space, pruner="none", subset=args.subset), log)
    for trial in range(5, args.trials + 1, 5):
        print(f"after trial {trial:>3}: {log.after[trial]:7.1f} MiB resident")
    first, last = log.after[5], log.after[args.trials]
    peak = max(log.after.values())
    print(f"growth from trial 5 to {args.trials}: {last - first:+.1f} MiB ({(last / first - 1) * 100:+.1f}%); "
          f"peak of the training process {peak:.1f} MiB")


if __name__ == "__main__":
    main()
