"""The dataset registry: a name (or `csv:PATH`) -> a `Dataset` with fixed train/val/test splits.

Images are scaled to [0, 1] (Fashion-MNIST's and MNIST's held as bytes, divided as they are fed:
`Dataset.inputs`); tabular features are standardised with the training split's statistics. The validation
split is carved from the training data with a fixed seed, so every trial of every sweep sees the same split;
the test split is never used to select anything.
Each dataset is loaded once per process.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweeper.domain.errors import DatasetError
from sweeper.domain.places import DATASETS_DIR
from sweeper.ml.tensors import aligned_copy, aligned_empty, in_place, shareable, shares_arrays

SPLIT_SEED = 42
#: what a byte image's values are divided by, for a model's inputs in [0, 1]
PIXEL_MAX = 255
#: Where Debian's dataset-* packages put data (`apt-get install dataset-fashion-mnist`).
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


@dataclass(frozen=True)
class Dataset:
    name: str
    task: str  # "classification" or "regression"
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    class_names: tuple[str, ...] | None = None
    preprocessing: dict = dataclasses.field(default_factory=dict)
    subset_of: int | None = None  # the training split's full size when only a subset of it is used
    #: When set, the x splits hold raw values (pixel bytes) and a model's inputs are them divided by it, as they are
    #: fed (`inputs`, `sweeper.ml.tensors.batches`): Fashion-MNIST's images as bytes take a quarter of the memory
    #: of floats, 55 MiB against 219 in every worker (bench/RESULTS.md).
    divisor: int | None = None
    tensors: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)  # see held()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_outputs(self) -> int:
        return len(self.class_names) if self.class_names else 1

    def inputs(self, x: np.ndarray) -> np.ndarray:
        """What a model is given for `x`, rows of one of this dataset's x splits: `x` itself, or its values divided
        by `divisor` as float32."""
        return x if self.divisor is None else np.divide(x, np.float32(self.divisor), dtype=np.float32)

    def as_inputs(self) -> Dataset:
        """The dataset with its x splits as a model's inputs (float copies where the arrays are bytes), for code that
        gives Keras the arrays itself."""
        if self.divisor is None:
            return self
        return dataclasses.replace(self, x_train=self.inputs(self.x_train), x_val=self.inputs(self.x_val),
                                   x_test=self.inputs(self.x_test), divisor=None)

    def shiftable(self) -> bool:
        """Whether the examples are images a pixel can shift: height x width (x channels), both 3 or more."""
        shape = self.input_shape
        return self.preprocessing.get("kind") == "image" and len(shape) in (2, 3) and min(shape[:2]) >= 3

    def metadata(self) -> dict:
        """What a user of a model trained on this dataset needs to feed it and read its outputs."""
        return {"dataset": self.name, "task": self.task, "input_shape": list(self.input_shape),
                "class_names": list(self.class_names) if self.class_names else None,
                "preprocessing": self.preprocessing}

    def subset(self, n: int | None) -> Dataset:
        """The same dataset with only the first `n` (already shuffled) training examples.

        `n` must leave every class of a classification task in the training split."""
        if not n:
            return self
        full = len(self.x_train)
        if n > full:
            raise DatasetError(f"subset {n:,} is more than the {full:,} training examples of {self.name}; "
                               f"expected at most {full:,}")
        if self.class_names:
            present = len(np.unique(self.y_train[:n]))
            if present < len(self.class_names):
                raise DatasetError(f"subset {n:,}: the first {n:,} training examples of {self.name} hold only "
                                   f"{present} of its {len(self.class_names)} classes; expected a subset with "
                                   f"every class (a larger one)")
        if n == full:
            return self
        return dataclasses.replace(self, x_train=self.x_train[:n], y_train=self.y_train[:n], subset_of=full)

    def refit_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Training + validation examples for the final model; a subset takes the same share of both."""
        n_val = len(self.x_val)
        if self.subset_of:
            n_val = max(1, round(n_val * len(self.x_train) / self.subset_of))
        return tuple(_joined(train, val[:n_val]) for train, val in ((self.x_train, self.x_val),
                                                                    (self.y_train, self.y_val)))

    def held(self) -> Dataset:
        """The dataset with a backend tensor over each split's memory, which `for_fit` gives (`sweeper.ml.tensors`:
        on TensorFlow; elsewhere the dataset itself)."""
        if not shares_arrays():
            return self
        held = dataclasses.replace(self, **{split: shareable(getattr(self, split)) for split in SPLITS})
        tensors = {split: in_place(getattr(held, split)) for split in SPLITS}  # over held's arrays: no copy
        object.__setattr__(held, "tensors", tensors)  # frozen; a replace() of it starts without them
        return held

    def for_fit(self, split: str):
        """What Keras is given for a split: its tensor when the dataset is `held`, else its array."""
        return self.tensors.get(split, getattr(self, split))

    def describe_splits(self) -> str:
        """E.g. `1,000 of 55,000 training examples, 5,000 validation, 10,000 test`."""
        train = f"{len(self.x_train):,}" + (f" of {self.subset_of:,}" if self.subset_of else "")
        return f"{train} training examples, {len(self.x_val):,} validation, {len(self.x_test):,} test"


