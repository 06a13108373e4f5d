"""Does a sweep on the range `sweeper lr-find` suggests beat the space's default range at equal budget?

Run: .venv/bin/python bench/lr_range.py [--seeds 0 1 2] [--trials 10] [--max-epochs 10]
Once: `sweeper lr-find fashion --write` on a copy of search_spaces/fashion.yaml. Per seed, in fresh
stores: `sweeper search fashion` on the default space and on the copy, same budget and seed. Prints each
arm's final test accuracy and best validation accuracy per seed and as a mean.
"""

import json
import shutil
import tempfile
from pathlib import Path

from arms import budget_arguments, final_metrics, print_means, sweeper

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    args = budget_arguments(__doc__)
    with tempfile.TemporaryDirectory() as probe:
        space = Path(probe) / "suggested.yaml"
        shutil.copy(ROOT / "search_spaces" / "fashion.yaml", space)
        sweeper(Path(probe), "lr-find", "fashion", "--write", space)
        print((Path(probe) / "log.txt").read_text().strip().splitlines()[-4:], flush=True)
        rows = []
        for seed in args.seeds:
            row = {"seed": seed}
            for arm, extra in (("default range", []), ("lr-find range", ["--space", space])):
                with tempfile.TemporaryDirectory() as workdir:
                    sweeper(Path(workdir), "search", "fashion", "--trials", args.trials, "--max-epochs",
                            args.max_epochs, "--seed", seed, *extra)
                    row[arm] = final_metrics(Path(workdir), "fashion")
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{len(args.seeds)} seeds, {args.trials} trials, {args.max_epochs} epochs max; mean test accuracy "
          f"(final model / best trial's own model / best val):")
    print_means(rows, ("default range", "lr-find range"))


if __name__ == "__main__":
    main()
