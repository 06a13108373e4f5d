"""Coarse to fine against one long search: `search` N trials + `refine` N trials vs `search` 2N trials.

Run: .venv/bin/python bench/refine.py [--seeds 0 1 2] [--trials 10] [--max-epochs 10]
Per seed, in fresh stores: (a) `sweeper search fashion --trials N` then `sweeper refine fashion --trials N`;
(b) `sweeper search fashion --trials 2N`. Same seed, epoch cap and patience. The search+refine arm ends
with the stage whose best validation accuracy is higher, as a user would. Prints the test accuracy of
each arm's final model (the best trial retrained on train+val, as the sweep registers it) and of the best
trial's own model, per seed and as a mean; an accuracy benchmark, so timings beside it do not matter.
"""

import json
import tempfile
from pathlib import Path

from arms import budget_arguments, final_metrics, print_means, sweeper


def main() -> None:
    args = budget_arguments(__doc__)
    common = ["--max-epochs", args.max_epochs]
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            a, b = Path(a), Path(b)
            sweeper(a, "search", "fashion", "--trials", args.trials, *common, "--seed", seed)
            stage_one = final_metrics(a, "fashion")
            sweeper(a, "refine", "fashion", "--trials", args.trials, "--seed", seed)
            refined = final_metrics(a, "fashion-refined")
            sweeper(b, "search", "fashion", "--trials", 2 * args.trials, *common, "--seed", seed)
            long = final_metrics(b, "fashion")
        # What a user ends with: the stage with the better validation score (refine's summary names it).
        better = refined if refined["best_val"] >= stage_one["best_val"] else stage_one
        row = {"seed": seed, "search": stage_one, "refine stage": refined, "search+refine": better,
               "long search": long}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{len(args.seeds)} seeds, {args.trials}+{args.trials} vs {2 * args.trials} trials, "
          f"{args.max_epochs} epochs max; mean test accuracy (final model / best trial's own model / best val):")
    print_means(rows, ("search", "refine stage", "search+refine", "long search"))


if __name__ == "__main__":
    main()