def _joined(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The two arrays one after the other, in memory a backend tensor can read in place (see held()): a view of
    both when `second` already follows `first` in memory (an image dataset's training and validation splits)."""
    if _follows(first, second):
        return np.lib.stride_tricks.as_strided(first, (len(first) + len(second), *first.shape[1:]), first.strides)
    joined = aligned_empty((len(first) + len(second), *first.shape[1:]), np.result_type(first, second))
    return np.concatenate([first, second], out=joined)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str
    description: str
    locate: Callable[[], str | None]  # where the data would be read from, or None
    looked_in: Callable[[], list[str]]
    load: Callable[[], Dataset]
    kind: str = "image"  # or "table": what its examples are


def _offline() -> bool:
    return os.environ.get("SWEEPER_OFFLINE", "") not in ("", "0")


def _keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def _follows(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether `second` starts where `first` ends in one C-contiguous stretch of memory, with rows of one kind."""
    return (first.dtype == second.dtype and first.shape[1:] == second.shape[1:] and first.flags.c_contiguous
            and second.flags.c_contiguous and len(first) > 0 and first.base is not None
            and second.ctypes.data == first.ctypes.data + first.nbytes and np.may_share_memory(first.base, second))


# -- IDX images (Fashion-MNIST, MNIST) ------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """Read one gzip'd IDX file (the MNIST family's format) into an array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DatasetError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {body.size}")
    return body.reshape(shape)


def _idx_dirs(subdir: str, accept_root: bool) -> list[Path]:
    dirs = []
    if os.environ.get("SWEEPER_DATA_DIR"):
        root = Path(os.environ["SWEEPER_DATA_DIR"])
        dirs += [root / subdir] + ([root] if accept_root else [])
    return dirs + [SYSTEM_DATA_DIR / subdir, _keras_cache() / subdir]


def _find_idx_dir(dirs: list[Path]) -> Path | None:
    return next((d for d in dirs if all((d / f).is_file() for f in IDX_FILES)), None)


def _image_dataset(name, arrays, source, class_names) -> Dataset:
    (x_full, y_full), (x_test, y_test) = arrays
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x_full))
    n_val = max(1, len(x_full) // 12)  # 5,000 of 60,000, as the classic tutorial does
    val, train = order[:n_val], order[n_val:]
    # the bytes, aligned so that a backend tensor can read them in place (held()); the training and validation images
    # one after the other in one array, so that the final model's data (both) is a view of them, not a copy
    # (refit_arrays). mode="clip": the indices are a permutation, always in range, and NumPy's default ("raise")
    # takes into a buffer first, then copies it to `out`: 0.2-0.9 s here against 0.015 s.
    images = aligned_empty(x_full.shape, x_full.dtype)
    x_train = np.take(x_full, train, axis=0, out=images[:len(train)], mode="clip")
    x_val = np.take(x_full, val, axis=0, out=images[len(train):], mode="clip")
    return Dataset(name, "classification", x_train, y_full[train].astype(np.int32),
                   x_val, y_full[val].astype(np.int32), shareable(x_test), y_test.astype(np.int32), source,
                   tuple(class_names), {"kind": "image", "scale": 1 / PIXEL_MAX, "shape": list(x_full.shape[1:])},
                   divisor=PIXEL_MAX)


def _load_idx(directory: Path):
    arrays = [read_idx(directory / f) for f in IDX_FILES]
    return (arrays[0], arrays[1]), (arrays[2], arrays[3])


def _mnist_family(name, subdir, accept_root, keras_loader, cache_file, class_names, title):
    def idx_dir():
        return _find_idx_dir(_idx_dirs(subdir, accept_root))

    def cache():
        return _keras_cache() / cache_file if cache_file and (_keras_cache() / cache_file).is_file() else None

    def locate():
        found = idx_dir() or cache()
        return str(found) if found else None

    def looked_in():
        return [str(d) for d in _idx_dirs(subdir, accept_root)] + (
            [str(_keras_cache() / cache_file)] if cache_file else [])

    def load():
        directory = idx_dir()
        if directory:
            return _image_dataset(name, _load_idx(directory), str(directory), class_names)
        if cache():
            with np.load(cache()) as f:
                arrays = (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
            return _image_dataset(name, arrays, str(cache()), class_names)
        return _image_dataset(name, _download(title, keras_loader, looked_in()), "downloaded by Keras",
                              class_names)

    return locate, looked_in, load


def _download(title, keras_loader, looked_in):
    hint = {"Fashion-MNIST": "apt-get install dataset-fashion-mnist, or put the four IDX .gz files in "
                             "$SWEEPER_DATA_DIR/fashion-mnist/",
            "MNIST": "put the four IDX .gz files in $SWEEPER_DATA_DIR/mnist/"}[title]
    where = "; ".join(looked_in)
    if _offline():
        raise DatasetError(f"{title} not found (looked in: {where}) and SWEEPER_OFFLINE forbids a download; "
                           f"to get it: {hint}")
    try:
        import keras

        return getattr(keras.datasets, keras_loader).load_data()
    except Exception as exc:
        raise DatasetError(f"{title} not found (looked in: {where}) and the download through Keras failed "
                           f"({type(exc).__name__}: {exc}); to get it: {hint}") from None


# -- tabular ---------------------------------------------------------------------------------------

def _split_table(name, task, x, y, source, class_names=None, feature_names=None, standardise=True,
                 impute: str | None = None, scale: float = 1.0) -> Dataset:
    """Seeded training, validation and test splits (stratified for classes); tables standardised with the
    training split's statistics, images multiplied by `scale` (what the preprocessing records)."""
    from sklearn.model_selection import train_test_split

    stratify = y if task == "classification" and np.bincount(y).min() >= 3 else None
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, random_state=SPLIT_SEED,
                                                      stratify=stratify)
    stratify = y_rest if stratify is not None else None
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.2, random_state=SPLIT_SEED,
                                                      stratify=stratify)
    dtype = np.int32 if task == "classification" else np.float32
    if standardise:
        mean, std = _column_statistics(x_train, feature_names, name)
        prep = {"kind": "tabular", "features": list(feature_names or []), "mean": mean.tolist(), "std": std.tolist()}
        if impute:
            prep["impute"] = impute  # a missing value becomes the training mean, here and at prediction
    else:
        mean, std = 0.0, 1.0 / scale
        prep = {"kind": "image", "scale": scale, "shape": list(x.shape[1:])}
    prepared = lambda a: np.nan_to_num((a - mean) / std).astype(np.float32)  # noqa: E731 - NaN -> 0: the mean
    return Dataset(name, task, prepared(x_train), y_train.astype(dtype), prepared(x_val), y_val.astype(dtype),
                   prepared(x_test), y_test.astype(dtype), source, class_names, prep)


