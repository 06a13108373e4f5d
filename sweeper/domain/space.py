"""Search spaces: one YAML file -> one frozen, validated `SearchSpace`.

`SearchSpace.sample(suggester)` is the only code that knows the space's structure: the number of
layers first, then one `units_i` per layer, then the optimizer and the parameters that exist only
for it. Every engine adapts to the `Suggester` protocol (an `optuna.Trial` already fits it).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from sweeper.domain import yaml_lines
from sweeper.domain.choices import KERAS_BACKENDS
from sweeper.domain.errors import SearchSpaceError, UsageError
from sweeper.domain.yaml_lines import LineDict

OPTIMIZERS = ("adam", "sgd", "rmsprop", "adagrad", "adamw", "nadam")
ACTIVATIONS = ("relu", "elu", "selu", "tanh", "sigmoid", "leaky_relu", "gelu", "swish")
INITIALIZERS = (
    "he_normal", "he_uniform", "glorot_uniform", "glorot_normal", "lecun_normal", "lecun_uniform",
)
#: objective metric -> the only direction that makes sense for it
METRICS = {"val_accuracy": "maximize", "val_loss": "minimize", "val_mae": "minimize", "val_rmse": "minimize"}
#: a second objective: what a model costs (both minimised), traded against the first in a Pareto front
COSTS = {"param_count": "minimize", "latency_ms": "minimize"}
MAX_GRID_POINTS = 100_000
#: how the learning rate moves over a trial's epochs: dropped on a plateau of the objective, cosine-decayed
#: to zero at the epoch cap, or kept
LR_SCHEDULES = ("plateau", "cosine", "constant")


class Suggester(Protocol):
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


# -- parameter kinds -------------------------------------------------------------------------------

@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def suggest(self, suggester: Suggester, name: str) -> int:
        return suggester.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list:
        return list(range(self.low, self.high + 1, self.step))

    def contains(self, value: Any) -> bool:
        return self.low <= value <= self.high and (value - self.low) % self.step == 0


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def suggest(self, suggester: Suggester, name: str) -> float:
        return suggester.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list | None:
        if self.step is None:
            return None
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]

    def contains(self, value: Any) -> bool:
        on_step = self.step is None or math.isclose((value - self.low) / self.step,
                                                    round((value - self.low) / self.step), abs_tol=1e-9)
        return self.low <= value <= self.high and on_step


@dataclass(frozen=True)
class Choice:
    choices: tuple

    def suggest(self, suggester: Suggester, name: str) -> Any:
        return suggester.suggest_categorical(name, list(self.choices))

    def grid(self) -> list:
        return list(self.choices)

    def contains(self, value: Any) -> bool:
        return value in self.choices


@dataclass(frozen=True)
class Fixed:
    value: Any

    def suggest(self, suggester: Suggester, name: str) -> Any:
        return self.value

    def grid(self) -> list:
        return []

    def contains(self, value: Any) -> bool:
        return value == self.value


ParamSpec = IntRange | FloatRange | Choice | Fixed


# -- what each parameter may hold ------------------------------------------------------------------

_REQUIRED = object()


@dataclass(frozen=True)
class _Rule:
    value_type: type
    check: Callable[[Any], bool]
    expected: str
    default: Any = _REQUIRED


def _one_of(names):
    return lambda v: v in names, "one of " + ", ".join(names)


_RULES = {
    "n_layers": _Rule(int, lambda v: 0 <= v <= 64, "an integer from 0 to 64 (0: a linear model)"),
    "units": _Rule(int, lambda v: v >= 1, "an integer >= 1"),
    "learning_rate": _Rule(float, lambda v: 0 < v < 10, "a number > 0 and < 10"),
    "batch_size": _Rule(int, lambda v: v >= 1, "an integer >= 1", 32),
    "optimizer": _Rule(str, *_one_of(OPTIMIZERS), "adam"),
    "momentum": _Rule(float, lambda v: 0 <= v < 1, "a number >= 0 and < 1", 0.0),
    "nesterov": _Rule(bool, lambda v: True, "true or false", False),
    "dropout": _Rule(float, lambda v: 0 <= v < 1, "a number >= 0 and < 1", 0.0),
    "activation": _Rule(str, *_one_of(ACTIVATIONS), "relu"),
    "kernel_initializer": _Rule(str, *_one_of(INITIALIZERS), "glorot_uniform"),
    "l2": _Rule(float, lambda v: v >= 0, "a number >= 0", 0.0),
    "batch_norm": _Rule(bool, lambda v: True, "true or false", False),
    "weight_decay": _Rule(float, lambda v: 0 <= v < 1, "a number >= 0 and < 1", 0.0),
    "label_smoothing": _Rule(float, lambda v: 0 <= v < 1, "a number >= 0 and < 1", 0.0),
    "lr_schedule": _Rule(str, *_one_of(LR_SCHEDULES), "plateau"),
    "ema": _Rule(float, lambda v: 0 <= v < 1, "a number >= 0 and < 1 (0: no weight averaging)", 0.0),
    "standardize": _Rule(bool, lambda v: True, "true or false", False),
}
_TOP_KEYS = ("description", "objective", "trials", "max_epochs", "patience", "ensemble", "test_time_shifts",
             "keras_backend", "model", "params", "start")
#: the most trials a final model may average (each member costs its predict time again)
MAX_ENSEMBLE = 10
#: any parameter of a model builder's own (a `model:` space): a number, a text or a flag
_ANY = _Rule(object, lambda v: isinstance(v, (bool, int, float, str)), "a number, a text or true/false")
#: what the MLP needs and a model builder may do without
_MLP_ONLY = ("n_layers", "units")
_BUILDER = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_KIND_KEYS = {"int": ("type", "low", "high", "step", "log"),
              "float": ("type", "low", "high", "step", "log"),
              "categorical": ("type", "choices")}


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str

    def better(self, a: float, b: float | None) -> bool:
        """Whether value `a` beats `b` (None: nothing to beat)."""
        if b is None or math.isnan(b):
            return True
        return a > b if self.direction == "maximize" else a < b


@dataclass(frozen=True)
class SearchSpace:
    params: Mapping[str, ParamSpec]
    objective: Objective
    trials: int = 20
    max_epochs: int = 20
    patience: int = 3
    #: the final model averages the best this many trials (1: the best alone)
    ensemble: int = 1
    description: str = ""
    source: str | None = None
    #: configurations to try first (engine parameter names, e.g. units_0), before the sampler's own
    start: tuple[Mapping[str, Any], ...] = ()
    #: a second objective, the model's cost (a multi-objective study); None: one objective
    cost: Objective | None = None
    #: the model builder, `package.module:function` (None: sweeper's MLP); its own parameters are sampled too
    model: str | None = None
    #: what Keras trains on unless the user chose (`--keras-backend`, $KERAS_BACKEND); None: sweeper's default
    keras_backend: str | None = None
    #: images: the final model may average in its outputs on the images shifted one pixel each way, when that does
    #: not lower the best trial's validation objective (`sweeper.ml.ensemble.with_shifted_views`)
    test_time_shifts: bool = False

    @property
    def objectives(self) -> tuple[Objective, ...]:
        return (self.objective, self.cost) if self.cost else (self.objective,)

    @property
    def retrainings(self) -> int:
        """How many retrainings of the best configuration its final model may average: `ensemble` when a trial may
        run a cosine schedule (a best trial still improving as its cosine ended is retrained longer, then averaged
        with retrainings of itself from other seeds), else 1 (the other members are trials' own models)."""
        schedule = self.params.get("lr_schedule")
        return self.ensemble if schedule is not None and schedule.contains("cosine") else 1

    def sample(self, suggester: Suggester) -> dict:
        """Draw one configuration; only the parameters this configuration uses are drawn."""
        p = self.params
        drawn = {}
        if "n_layers" in p:  # a model builder's space may leave the MLP's layers out
            n_layers = drawn["n_layers"] = p["n_layers"].suggest(suggester, "n_layers")
            for i in range(self.max_layers):
                deeper = [n for n in _values(p["n_layers"]) if n > i]
                drawn[f"units_{i}"] = _suggest_if(suggester, i < n_layers, p["units"], f"units_{i}",
                                                  "n_layers", p["n_layers"], deeper)
        for name in ("learning_rate", "batch_size", "optimizer"):
            drawn[name] = p[name].suggest(suggester, name)
        for name in ("momentum", "nesterov"):
            drawn[name] = _suggest_if(suggester, drawn["optimizer"] == "sgd", p[name], name,
                                      "optimizer", p["optimizer"], ["sgd"])
        for name in ("dropout", "activation", "kernel_initializer", "l2", "batch_norm", "weight_decay",
                     "label_smoothing", "lr_schedule", "ema", "standardize"):
            drawn[name] = p[name].suggest(suggester, name)
        for name in self.builder_params:
            drawn[name] = p[name].suggest(suggester, name)
        return {name: value for name, value in drawn.items() if value is not _INACTIVE}

    @property
    def builder_params(self) -> list[str]:
        """The parameters of the model builder's own (not sweeper's MLP's), in the file's order."""
        return [name for name in self.params if name not in _RULES]

    def tuned(self) -> list[str]:
        """The parameters a search chooses (not fixed), in the file's order."""
        return [name for name, spec in self.params.items() if not isinstance(spec, Fixed)]

    @property
    def max_layers(self) -> int:
        spec = self.params.get("n_layers")
        return max(_values(spec)) if spec is not None else 0

    def grid(self) -> dict[str, list]:
        """Every value of every tunable parameter, for a grid sampler; floats need a `step`."""
        grid = {}
        for name, spec in self.params.items():
            if isinstance(spec, Fixed):
                continue
            values = spec.grid()
            if values is None:
                raise UsageError(f"the grid algorithm needs a `step` on float parameter '{name}' "
                                 f"(or a categorical list of values), but it has none")
            names = [f"units_{i}" for i in range(self.max_layers)] if name == "units" else [name]
            grid.update({n: values for n in names})
        points = math.prod(len(v) for v in grid.values())
        if points > MAX_GRID_POINTS:
            raise UsageError(f"the grid algorithm needs at most {MAX_GRID_POINTS:,} points, but this "
                             f"space has {points:,}; use steps or short choice lists")
        return grid

    def __reduce__(self):  # a MappingProxyType does not pickle; `--jobs` workers receive the space
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return _space_from_fields, (fields | {"params": dict(self.params)},)

    def signature(self) -> dict[str, str]:
        """Each parameter's spec in words, e.g. {"units": "int 32..512 log"}: what a resume must not change."""
        return {name: _describe(spec) for name, spec in self.params.items()}

    def with_budget(self, *, trials: int | None = None, max_epochs: int | None = None,
                    patience: int | None = None, ensemble: int | None = None,
                    test_time_shifts: bool | None = None) -> SearchSpace:
        changes = {k: v for k, v in dict(trials=trials, max_epochs=max_epochs, patience=patience, ensemble=ensemble,
                                         test_time_shifts=test_time_shifts).items() if v is not None}
        return dataclasses.replace(self, **changes)


def signature_changes(before: dict, now: dict) -> list[str]:
    """What differs between two `SearchSpace.signature()`s, in words, e.g. ["units: was int 16..256, now ..."]."""
    was = [(name, before.get(name, _default_words(name)), now.get(name, _default_words(name)))
           for name in sorted(set(before) | set(now))]
    return [f"{name}: was {old}, now {new}" for name, old, new in was if old != new]


def _default_words(name: str) -> str:
    """How a signature words a parameter left out: its fixed default (a study recorded before the parameter
    existed trained with that default), else absent."""
    rule = _RULES.get(name)
    return "absent" if rule is None or rule.default is _REQUIRED else _describe(Fixed(rule.default))


_INACTIVE = object()


def _space_from_fields(fields: dict) -> SearchSpace:
    return SearchSpace(**(fields | {"params": MappingProxyType(fields["params"])}))


def _describe(spec: ParamSpec) -> str:
    if isinstance(spec, (IntRange, FloatRange)):
        kind = "int" if isinstance(spec, IntRange) else "float"
        step = "" if spec.step is None or (kind == "int" and spec.step == 1) else f" step {spec.step}"
        return f"{kind} {spec.low}..{spec.high}{step}{' log' if spec.log else ''}"
    if isinstance(spec, Choice):
        return f"one of {list(spec.choices)}"
    return f"fixed {spec.value!r}"


def _suggest_if(suggester, active: bool, spec: ParamSpec, name: str, parent: str, parent_spec: ParamSpec,
                parent_values: list):
    """Draw `name` only when `active`, i.e. when the parameter `parent` takes one of `parent_values`.

    A suggester with a `conditional_scope` (Keras Tuner's) is shown every conditional parameter, active
    or not, inside that scope: that is how it learns the whole space and which values are inactive.
    """
    scope = getattr(suggester, "conditional_scope", None)
    if scope is None or isinstance(spec, Fixed) or isinstance(parent_spec, Fixed):
        return spec.suggest(suggester, name) if active else _INACTIVE
    with scope(parent, parent_values):
        value = spec.suggest(suggester, name)
    return value if active else _INACTIVE


def _values(spec: ParamSpec) -> list:
    if isinstance(spec, IntRange):
        return list(range(spec.low, spec.high + 1, spec.step))
    if isinstance(spec, Choice):
        return list(spec.choices)
    return [spec.value]


# -- writing ---------------------------------------------------------------------------------------

def dump_space(space: SearchSpace, comments: dict[str, list[str]] | None = None) -> str:
    """The space as a search-space file that `load_space` reads back to the same space (without `start`),
    one line per parameter; `comments` puts `# ...` lines above a top-level key (trials, params)."""
    comments = comments or {}

    def note(key):
        return [f"# {line}" for line in comments.get(key, [])]

    objective = [f"  - {{metric: {o.metric}, direction: {o.direction}}}" for o in space.objectives] if space.cost \
        else [f"  metric: {space.objective.metric}", f"  direction: {space.objective.direction}"]
    model = [f"model: {space.model}", ""] if space.model else []
    backend = [f"keras_backend: {space.keras_backend}", ""] if space.keras_backend else []
    lines = ["description: >", f"  {space.description}", "", "objective:", *objective, "", *model, *backend,
             *note("trials"), f"trials: {space.trials}", f"max_epochs: {space.max_epochs}",
             f"patience: {space.patience}", *([f"ensemble: {space.ensemble}"] if space.ensemble > 1 else []),
             *(["test_time_shifts: true"] if space.test_time_shifts else []), ""]
    lines += note("params") + ["params:"]
    lines += [f"  {name}: {_dump_spec(spec)}" for name, spec in space.params.items()]
    return "\n".join(lines) + "\n"


def _dump_spec(spec: ParamSpec) -> str:
    if isinstance(spec, (IntRange, FloatRange)):
        kind = "int" if isinstance(spec, IntRange) else "float"
        fields = [f"type: {kind}", f"low: {_dump_value(spec.low)}", f"high: {_dump_value(spec.high)}"]
        if spec.step is not None and not (kind == "int" and spec.step == 1):
            fields.append(f"step: {_dump_value(spec.step)}")
        if spec.log:
            fields.append("log: true")
        return "{" + ", ".join(fields) + "}"
    if isinstance(spec, Choice):
        return "{type: categorical, choices: [" + ", ".join(map(_dump_value, spec.choices)) + "]}"
    return _dump_value(spec.value)


def _dump_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text if ("." in text or "e" in text) else text + ".0"
    return str(value)


# -- loading ---------------------------------------------------------------------------------------

def bundled_space_path(dataset: str) -> Path:
    """The bundled space file for a dataset name (`csv:PATH` uses `csv.yaml`)."""
    name = "csv" if dataset.startswith("csv:") else dataset
    return Path(str(resources.files("sweeper.search_spaces") / f"{name}.yaml"))


def load_space(path: str | Path, *, model: str | None = None) -> SearchSpace:
    """Read and validate one search-space file; any problem raises `SearchSpaceError`. `model`: the model builder
    the caller gives, whose own parameters the file may declare (as its own `model:` key allows)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SearchSpaceError("no such file; expected a search-space YAML file", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SearchSpaceError(f"cannot read the file: {exc}", path=path) from None
    return parse_space(yaml_lines.load(text, path=str(path)), path=str(path), model=model)


def parse_space(doc: Any, path: str | None = None, *, model: str | None = None) -> SearchSpace:
    """A SearchSpace from a parsed YAML document (or `yaml_lines.from_mapping` of a dict). `model`: the model
    builder the caller gives (as the file's own `model:` key does), whose parameters the space may declare."""
    return _Reader(path, model).space(doc)


class _Reader:
    """Turns the parsed YAML into a SearchSpace, raising with file, line and key. Each independent part (a
    top-level key, a parameter) is read even when another failed, so that one run names every error."""

    def __init__(self, path, model=None):
        self.path, self.model = path, model
        self.errors: list[SearchSpaceError] = []

    def fail(self, message, mapping=None, key=None, keypath=None):
        line = None
        if isinstance(mapping, LineDict):
            line = mapping.key_lines.get(key, mapping.line)
        raise SearchSpaceError(message, path=self.path, line=line, key=keypath)

    def collect(self, read, *args, **kwargs):
        """`read(*args)`, keeping its error (and returning None) so that reading goes on."""
        try:
            return read(*args, **kwargs)
        except SearchSpaceError as exc:
            self.errors.append(exc)
            return None

    def space(self, doc) -> SearchSpace:
        if not isinstance(doc, LineDict):
            self.fail(f"the file must be a YAML mapping with a `params` key, but got {_show_type(doc)}")
        self.known_keys(doc, _TOP_KEYS, "", keep_going=True)
        self.require(doc, ("params", "objective"), "", keep_going=True)
        budget = {k: self.collect(self.count, doc, k, minimum=0 if k == "patience" else 1)
                  for k in ("trials", "max_epochs", "patience", "ensemble") if k in doc}
        if (budget.get("ensemble") or 1) > MAX_ENSEMBLE:
            self.collect(self.fail, f"must be at most {MAX_ENSEMBLE} trials, but got {_show(budget['ensemble'])}", doc,
                         "ensemble", "ensemble")
        description = doc.get("description", "")
        if not isinstance(description, str):
            self.collect(self.fail, f"must be text, but got {_show(description)}", doc, "description", "description")
        if "model" in doc:
            self.model = self.collect(self.builder, doc) or self.model
        keras_backend = self.collect(self.keras_backend, doc) if "keras_backend" in doc else None
        shifts = self.collect(self.flag, doc, "test_time_shifts") if "test_time_shifts" in doc else None
        params = self.params(doc) if "params" in doc else None
        objectives = self.collect(self.objectives, doc) if "objective" in doc else None
        start = self.collect(self.start, doc.get("start", []), doc, params) if params is not None else ()
        if self.errors:
            raise SearchSpaceError.of(self.errors)
        objective, cost = objectives
        if cost and (budget.get("ensemble") or 1) > 1:
            self.fail("averages the best trials of one objective, but this space has two (its final model is one "
                      "trial of the Pareto front)", doc, "ensemble", "ensemble")
        return SearchSpace(params=MappingProxyType(params), objective=objective, cost=cost,
                           description=description.strip(), source=self.path, start=start, model=self.model,
                           keras_backend=keras_backend, **budget,
                           **({"test_time_shifts": shifts} if shifts is not None else {}))

    def flag(self, doc, key) -> bool:
        if not isinstance(doc[key], bool):
            self.fail(f"must be true or false, but got {_show(doc[key])}", doc, key, key)
        return doc[key]

    def keras_backend(self, doc) -> str:
        value = doc["keras_backend"]
        if value not in KERAS_BACKENDS:
            self.fail(f"must be one of {', '.join(KERAS_BACKENDS)}, but got {_show(value)}", doc, "keras_backend",
                      "keras_backend")
        return value

    def builder(self, doc) -> str:
        """`model: package.module:function`, the builder of each trial's model (importable where trials run)."""
        value = doc["model"]
        if not isinstance(value, str) or not _BUILDER.fullmatch(value):
            self.fail(f"must name a model builder as package.module:function, but got {_show(value)}", doc, "model",
                      "model")
        return value

    def start(self, node, doc, params) -> tuple[dict, ...]:
        """`start:`, a list of configurations to try first; each value must lie inside the space."""
        if not isinstance(node, list):
            self.fail(f"must be a list of configurations, but got {_show(node)}", doc, "start", "start")
        return tuple(self.start_entry(entry, i, doc, params) for i, entry in enumerate(node))

    def start_entry(self, entry, index, doc, params) -> dict:
        keypath = f"start[{index}]"
        if not isinstance(entry, LineDict):
            self.fail(f"must be a mapping of parameter names to values, but got {_show(entry)}", doc, "start", keypath)
        self.known_keys(entry, tuple(params), keypath + ".")
        config = {}
        for name, value in entry.items():
            if name == "units":
                config.update(self.start_units(value, entry, keypath, params))
                continue
            value = self.value(value, _RULES.get(name, _ANY), entry, name, f"{keypath}.{name}")
            if not params[name].contains(value):
                self.fail(f"must lie inside the space ({_describe(params[name])}), but got {_show(value)}",
                          entry, name, f"{keypath}.{name}")
            config[name] = value
        if "units" in entry:
            layers = config.setdefault("n_layers", len(entry["units"]))
            if layers != len(entry["units"]) or not params["n_layers"].contains(layers):
                self.fail(f"must list one size per layer, for n_layers inside the space "
                          f"({_describe(params['n_layers'])}), but got {len(entry['units'])} sizes "
                          f"for n_layers={layers}", entry, "units", keypath + ".units")
        if config.get("optimizer", "sgd") != "sgd" and {"momentum", "nesterov"} & set(config):
            self.fail(f"momentum and nesterov apply to the sgd optimizer only, but got optimizer "
                      f"{config['optimizer']!r}", entry, "optimizer", keypath + ".optimizer")
        return {k: v for k, v in config.items() if not isinstance(params.get(k), Fixed)}

    def start_units(self, sizes, entry, keypath, params) -> dict:
        if not isinstance(sizes, list) or not sizes:
            self.fail(f"must be a list of layer sizes, e.g. [256, 128], but got {_show(sizes)}", entry, "units",
                      keypath + ".units")
        config = {}
        for i, size in enumerate(sizes):
            size = self.value(size, _RULES["units"], entry, "units", f"{keypath}.units[{i}]")
            if not params["units"].contains(size):
                self.fail(f"must lie inside the space ({_describe(params['units'])}), but got {_show(size)}",
                          entry, "units", f"{keypath}.units[{i}]")
            config[f"units_{i}"] = size
        return config

    def known_keys(self, mapping, allowed, prefix, keep_going=False):
        """Refuse keys not in `allowed` (`keep_going`: name each, and let the caller read on)."""
        report = self.collect if keep_going else (lambda fail, *args: fail(*args))
        for key in mapping:
            if key not in allowed:
                report(self.fail, f"unknown key; expected one of {', '.join(allowed)}", mapping, key,
                       prefix + str(key))

    def require(self, mapping, keys, prefix, keep_going=False):
        report = self.collect if keep_going else (lambda fail, *args: fail(*args))
        for key in keys:
            if key not in mapping:
                where = f" in `{prefix.rstrip('.')}`" if prefix else ""
                report(self.fail, f"missing required key{where}", mapping, None, prefix + key)

    def count(self, doc, key, minimum):
        value = doc[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(f"must be an integer >= {minimum}, but got {_show(value)}", doc, key, key)
        return value

    def objectives(self, doc) -> tuple[Objective, Objective | None]:
        """`objective:` one metric, or a list of two: a validation metric, then a model cost."""
        node = doc["objective"]
        if not isinstance(node, list):
            return self.objective(node, doc, "objective", "objective", METRICS), None
        if len(node) != 2:
            self.fail(f"a list of objectives must name two (a validation metric, then one of "
                      f"{', '.join(COSTS)}), but got {len(node)}", doc, "objective", "objective")
        return (self.objective(node[0], doc, "objective", "objective[0]", METRICS),
                self.objective(node[1], doc, "objective", "objective[1]", COSTS))

    def objective(self, node, parent, key, keypath, allowed) -> Objective:
        if isinstance(node, str):
            node = LineDict(metric=node)
            node.line, node.key_lines = parent.key_lines.get(key), {}
        if not isinstance(node, LineDict):
            self.fail(f"must be a mapping with `metric` and `direction`, but got {_show(node)}",
                      parent, key, keypath)
        self.known_keys(node, ("metric", "direction"), keypath + ".")
        self.require(node, ("metric",), keypath + ".")
        metric = node["metric"]
        if metric not in allowed:
            self.fail(f"must be one of {', '.join(allowed)}, but got {_show(metric)}", node, "metric",
                      keypath + ".metric")
        direction = node.get("direction", allowed[metric])
        if direction != allowed[metric]:
            self.fail(f"must be {allowed[metric]} for {metric}, but got {_show(direction)}", node,
                      "direction", keypath + ".direction")
        return Objective(metric, direction)

    def params(self, doc) -> dict | None:
        """Every parameter's spec (None when one of them has an error, each of which is kept)."""
        node = doc["params"]
        if not isinstance(node, LineDict):
            return self.collect(self.fail, f"must be a mapping of parameter names to specs, but got {_show(node)}",
                                doc, "params", "params")
        errors_before = len(self.errors)
        required = [n for n, r in _RULES.items() if r.default is _REQUIRED]
        if self.model:  # a model builder: any parameter of its own; the MLP's layers only if it uses them
            required = [n for n in required if n not in _MLP_ONLY]
        else:
            self.known_keys(node, tuple(_RULES), "params.", keep_going=True)
        self.require(node, required, "params.", keep_going=True)
        params = {name: self.collect(self.param, node, name, rule) if name in node else Fixed(rule.default)
                  for name, rule in _RULES.items() if name in node or name not in _MLP_ONLY or not self.model}
        if self.model and ("n_layers" in node) != ("units" in node):
            self.collect(self.fail, "n_layers and units go together (the MLP's layers), but only one is given",
                         node, "n_layers" if "n_layers" in node else "units", "params")
        for name in node:
            if name not in _RULES and self.model:
                params[name] = self.collect(self.param, node, name, _ANY)
        return params if len(self.errors) == errors_before else None

    def param(self, parent, name, rule) -> ParamSpec:
        keypath = f"params.{name}"
        spec = parent[name]
        if isinstance(spec, list):
            self.fail("a list is not a parameter spec; write {type: categorical, choices: [...]}",
                      parent, name, keypath)
        if not isinstance(spec, LineDict):
            return Fixed(self.value(spec, rule, parent, name, keypath))
        if "value" in spec:
            self.known_keys(spec, ("value",), keypath + ".")
            return Fixed(self.value(spec["value"], rule, spec, "value", keypath + ".value"))
        self.require(spec, ("type",), keypath + ".")
        kind = spec["type"]
        allowed = {int: ("int", "categorical"), float: ("float", "categorical"),
                   object: ("int", "float", "categorical")}.get(rule.value_type, ("categorical",))
        if kind not in allowed:
            self.fail(f"must be one of {', '.join(allowed)} for this parameter (or give `value:` to fix it), "
                      f"but got {_show(kind)}", spec, "type", keypath + ".type")
        self.known_keys(spec, _KIND_KEYS[kind], keypath + ".")
        if kind == "categorical":
            return self.choice(spec, rule, keypath)
        return self.range(spec, kind, rule, keypath)

    def choice(self, spec, rule, keypath) -> Choice:
        self.require(spec, ("choices",), keypath + ".")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            self.fail(f"must be a non-empty list of values, but got {_show(choices)}", spec, "choices",
                      keypath + ".choices")
        values = tuple(self.value(c, rule, spec, "choices", keypath + ".choices") for c in choices)
        if len(set(values)) != len(values):
            self.fail(f"each choice may appear once, but got {list(values)}", spec, "choices",
                      keypath + ".choices")
        return Choice(values)

    def range(self, spec, kind, rule, keypath) -> IntRange | FloatRange:
        self.require(spec, ("low", "high"), keypath + ".")
        number = int if kind == "int" else float
        low, high = (self.value(spec[k], rule, spec, k, f"{keypath}.{k}", number) for k in ("low", "high"))
        log = spec.get("log", False)
        if not isinstance(log, bool):
            self.fail(f"must be true or false, but got {_show(log)}", spec, "log", keypath + ".log")
        step = spec.get("step", 1 if kind == "int" else None)
        if step is not None:
            step = self.number(step, number, spec, "step", keypath + ".step")
            if step <= 0:
                self.fail(f"`step > 0` must hold, but got step={step}", spec, "step", keypath + ".step")
        if low > high:
            self.fail(f"`low <= high` must hold, but got (low={low}, high={high})", spec, "low", keypath)
        if log and low <= 0:
            self.fail(f"`low > 0` must hold for `log: true`, but got (low={low}, high={high})",
                      spec, "low", keypath + ".low")
        if "step" in spec and high > low and step > high - low:
            self.fail(f"`step <= high - low` must hold, but got (step={step}, low={low}, high={high})",
                      spec, "step", keypath + ".step")
        if log and "step" in spec and not (kind == "int" and step == 1):
            self.fail("`step` and `log: true` cannot be used together (except step 1 for int), "
                      f"but got (step={step}, log=true)", spec, "step", keypath + ".step")
        return IntRange(low, high, step, log) if kind == "int" else FloatRange(low, high, step, log)

    def number(self, value, number, mapping, key, keypath):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"must be a number, but got {_show(value)}", mapping, key, keypath)
        if number is int:
            if not float(value).is_integer():
                self.fail(f"must be an integer, but got {_show(value)}", mapping, key, keypath)
            return int(value)
        return float(value)

    def value(self, value, rule, mapping, key, keypath, number=None):
        """Check one value of a parameter against its rule; returns it in the rule's type."""
        kind = number or rule.value_type
        if kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    kind is int and not float(value).is_integer()):
                self.fail(f"must be {rule.expected}, but got {_show(value)}", mapping, key, keypath)
            value = kind(value)
        elif not isinstance(value, kind):
            self.fail(f"must be {rule.expected}, but got {_show(value)}", mapping, key, keypath)
        if not rule.check(value):
            self.fail(f"must be {rule.expected}, but got {_show(value)}", mapping, key, keypath)
        return value


def _show(value) -> str:
    if isinstance(value, (LineDict, dict)):
        return "a mapping"
    if isinstance(value, list):
        return f"a list {value!r}"
    if value is None:
        return "nothing (null)"
    return f"{value!r} ({_show_type(value)})"


def _show_type(value) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "text", type(None): "null"}.get(
        type(value), "a list" if isinstance(value, list) else type(value).__name__)
