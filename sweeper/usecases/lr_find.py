"""The learning-rate range test: one short training with the learning rate growing exponentially per batch,
the loss recorded against it, and from the curve a log-range for `learning_rate` (Smith, "Cyclical
Learning Rates for Training Neural Networks", 2017; the fastai learning-rate finder).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.domain.errors import SweepError, UsageError
from sweeper.domain.space import SearchSpace, load_space
from sweeper.ml.data import Dataset

#: Stop once the smoothed loss exceeds this multiple of its minimum: the learning rate has diverged.
DIVERGED = 4.0
#: Exponential smoothing of the per-batch loss, with bias correction as in fastai (whose 0.98 lags by about
#: a decade of learning rate over 300 batches; 0.9 by a quarter of one).
SMOOTHING = 0.9


class ReferenceSuggester:
    """One configuration to probe: the space's first `start` configuration where it names a value, else
    the middle of each range (geometric for log ranges) and the first choice."""

    def __init__(self, given: dict):
        self.given = given

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        if name in self.given:
            return self.given[name]
        middle = math.sqrt(low * high) if log else (low + high) / 2
        return int(low + round((middle - low) / step) * step)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return self.given.get(name, math.sqrt(low * high) if log else (low + high) / 2)

    def suggest_categorical(self, name: str, choices: list) -> Any:
        return self.given.get(name, choices[0])


@dataclass
class RangeTest:
    params: dict  # the configuration trained (its learning_rate is what the test varies)
    learning_rates: list[float]
    losses: list[float]
    smoothed: list[float]
    lr_steepest: float  # where the smoothed loss falls fastest
    lr_min_loss: float  # where the smoothed loss is lowest
    low: float  # the suggested log-range for `learning_rate`
    high: float
    diverged: bool  # stopped early because the loss blew up

    def metrics(self) -> dict:
        return {"lr_steepest": self.lr_steepest, "lr_min_loss": self.lr_min_loss, "suggested_low": self.low,
                "suggested_high": self.high, "steps": len(self.losses)}


def probe_configuration(space: SearchSpace, optimizer: str | None = None) -> dict:
    given = dict(space.start[0]) if space.start else {}
    if optimizer:
        choices = getattr(space.params["optimizer"], "choices", (getattr(space.params["optimizer"], "value", None),))
        if optimizer not in choices:
            raise UsageError(f"--optimizer {optimizer} is not among the space's optimizers "
                             f"({', '.join(map(str, choices))})")
        given["optimizer"] = optimizer
    return space.sample(ReferenceSuggester(given))


def range_test(params: dict, dataset: Dataset, *, start_lr: float = 1e-6, end_lr: float = 10.0, steps: int = 300,
               seed: int = 0, builder: str | None = None) -> RangeTest:
    """Train `params` for `steps` batches, the learning rate going from start_lr to end_lr exponentially."""
    import keras

    if not 0 < start_lr < end_lr:
        raise UsageError(f"0 < --start-lr < --end-lr must hold, but got ({start_lr}, {end_lr})")
    from sweeper.ml.model import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(params, dataset, builder=builder)
    rng = np.random.default_rng(seed)
    batch = int(params["batch_size"])
    rates = np.geomspace(start_lr, end_lr, steps)
    losses, smoothed, average, diverged = [], [], 0.0, False
    for step, rate in enumerate(rates):
        model.optimizer.learning_rate.assign(float(rate))
        index = rng.integers(0, len(dataset.x_train), batch)
        scores = model.train_on_batch(dataset.inputs(dataset.x_train[index]), dataset.y_train[index], return_dict=True)
        loss = float(scores["loss"])
        if not math.isfinite(loss):
            diverged = True
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        losses.append(loss)
        smoothed.append(average / (1 - SMOOTHING ** (step + 1)))
        if step > 10 and smoothed[-1] > DIVERGED * min(smoothed):
            diverged = True
            break
    return _suggest(params, list(map(float, rates[:len(losses)])), losses, smoothed, diverged)


def _suggest(params, rates, losses, smoothed, diverged) -> RangeTest:
    if len(smoothed) < 20:
        raise SweepError(f"the loss diverged after {len(smoothed)} batches, before the learning rate reached "
                         f"{rates[-1] if rates else 0:.1e}: lower --start-lr")
    lowest = int(np.argmin(smoothed))
    steepest = _steepest_fall(np.asarray(smoothed), np.log(rates), before=lowest)
    lr_min, lr_steep = rates[lowest], rates[steepest]
    # From a decade below the steepest fall to a third of the rate at the lowest loss (past it the loss
    # climbs within a few batches); rounded outwards to 1-2-5 values a person would write.
    high = _round_up(lr_min / 3)
    low = max(_round_down(min(lr_steep / 10, high / 10)), _round_up(rates[0]))
    return RangeTest(params, rates, losses, smoothed, lr_steep, lr_min, low, high, diverged)


def _steepest_fall(smoothed: np.ndarray, log_rates: np.ndarray, before: int) -> int:
    """Index of the most negative slope before the lowest loss, measured across a window of about a twentieth
    of the test (the loss of single batches is too noisy to differentiate)."""
    half = max(2, len(smoothed) // 40)
    centres = range(half, max(before - half, half + 1))
    slopes = [(smoothed[min(i + half, len(smoothed) - 1)] - smoothed[i - half])
              / (log_rates[min(i + half, len(smoothed) - 1)] - log_rates[i - half]) for i in centres]
    return centres[int(np.argmin(slopes))]


def _round_down(x: float) -> float:
    exponent = math.floor(math.log10(x))
    mantissa = max(m for m in (1, 2, 5) if m * 10 ** exponent <= x * (1 + 1e-9))
    return float(f"{mantissa}e{exponent}")


def _round_up(x: float) -> float:
    exponent = math.floor(math.log10(x))
    for mantissa in (1, 2, 5, 10):
        if mantissa * 10 ** exponent >= x * (1 - 1e-9):
            return float(f"{mantissa}e{exponent}")
    raise AssertionError  # unreachable: 10 * 10**exponent > x


def plot(test: RangeTest, path: Path, title: str) -> None:
    from sweeper.present.card import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(test.learning_rates, test.losses, color="#9ecae1", linewidth=0.8, label="loss per batch")
    ax.plot(test.learning_rates, test.smoothed, color="#08519c", linewidth=1.8, label="smoothed")
    ax.axvspan(test.low, test.high, color="#31a354", alpha=0.15, label=f"suggested {test.low:g} .. {test.high:g}")
    ax.axvline(test.lr_steepest, color="#31a354", linestyle="--", linewidth=1, label=f"steepest {test.lr_steepest:.1e}")
    ax.axvline(test.lr_min_loss, color="#de2d26", linestyle="--", linewidth=1, label=f"lowest {test.lr_min_loss:.1e}")
    ax.set_xscale("log")
    ax.set_ylim(min(test.losses) * 0.9, min(max(test.losses), DIVERGED * min(test.smoothed)) * 1.1)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


_BOUND = re.compile(r"(?P<key>\b(?:low|high)\s*:\s*)(?P<value>[^,}\s#]+)")


def write_range(space_file: Path, low: float, high: float) -> None:
    """Set `learning_rate`'s low and high in a space file, keeping its comments and layout; the result must
    load (a `start` configuration outside the new range is refused), else nothing is written."""
    lines = space_file.read_text(encoding="utf-8").splitlines(keepends=True)
    found = _learning_rate_lines(lines)
    values = {"low": _yaml_number(low), "high": _yaml_number(high)}
    done = set()
    for number in found:
        def replace(match):
            key = match["key"].split(":")[0].strip()
            done.add(key)
            return match["key"] + values[key]
        lines[number] = _BOUND.sub(replace, lines[number])
    if done != {"low", "high"}:
        raise UsageError(f"{space_file}: params.learning_rate has no low/high range to update; expected e.g. "
                         f"learning_rate: {{type: float, low: 1e-4, high: 1e-1, log: true}}")
    updated = space_file.with_name(space_file.name + ".lr-find.tmp")
    updated.write_text("".join(lines), encoding="utf-8")
    try:
        load_space(updated)
    except Exception:
        updated.unlink()
        raise
    updated.replace(space_file)


def _learning_rate_lines(lines: list[str]) -> list[int]:
    """Line indexes of `learning_rate:` under `params:` and of its block's own lines."""
    for index, line in enumerate(lines):
        if re.match(r"^\s+learning_rate\s*:", line):
            indent = len(line) - len(line.lstrip())
            block = [index]
            for following in range(index + 1, len(lines)):
                text = lines[following]
                if text.strip() and len(text) - len(text.lstrip()) <= indent:
                    break
                block.append(following)
            return block
    return []