def _column_statistics(x_train, feature_names, name):
    """Each column's training mean and spread, missing values left out; a column with none is refused."""
    present = ~np.isnan(x_train)
    empty = np.flatnonzero(~present.any(axis=0))
    if len(empty):
        names = [str(feature_names[i]) if feature_names else str(i) for i in empty]
        raise DatasetError(f"{name}: column {', '.join(names)} has no value in the training split; drop it")
    mean, std = np.nanmean(x_train, axis=0), np.nanstd(x_train, axis=0)
    return mean, np.where(std > 0, std, 1.0)


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _split_table("digits", "classification", digits.images.astype(np.float32), digits.target,
                        "scikit-learn (bundled)", tuple(str(i) for i in range(10)), standardise=False, scale=1 / 16)


def _california_homes() -> list[str]:
    from sklearn.datasets import get_data_home

    homes = [os.environ["SWEEPER_DATA_DIR"]] if os.environ.get("SWEEPER_DATA_DIR") else []
    return homes + [get_data_home()]


def _locate_california():
    return next((h for h in _california_homes() if (Path(h) / "cal_housing_py3.pkz").is_file()), None)


def _load_california() -> Dataset:
    from sklearn.datasets import fetch_california_housing

    home = _locate_california()
    if home is None and _offline():
        raise DatasetError("California housing not found (looked for cal_housing_py3.pkz in: "
                           f"{'; '.join(_california_homes())}) and SWEEPER_OFFLINE forbids a download")
    try:
        bunch = fetch_california_housing(data_home=home, download_if_missing=home is None)
    except Exception as exc:
        raise DatasetError(f"California housing not found (looked for cal_housing_py3.pkz in: "
                           f"{'; '.join(_california_homes())}) and the download failed ({exc})") from None
    return _split_table("california", "regression", bunch.data, bunch.target, home or "downloaded by scikit-learn",
                        feature_names=bunch.feature_names)


