"""Words shared by every message and every entry point: counts with the right plural, durations as people
write them, a final model against its baseline."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sweeper.domain.errors import UsageError

if TYPE_CHECKING:
    from sweeper.domain.events import SweepResult

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def plural(n: int, noun: str, many: str | None = None) -> str:
    """`1 trial`, `3 trials`, `1 epoch`; `many` for an irregular plural."""
    return f"{n} {noun if n == 1 else many or noun + 's'}"


def parse_duration(value: str | float) -> float:
    """`90`, `90s`, `30m`, `2h`, `1h30m` (or a number of seconds) -> seconds; UsageError for anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        total = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if not str(value).strip() or not match or not any(match.groups()):
            raise UsageError(f"'{value}' is not a duration; expected e.g. 90s, 30m, 2h or 1h30m")
        hours, minutes, seconds = (float(g or 0) for g in match.groups())
        total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise UsageError(f"'{value}' must be longer than zero")
    return total


def baseline_line(name: str | None, baseline: dict, final: dict) -> str:
    """The baseline's test figure beside the final model's, and which is ahead (a sweep that does not beat a
    linear model on a small table is worth knowing about)."""
    metric = "test_accuracy" if "test_accuracy" in baseline else "test_rmse"
    line = f"Baseline ({name or 'a linear model'}, the same split): {metric} {baseline[metric]:.4f}"
    if metric not in final:
        return line
    ahead = final[metric] - baseline[metric] if metric == "test_accuracy" else baseline[metric] - final[metric]
    verdict = f"the final model is {abs(ahead):.4f} {'ahead' if ahead > 0 else 'behind'}" if ahead else "a tie"
    return f"{line}; {verdict}."


def final_model_line(result: SweepResult) -> str | None:
    """Which model is final when an average or test-time shifts were asked for, and what each bought (None: a single
    model was asked for, or no trial had a model to average with, and no shifts)."""
    lines = [_average_line(result), shifts_line(result)]
    return " ".join(line for line in lines if line) or None


def shifts_line(result: SweepResult) -> str | None:
    """Whether the final model has test-time shifts, judged on the validation split, and what they bought."""
    if result.shifts_validation is None:
        return None
    without, shifted = result.shifts_validation
    judged = (f"{result.objective_metric} of trial {result.best.number}'s model on the validation split {without:.4f} "
              f"without them, {shifted:.4f} with")
    if not result.unshifted_test_metrics:
        return f"Test-time shifts: not used ({judged})."
    metric = "test_accuracy" if "test_accuracy" in result.test_metrics else "test_rmse"
    line = (f"Test-time shifts: used ({judged}); on the test split: {metric} "
            f"{result.test_metrics[metric]:.4f}")
    return _against(line, metric, result.test_metrics, result.unshifted_test_metrics, "the model without them")


def _average_line(result: SweepResult) -> str | None:
    averaged = result.unshifted_test_metrics or result.test_metrics  # the average, before any test-time shifts
    if result.refit_seeds:
        return retrainings_line(result.best.number, result.refit_seeds, averaged, result.single_test_metrics)
    if result.ensemble_skipped:
        return (f"Final model: trial {result.best.number} retrained alone (a retraining longer than its trial is "
                f"averaged only with retrainings of its configuration from other seeds, not with other trials, and "
                f"the time left held no other retraining).")
    if not result.ensemble_candidates:
        return None
    return ensemble_line(result.ensemble_of, result.ensemble_candidates, bool(result.refit_epochs),
                         averaged, result.single_test_metrics or averaged, result.objective_metric)


def ensemble_line(members: list[int], candidates: list[int], refit: bool, ensemble: dict, single: dict,
                  objective: str) -> str:
    """Which model is final when an average was asked for (`members`: the trials averaged, best first; empty when
    averaging the best with the `candidates` did not improve the validation objective), and what it bought."""
    others = _and([str(n) for n in candidates])
    if not members:
        return f"Final model: the best trial alone (averaging it with trial{'s' * (len(candidates) > 1)} {others} " \
               f"did not improve {objective} on the validation split)."
    metric = "test_accuracy" if "test_accuracy" in ensemble else "test_rmse"
    line = (f"Final model: the average of trials {_and([str(n) for n in members])} "
            f"({f'trial {members[0]} retrained; ' if refit else ''}chosen on the validation split among {others}), "
            f"on the test split: {metric} {ensemble[metric]:.4f}")
    return _against(line, metric, ensemble, single, f"trial {members[0]}'s model alone")


def retrainings_line(trial: int, seeds: list[int], averaged: dict, first: dict) -> str:
    """What the final model is when it averages retrainings of the best configuration from `seeds`, and what the
    average bought over the `first` retraining alone."""
    metric = "test_accuracy" if "test_accuracy" in averaged else "test_rmse"
    line = (f"Final model: the average of {len(seeds)} retrainings of trial {trial}'s configuration (seeds "
            f"{_and([str(s) for s in seeds])}), on the test split: {metric} {averaged[metric]:.4f}")
    return _against(line, metric, averaged, first, "the first retraining alone")


def _against(line: str, metric: str, averaged: dict, single: dict, alone: str) -> str:
    """`line` ended with what the average bought over the `single` model (`alone`: what that model is)."""
    if metric not in single:
        return line + "."
    gain = averaged[metric] - single[metric] if metric == "test_accuracy" else single[metric] - averaged[metric]
    return f"{line}, {abs(gain):.4f} {'ahead of' if gain >= 0 else 'behind'} {alone}."


def _and(items: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" and {items[-1]}"