def _yaml_number(x: float) -> str:
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


@dataclass
class LRFind:
    test: RangeTest
    plot_path: Path
    run_id: str
    written: Path | None


def lr_find(dataset_name: str, space: SearchSpace, *, study: str, out: Path, write: Path | None = None,
            optimizer: str | None = None, steps: int = 300, start_lr: float = 1e-6, end_lr: float = 10.0,
            subset: int | None = None, seed: int = 0, tracking_uri: str | None = None) -> LRFind:
    """Run the range test on the space's reference configuration, plot it to `out`, record it in MLflow
    (a run of kind lr-find in the study's experiment) and, with `write`, narrow that space file's range."""
    from sweeper.ml.data import load_dataset
    from sweeper.store import SweepRecorder

    params = probe_configuration(space, optimizer)
    if dataset_name.startswith("csv:"):
        raise UsageError("lr-find runs on the named datasets; for csv:PATH, use --space with its search")
    dataset = load_dataset(dataset_name).subset(subset)
    tracker = SweepRecorder.open(study, tracking_uri)
    test = range_test(params, dataset, start_lr=start_lr, end_lr=end_lr, steps=steps, seed=seed,
                      builder=space.model)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(test, out, f"Learning-rate range test: {dataset_name}, {params['optimizer']}, batch {params['batch_size']}")
    if write is not None:
        write_range(write, test.low, test.high)
    run_id = tracker.log_probe(
        "lr-find", params={**params, "start_lr": start_lr, "end_lr": end_lr, "steps_asked": steps,
                           "dataset": dataset_name, "space_file": space.source, "written_to": write or ""},
        metrics=test.metrics(), series={"lr_find_loss": test.losses, "lr_find_smoothed": test.smoothed,
                                        "lr_find_learning_rate": test.learning_rates}, artifact=out)
    return LRFind(test, out, run_id, write)