IMPUTE = ("mean",)
#: Rows of each class a classification table needs: one each for the training, validation and test splits.
MIN_CLASS_ROWS = 3


def load_csv(path: str, target: str | None, task: str | None = None, impute: str | None = None) -> Dataset:
    """A CSV table with a target column; the task is inferred unless given. Missing feature values are
    refused unless `impute="mean"` (the training split's mean, recorded for prediction)."""
    import pandas as pd

    if not target:
        raise DatasetError(f"csv:{path} needs --target COLUMN naming the column to predict")
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise DatasetError(f"csv:{path}: no such file") from None
    except Exception as exc:
        raise DatasetError(f"csv:{path}: cannot read it as CSV ({exc})") from None
    return from_frame(frame, target, task=task, impute=impute, label=f"csv:{path}",
                      source=str(Path(path).resolve()))


def from_frame(frame, target: str, *, task: str | None = None, impute: str | None = None,
               label: str = "the DataFrame", source: str = "a pandas DataFrame") -> Dataset:
    """A table (a pandas DataFrame) with a target column, as a CSV file is read: text columns one-hot encoded,
    features standardised with the training split's statistics, the task inferred unless given; missing feature
    values refused unless `impute="mean"`. `label` names the table in errors."""
    if impute is not None and impute not in IMPUTE:
        raise DatasetError(f"impute must be one of {', '.join(IMPUTE)}, but got {impute!r}")
    if target not in frame.columns:
        raise DatasetError(f"{label}: no column '{target}'; the columns are: {', '.join(map(str, frame.columns))}")
    frame = frame.dropna(subset=[target])
    if len(frame) < 20:
        raise DatasetError(f"{label}: at least 20 rows with a target are needed, but found {len(frame)}")
    y_raw = frame.pop(target)
    task = _check_task(task, label) or _infer_task(y_raw)
    _check_text_columns(frame, label)
    if impute is None:
        _refuse_missing(frame, label)
    import pandas as pd

    features = pd.get_dummies(frame, dtype=np.float32) if len(frame.columns) else None
    if features is None or features.shape[1] == 0:
        raise DatasetError(f"{label}: no feature columns besides the target '{target}'")
    x = features.to_numpy(dtype=np.float32)
    y, class_names = _targets(y_raw.to_numpy(), task, label, target)
    return _split_table(label, task, x, y, source, class_names, list(map(str, features.columns)), impute=impute)


def _check_task(task: str | None, label: str) -> str | None:
    if task is not None and task not in TASKS:
        raise DatasetError(f"{label}: task must be one of {', '.join(TASKS)}, but got {task!r}")
    return task


def _targets(values: np.ndarray, task: str, label: str, target: str) -> tuple[np.ndarray, tuple | None]:
    """Class indices and names for classification, numbers for regression."""
    if task == "classification":
        classes, y = np.unique(values.astype(str), return_inverse=True)
        _check_classes(classes, np.bincount(y), label, target)
        return y, tuple(str(c) for c in classes)
    try:
        return values.astype(np.float32), None
    except (TypeError, ValueError):
        raise DatasetError(f"{label}: regression needs a numeric target, but '{target}' is not") from None


