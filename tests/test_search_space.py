"""Search-space files: bundled ones load, traps are handled, every bad input names file, line and key."""

import math

import pytest

from sweeper.domain import yaml_lines
from sweeper.domain.errors import SearchSpaceError, UsageError
from sweeper.domain.space import Fixed, FloatRange, IntRange, load_space, parse_space, signature_changes

from .conftest import SPACES

GOOD = """\
objective: {metric: val_accuracy, direction: maximize}
trials: 5
params:
  n_layers: {type: int, low: 1, high: 3}
  units: {type: int, low: 16, high: 64, log: true}
  learning_rate: {type: float, low: 1e-4, high: 1e-1, log: true}
  optimizer: {type: categorical, choices: [adam, sgd]}
  momentum: {type: float, low: 0.0, high: 0.9, step: 0.1}
  activation: relu
"""


class DictSuggester:
    """Replays stored values: the Suggester for rebuilding a trial."""

    def __init__(self, values):
        self.values, self.asked = values, []

    def _get(self, name, *args, **kwargs):
        self.asked.append(name)
        return self.values[name]

    suggest_int = suggest_float = suggest_categorical = _get


def load(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_space(path)


@pytest.mark.parametrize("name", ["fashion", "mnist", "digits", "california", "csv"])
def test_bundled_spaces_load(name):
    space = load_space(SPACES / f"{name}.yaml")
    assert space.trials >= 1 and space.max_epochs >= 1
    assert isinstance(space.params["learning_rate"], FloatRange) and space.params["learning_rate"].log


def test_fashion_space_tunes_the_issue_parameters():
    space = load_space(SPACES / "fashion.yaml")
    tuned = {n for n, spec in space.params.items() if not isinstance(spec, Fixed)}
    assert {"n_layers", "units", "learning_rate", "batch_size", "optimizer", "momentum", "nesterov", "dropout",
            "activation", "batch_norm", "weight_decay", "label_smoothing", "lr_schedule"} <= tuned
    assert {"adam", "adamw", "sgd"} <= set(space.params["optimizer"].choices)
    assert space.params["units"].high >= 1024  # the hand recipe's 1024-512 is inside
    [recipe] = space.start
    assert recipe["units_0"] == 1024 and recipe["batch_norm"] and recipe["lr_schedule"] == "cosine"


def test_exponent_floats_are_numbers_not_strings(tmp_path):
    space = load(tmp_path, GOOD)
    assert space.params["learning_rate"] == FloatRange(1e-4, 1e-1, None, True)
    assert yaml_lines.load("a: 1e-4\nb: 5E3\nc: -2.5e+2\nd: '1e-4'") == {"a": 1e-4, "b": 5000.0, "c": -250.0,
                                                                       "d": "1e-4"}


def test_values_parse_and_defaults_fill_in(tmp_path):
    space = load(tmp_path, GOOD)
    assert space.params["units"] == IntRange(16, 64, 1, True)
    assert space.params["momentum"] == FloatRange(0.0, 0.9, 0.1, False)
    assert space.params["activation"] == Fixed("relu")
    assert space.params["batch_size"] == Fixed(32)  # not in the file: a fixed default
    assert (space.trials, space.max_epochs, space.patience) == (5, 20, 3)


def test_sample_draws_one_units_per_layer_and_sgd_params_only_for_sgd(tmp_path):
    space = load(tmp_path, GOOD)
    sgd = DictSuggester({"n_layers": 2, "units_0": 32, "units_1": 16, "learning_rate": 0.01, "optimizer": "sgd",
                         "momentum": 0.5})
    params = space.sample(sgd)
    assert sgd.asked == ["n_layers", "units_0", "units_1", "learning_rate", "optimizer", "momentum"]
    assert params["units_1"] == 16 and "units_2" not in params
    assert params["activation"] == "relu" and params["nesterov"] is False  # fixed: never asked
    adam = DictSuggester({"n_layers": 1, "units_0": 64, "learning_rate": 0.01, "optimizer": "adam"})
    params = space.sample(adam)
    assert "momentum" not in params and "momentum" not in adam.asked


def test_sample_with_optuna_stays_inside_the_space(tmp_path):
    import optuna

    space = load(tmp_path, GOOD)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        params = space.sample(study.ask())
        assert 1 <= params["n_layers"] <= 3
        assert all(16 <= params[f"units_{i}"] <= 64 for i in range(params["n_layers"]))
        assert 1e-4 <= params["learning_rate"] <= 1e-1


def test_grid_needs_steps_and_enumerates_each_layer(tmp_path):
    space = load(tmp_path, GOOD.replace("log: true}\n  learning_rate", "step: 16}\n  learning_rate")
                 .replace("{type: float, low: 1e-4, high: 1e-1, log: true}", "{type: categorical, choices: [0.01, 0.1]}"))
    grid = space.grid()
    assert grid["units_0"] == grid["units_2"] == [16, 32, 48, 64]
    assert grid["momentum"][-1] == pytest.approx(0.9) and len(grid["momentum"]) == 10
    with pytest.raises(UsageError, match="needs a `step` on float parameter 'learning_rate'"):
        load(tmp_path, GOOD).grid()


BAD = [
    ("unknown key", GOOD + "colour: red\n", 10, "colour: unknown key; expected one of description, objective, "
                                             "trials, max_epochs, patience, ensemble, test_time_shifts, keras_backend, model, params, start"),
    ("unknown param", GOOD + "  widgets: 3\n", 10, "params.widgets: unknown key; expected one of n_layers"),
    ("unknown optimizer", GOOD.replace("[adam, sgd]", "[adam, sgdd]"), 7,
     "params.optimizer.choices: must be one of adam, sgd, rmsprop, adagrad, adamw, nadam, but got 'sgdd' (text)"),
    ("unknown activation", GOOD.replace("activation: relu", "activation: rellu"), 9,
     "params.activation: must be one of relu, elu, selu, tanh, sigmoid, leaky_relu, gelu, swish, "
     "but got 'rellu' (text)"),
    ("unknown initializer", GOOD + "  kernel_initializer: {value: zeros}\n", 10,
     "params.kernel_initializer.value: must be one of he_normal"),
    ("low > high", GOOD.replace("low: 1, high: 3", "low: 4, high: 3"), 4,
     "params.n_layers: `low <= high` must hold, but got (low=4, high=3)"),
    ("log with low <= 0", GOOD.replace("low: 1e-4, high: 1e-1", "low: 0.0, high: 1e-1"), 6,
     "params.learning_rate.low: must be a number > 0 and < 10, but got 0.0 (number)"),
    ("log with low <= 0 (dropout)", GOOD + "  dropout: {type: float, low: 0.0, high: 0.5, log: true}\n", 10,
     "params.dropout.low: `low > 0` must hold for `log: true`, but got (low=0.0, high=0.5)"),
    ("step larger than range", GOOD.replace("step: 0.1", "step: 2.0"), 8,
     "params.momentum.step: `step <= high - low` must hold, but got (step=2.0, low=0.0, high=0.9)"),
    ("empty choices", GOOD.replace("[adam, sgd]", "[]"), 7,
     "params.optimizer.choices: must be a non-empty list of values, but got a list []"),
    ("wrong type", GOOD.replace("low: 16, high: 64", "low: sixteen, high: 64"), 5,
     "params.units.low: must be an integer >= 1, but got 'sixteen' (text)"),
    ("wrong kind", GOOD.replace("{type: int, low: 1, high: 3}", "{type: float, low: 1, high: 3}"), 4,
     "params.n_layers.type: must be one of int, categorical for this parameter"),
    ("missing key", GOOD.replace("  units: {type: int, low: 16, high: 64, log: true}\n", ""), 4,
     "params.units: missing required key in `params`"),
    ("missing low", GOOD.replace("low: 1, high: 3", "high: 3"), 4, "params.n_layers.low: missing required key"),
    ("missing objective", GOOD.replace("objective: {metric: val_accuracy, direction: maximize}\n", ""), 1,
     "objective: missing required key"),
    ("bad direction", GOOD.replace("direction: maximize", "direction: minimize"), 1,
     "objective.direction: must be maximize for val_accuracy, but got 'minimize' (text)"),
    ("duplicated key", GOOD + "trials: 7\n", 10, "trials: duplicated key; each key may appear once per mapping, "
                                               "but it is also at line 2"),
    ("invalid YAML", GOOD.replace("trials: 5", "trials: [5"), 3, "invalid YAML:"),
    ("bad trials", GOOD.replace("trials: 5", "trials: 0"), 2, "trials: must be an integer >= 1, but got 0 (integer)"),
    ("start not a list", GOOD + "start: {n_layers: 2}\n", 10, "start: must be a list of configurations, but got a mapping"),
    ("start unknown name", GOOD + "start:\n  - {n_layer: 2}\n", 11, "start[0].n_layer: unknown key; expected one of"),
    ("start outside the space", GOOD + "start:\n  - {learning_rate: 0.5}\n", 11,
     "start[0].learning_rate: must lie inside the space (float 0.0001..0.1 log), but got 0.5 (number)"),
    ("start off the step", GOOD + "start:\n  - {optimizer: sgd, momentum: 0.25}\n", 11,
     "start[0].momentum: must lie inside the space (float 0.0..0.9 step 0.1), but got 0.25 (number)"),
    ("start not a choice", GOOD + "start:\n  - {optimizer: rmsprop}\n", 11,
     "start[0].optimizer: must lie inside the space (one of ['adam', 'sgd']), but got 'rmsprop' (text)"),
    ("start fixed value", GOOD + "start:\n  - {activation: elu}\n", 11,
     "start[0].activation: must lie inside the space (fixed 'relu'), but got 'elu' (text)"),
    ("start units count", GOOD + "start:\n  - {n_layers: 3, units: [32, 32]}\n", 11,
     "start[0].units: must list one size per layer, for n_layers inside the space (int 1..3), but got 2 sizes "
     "for n_layers=3"),
    ("start too many layers", GOOD + "start:\n  - {units: [32, 32, 32, 32]}\n", 11,
     "start[0].units: must list one size per layer, for n_layers inside the space (int 1..3), but got 4 sizes"),
    ("start unit size", GOOD + "start:\n  - {units: [32, 8]}\n", 11,
     "start[0].units[1]: must lie inside the space (int 16..64 log), but got 8 (integer)"),
    ("batch_norm not a flag", GOOD + "  batch_norm: {type: categorical, choices: [true, maybe]}\n", 10,
     "params.batch_norm.choices: must be true or false, but got 'maybe' (text)"),
    ("weight_decay negative", GOOD + "  weight_decay: {type: float, low: -1e-4, high: 1e-3}\n", 10,
     "params.weight_decay.low: must be a number >= 0 and < 1, but got -0.0001 (number)"),
    ("label_smoothing of 1", GOOD + "  label_smoothing: 1.0\n", 10,
     "params.label_smoothing: must be a number >= 0 and < 1, but got 1.0 (number)"),
    ("unknown lr_schedule", GOOD + "  lr_schedule: {type: categorical, choices: [cosine, onecycle]}\n", 10,
     "params.lr_schedule.choices: must be one of plateau, cosine, constant, but got 'onecycle' (text)"),
    ("ema of 1", GOOD + "  ema: {type: float, low: 0.99, high: 1.0}\n", 10,
     "params.ema.high: must be a number >= 0 and < 1 (0: no weight averaging), but got 1.0 (number)"),
    ("standardize not a flag", GOOD + "  standardize: yes please\n", 10,
     "params.standardize: must be true or false, but got 'yes please' (text)"),
    ("negative n_layers", GOOD.replace("low: 1, high: 3", "low: -1, high: 3"), 4,
     "params.n_layers.low: must be an integer from 0 to 64 (0: a linear model), but got -1 (integer)"),
    ("unknown keras_backend", GOOD + "keras_backend: theano\n", 10,
     "keras_backend: must be one of tensorflow, jax, but got 'theano' (text)"),
    ("start sgd-only values", GOOD + "start:\n  - {optimizer: adam, momentum: 0.5}\n", 11,
     "start[0].optimizer: momentum and nesterov apply to the sgd optimizer only, but got optimizer 'adam'"),
]


@pytest.mark.parametrize("text,line,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_files_name_file_line_key_and_what_must_hold(tmp_path, text, line, message):
    with pytest.raises(SearchSpaceError) as info:
        load(tmp_path, text)
    error = str(info.value)
    assert error.startswith(f"{tmp_path / 'space.yaml'}:{line}: ")
    assert message in error


def test_a_study_recorded_before_a_parameter_existed_resumes_when_the_space_keeps_its_default(tmp_path):
    space = load(tmp_path, GOOD)
    before = {name: words for name, words in space.signature().items() if name not in ("ema", "standardize")}
    assert signature_changes(before, space.signature()) == []
    averaged = load(tmp_path, GOOD + "  ema: 0.99\n")
    assert signature_changes(before, averaged.signature()) == ["ema: was fixed 0.0, now fixed 0.99"]


def test_start_configurations_use_engine_names_and_leave_out_fixed_values(tmp_path):
    space = load(tmp_path, GOOD + "start:\n  - {units: [32, 64], learning_rate: 1e-3, optimizer: sgd, momentum: 0.9,"
                                  " activation: relu}\n  - {n_layers: 1}\n")
    assert space.start == ({"units_0": 32, "units_1": 64, "n_layers": 2, "learning_rate": 0.001, "optimizer": "sgd",
                            "momentum": 0.9}, {"n_layers": 1})
    assert "start" not in space.signature()  # what a resume compares: start points matter only to a new study


def test_not_a_mapping_and_missing_file(tmp_path):
    with pytest.raises(SearchSpaceError, match="must be a YAML mapping"):
        parse_space([1, 2], "x.yaml")
    with pytest.raises(SearchSpaceError, match="no such file"):
        load_space(tmp_path / "absent.yaml")


def test_objective_better_respects_direction():
    from sweeper.domain.space import Objective

    assert Objective("val_accuracy", "maximize").better(0.9, 0.8)
    assert Objective("val_loss", "minimize").better(0.1, 0.2)
    assert Objective("val_loss", "minimize").better(0.1, None) and Objective("val_loss", "minimize").better(1, math.nan)
    assert not Objective("val_loss", "minimize").better(0.3, 0.2)