def from_arrays(x, y, *, validation: tuple | None = None, test: tuple | None = None, task: str | None = None,
                class_names=None) -> Dataset:
    """NumPy arrays as a dataset. Images (3 or more dimensions: examples, height, width[, channels]) are scaled
    to [0, 1] (by 1/255 when they are bytes or go past 1); tables (2 dimensions) are standardised with the
    training split's statistics. The validation and test splits are the ones given; one not given is carved
    from (x, y) with a fixed seed, as for every table. The task is inferred from `y` unless given; class names
    default to the labels."""
    label = "the arrays"
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or len(x) != len(y):
        raise DatasetError(f"{label}: x must hold one example per row (2 or more dimensions) and y one target per "
                           f"example, but got x of shape {x.shape} and y of shape {y.shape}")
    pairs = {"train": (x, y), "validation": validation, "test": test}
    for name, pair in list(pairs.items())[1:]:
        if pair is not None:
            pairs[name] = _pair(pair, x, label, name)
    given = [pair for pair in pairs.values() if pair is not None]
    every_y = np.concatenate([pair[1] for pair in given])
    import pandas as pd

    task = _check_task(task, label) or _infer_task(pd.Series(every_y))
    encoded, names = _targets(every_y, task, label, "y")
    if class_names is not None and names is not None:
        if len(class_names) != len(names):
            raise DatasetError(f"{label}: {len(class_names)} class names for {len(names)} classes in y")
        names = tuple(map(str, class_names))
    start = 0
    for key, pair in pairs.items():
        if pair is not None:
            pairs[key] = (pair[0], encoded[start:start + len(pair[1])])
            start += len(pair[1])
    for key in ("test", "validation"):  # carve what was not given, as every table's splits are
        if pairs[key] is None:
            pairs["train"], pairs[key] = _carve(*pairs["train"], task)
    return _prepared("arrays", task, pairs, names, image=x.ndim >= 3, label=label)


def _pair(pair, x: np.ndarray, label: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise DatasetError(f"{label}: {name} must be a pair (x, y), but got {type(pair).__name__}")
    px, py = np.asarray(pair[0]), np.asarray(pair[1])
    if px.shape[1:] != x.shape[1:] or len(px) != len(py):
        raise DatasetError(f"{label}: {name} x must have the shape of x's examples {x.shape[1:]} and one target "
                           f"per example, but got x of shape {px.shape} and y of shape {py.shape}")
    return px, py


def _carve(x: np.ndarray, y: np.ndarray, task: str) -> tuple[tuple, tuple]:
    """A fifth of (x, y) set aside with the fixed seed (stratified by class when every class allows it)."""
    from sklearn.model_selection import train_test_split

    stratify = y if task == "classification" and np.bincount(y).min() >= 3 else None
    x_rest, x_aside, y_rest, y_aside = train_test_split(x, y, test_size=0.2, random_state=SPLIT_SEED,
                                                        stratify=stratify)
    return (x_rest, y_rest), (x_aside, y_aside)


def _prepared(name: str, task: str, pairs: dict, names, *, image: bool, label: str) -> Dataset:
    """The splits scaled (images) or standardised with the training split's statistics (tables)."""
    xs = [pairs[key][0] for key in ("train", "validation", "test")]
    divisor = None
    if image and all(a.dtype == np.uint8 for a in xs):  # held as they are, divided as they are fed
        divisor, prep = PIXEL_MAX, {"kind": "image", "scale": 1 / PIXEL_MAX, "shape": list(xs[0].shape[1:])}
        xs = [aligned_copy(a) for a in xs]  # the caller's arrays stay theirs
    elif image:
        scale = _image_scale(xs[0])
        xs = [a.astype(np.float32) * scale for a in xs]
        prep = {"kind": "image", "scale": scale, "shape": list(xs[0].shape[1:])}
    else:
        features = [f"x{i}" for i in range(xs[0].shape[1])]
        mean, std = _column_statistics(xs[0].astype(np.float32), features, label)
        xs = [np.nan_to_num((a.astype(np.float32) - mean) / std).astype(np.float32) for a in xs]
        prep = {"kind": "tabular", "features": features, "mean": mean.tolist(), "std": std.tolist()}
    dtype = np.int32 if task == "classification" else np.float32
    ys = [pairs[key][1].astype(dtype) for key in ("train", "validation", "test")]
    return Dataset(name, task, xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], "NumPy arrays", names, prep, divisor=divisor)


def _image_scale(x: np.ndarray) -> float:
    return 1 / 255 if x.dtype == np.uint8 or float(np.nanmax(x)) > 1 else 1.0


# -- data given in memory, kept for every process of its study ---------------------------------------------

def keep(dataset: Dataset) -> str:
    """Keep a dataset given in memory (arrays, a DataFrame) as a file under ./mlruns/datasets, named by its
    content, so that worker processes, `export`, `report` and `predict` read the same splits; returns its name,
    `data:FINGERPRINT`, which the study records."""
    import hashlib
    import json

    digest = hashlib.sha256()
    for array in (getattr(dataset, split) for split in SPLITS):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(json.dumps([dataset.task, dataset.class_names, dataset.preprocessing, dataset.divisor]).encode())
    fingerprint = digest.hexdigest()[:16]
    path = DATASETS_DIR / f"{fingerprint}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}.npz")
        meta = {"task": dataset.task, "class_names": dataset.class_names, "preprocessing": dataset.preprocessing,
                "source": dataset.source, "divisor": dataset.divisor}
        np.savez(partial, x_train=dataset.x_train, y_train=dataset.y_train, x_val=dataset.x_val,
                 y_val=dataset.y_val, x_test=dataset.x_test, y_test=dataset.y_test, meta=json.dumps(meta))
        os.replace(partial, path)  # whole or not at all
    return f"data:{fingerprint}"


def _load_kept(name: str) -> Dataset:
    import json

    path = DATASETS_DIR / f"{name[5:]}.npz"
    if not path.is_file():
        raise DatasetError(f"{name}: the data given to this study in memory was kept in {path}, which is not here; "
                           f"run from the folder the study was made in, or give the data again")
    with np.load(path) as kept:
        meta = json.loads(str(kept["meta"]))
        arrays = {key: kept[key] for key in SPLITS}
    names = tuple(meta["class_names"]) if meta["class_names"] else None
    return Dataset(name, meta["task"], **arrays, source=meta["source"], class_names=names,
                   preprocessing=meta["preprocessing"], divisor=meta.get("divisor"))


def _refuse_missing(frame, label) -> None:
    """Missing feature values are never filled silently: name the columns and their first lines."""
    gaps = []
    for column in frame.columns:
        missing = frame[column].isna().to_numpy()
        if missing.any():
            lines = [str(int(i) + 2) for i in frame.index[missing][:3]]  # the file's lines, after the header
            more = ", ..." if missing.sum() > 3 else ""
            count = int(missing.sum())
            gaps.append(f"column {column} has {count} missing value{'s' if count > 1 else ''} "
                        f"(line{'s' if count > 1 else ''} {', '.join(lines)}{more})")
    if gaps:
        raise DatasetError(f"{label}: {'; '.join(gaps)}; fill or drop them, or pass --impute mean")


def _check_classes(classes, counts, label, target) -> None:
    if len(classes) < 2:
        raise DatasetError(f"{label}: the target '{target}' has a single class ('{classes[0]}'); "
                           f"classification needs at least two (or pass --task regression for a number)")
    few = [f"'{c}' ({n} row{'s' if n > 1 else ''})" for c, n in zip(classes, counts, strict=True) if n < MIN_CLASS_ROWS]
    if few:
        raise DatasetError(f"{label}: class{'es' if len(few) > 1 else ''} {', '.join(few)} of '{target}' "
                           f"{'have' if len(few) > 1 else 'has'} fewer than {MIN_CLASS_ROWS} rows; each class "
                           f"needs one for each of the training, validation and test splits: add rows, or drop "
                           f"or merge that class")


MAX_CATEGORIES = 50


def _check_text_columns(frame, label) -> None:
    """Text columns are one-hot encoded; one with many distinct values (names, ids, free text) cannot be."""
    import pandas as pd

    for column in frame.columns:
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values) and values.nunique() > MAX_CATEGORIES:
            raise DatasetError(f"{label}: column '{column}' is text with {values.nunique()} distinct values, "
                               f"but a text column is one-hot encoded and may have at most {MAX_CATEGORIES}; "
                               f"drop it or turn it into numbers")


def _infer_task(y) -> str:
    import pandas as pd

    numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
    if numeric and not (pd.api.types.is_integer_dtype(y) and y.nunique() <= 20):
        return "regression"
    return "classification"


# -- the registry ----------------------------------------------------------------------------------

def _registry() -> dict[str, DatasetInfo]:
    fashion = _mnist_family("fashion", "fashion-mnist", True, "fashion_mnist", None, FASHION_CLASSES,
                            "Fashion-MNIST")
    mnist = _mnist_family("mnist", "mnist", False, "mnist", "mnist.npz", tuple(str(i) for i in range(10)),
                          "MNIST")
    return {
        "fashion": DatasetInfo("fashion", "classification", "Fashion-MNIST: 70,000 28x28 clothing images, 10 classes",
                               *fashion),
        "mnist": DatasetInfo("mnist", "classification", "MNIST: 70,000 28x28 handwritten digits", *mnist),
        "digits": DatasetInfo("digits", "classification", "scikit-learn's 1,797 8x8 digits (bundled, no download)",
                              lambda: "scikit-learn (bundled)", lambda: [], _load_digits),
        "california": DatasetInfo("california", "regression", "California housing: 20,640 districts, 8 features",
                                  _locate_california, _california_homes, _load_california, kind="table"),
    }


DATASETS = _registry()
TASKS = ("classification", "regression")


def check_name(name: str) -> str:
    """The dataset name as given, or DatasetError naming the valid ones (`data:FINGERPRINT` names data given in
    memory, kept by `keep`)."""
    if name in DATASETS or (name.startswith("csv:") and len(name) > 4) or re.fullmatch(r"data:[0-9a-f]{16}", name):
        return name
    raise DatasetError(f"unknown dataset '{name}'; expected one of {', '.join(DATASETS)} or csv:PATH")


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, target: str | None = None, task: str | None = None,
                 impute: str | None = None) -> Dataset:
    """Load (once per process) a registered dataset or `csv:PATH` (`target`, `task` and `impute` are a CSV
    table's; the plan refuses them for the others)."""
    check_name(name)
    if name.startswith("csv:"):
        return load_csv(name[4:], target, task, impute)
    if name.startswith("data:"):
        return _load_kept(name)
    return DATASETS[name].load()


def raw_arrays(name: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A named image dataset's arrays as Keras' `load_data()` gives them, ((x_train, y_train), (x_test, y_test)),
    unscaled: for notebooks that start from arrays, as the tutorials do."""
    if name not in ("fashion", "mnist"):
        raise DatasetError(f"load_data reads fashion or mnist, but got '{name}'")
    subdir = "fashion-mnist" if name == "fashion" else "mnist"
    directory = _find_idx_dir(_idx_dirs(subdir, name == "fashion"))
    if directory is None:
        DATASETS[name].load()  # says where it looked, and how to get the files
    return _load_idx(directory)


def has_shiftable_images(name: str) -> bool:
    """Whether a dataset's examples are images a pixel can shift (`Dataset.shiftable`; data given in memory is read
    to tell, the registered images all can be)."""
    check_name(name)
    if name.startswith("csv:"):
        return False
    if name.startswith("data:"):
        return load_dataset(name).shiftable()
    return DATASETS[name].kind == "image"


def default_space(name: str) -> str:
    """The bundled space a dataset sweeps by default (by name; data given in memory: by its kind)."""
    if name.startswith("csv:"):
        return "csv"
    if name.startswith("data:"):
        data = load_dataset(name)
        return "mnist" if data.preprocessing.get("kind") == "image" and data.task == "classification" else "csv"
    return name


def load_recorded(study) -> Dataset:
    """The dataset a study recorded (a `domain.records.StudyRecord`: dataset, target, task, impute)."""
    return load_dataset(study.dataset, study.target, study.task or None, study.impute)


def dataset_task(name: str, target: str | None = None, task: str | None = None,
                 impute: str | None = None) -> str:
    """A dataset's task without loading its arrays (a CSV table is read, since its target decides)."""
    check_name(name)
    if name.startswith(("csv:", "data:")):
        return load_dataset(name, target, task, impute).task
    if DATASETS[name].locate() is None:
        load_dataset(name)  # downloaded now (once per process), or an error saying where it was looked for
    return DATASETS[name].task
