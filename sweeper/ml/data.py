"""The dataset registry: a name (or `csv:PATH`) -> a `Dataset` with fixed train/val/test splits.

Images are scaled to [0, 1]; tabular features are standardised with the training split's
statistics. The validation split is carved from the training data with a fixed seed, so every
trial of every sweep sees the same split; the test split is never used to select anything.
Each dataset is loaded once per process.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweeper.domain.errors import DatasetError

SPLIT_SEED = 42
#: Where Debian's dataset-* packages put data (`apt-get install dataset-fashion-mnist`).
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


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

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_outputs(self) -> int:
        return len(self.class_names) if self.class_names else 1

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
        return (np.concatenate([self.x_train, self.x_val[:n_val]]),
                np.concatenate([self.y_train, self.y_val[:n_val]]))

    def describe_splits(self) -> str:
        """E.g. `1,000 of 55,000 training examples, 5,000 validation, 10,000 test`."""
        train = f"{len(self.x_train):,}" + (f" of {self.subset_of:,}" if self.subset_of else "")
        return f"{train} training examples, {len(self.x_val):,} validation, {len(self.x_test):,} test"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str
    description: str
    locate: Callable[[], str | None]  # where the data would be read from, or None
    looked_in: Callable[[], list[str]]
    load: Callable[[], Dataset]


def _offline() -> bool:
    return os.environ.get("SWEEPER_OFFLINE", "") not in ("", "0")


def _keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


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
    scale = lambda x: (x.astype(np.float32) / 255.0)  # noqa: E731
    return Dataset(name, "classification", scale(x_full[train]), y_full[train].astype(np.int32),
                   scale(x_full[val]), y_full[val].astype(np.int32), scale(x_test), y_test.astype(np.int32),
                   source, tuple(class_names), {"kind": "image", "scale": 1 / 255, "shape": list(x_full.shape[1:])})


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
                 impute: str | None = None) -> Dataset:
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
        mean, std = 0.0, 1.0
        prep = {"kind": "image", "scale": 1 / 16, "shape": list(x.shape[1:])}
    scale = lambda a: np.nan_to_num((a - mean) / std).astype(np.float32)  # noqa: E731 - NaN -> 0: the mean
    return Dataset(name, task, scale(x_train), y_train.astype(dtype), scale(x_val), y_val.astype(dtype),
                   scale(x_test), y_test.astype(dtype), source, class_names, prep)


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
    images = digits.images.astype(np.float32) / 16.0
    return _split_table("digits", "classification", images, digits.target, "scikit-learn (bundled)",
                        tuple(str(i) for i in range(10)), standardise=False)


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
    if impute is not None and impute not in IMPUTE:
        raise DatasetError(f"impute must be one of {', '.join(IMPUTE)}, but got {impute!r}")
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise DatasetError(f"csv:{path}: no such file") from None
    except Exception as exc:
        raise DatasetError(f"csv:{path}: cannot read it as CSV ({exc})") from None
    if target not in frame.columns:
        raise DatasetError(f"csv:{path}: no column '{target}'; the columns are: {', '.join(map(str, frame.columns))}")
    frame = frame.dropna(subset=[target])
    if len(frame) < 20:
        raise DatasetError(f"csv:{path}: at least 20 rows with a target are needed, but found {len(frame)}")
    y_raw = frame.pop(target)
    task = task or _infer_task(y_raw)
    _check_text_columns(frame, path)
    if impute is None:
        _refuse_missing(frame, path)
    features = pd.get_dummies(frame, dtype=np.float32) if len(frame.columns) else None
    if features is None or features.shape[1] == 0:
        raise DatasetError(f"csv:{path}: no feature columns besides the target '{target}'")
    x = features.to_numpy(dtype=np.float32)
    if task == "classification":
        classes, y = np.unique(y_raw.astype(str), return_inverse=True)
        class_names = tuple(classes)
        _check_classes(classes, np.bincount(y), path, target)
    else:
        try:
            y, class_names = y_raw.to_numpy(dtype=np.float32), None
        except (TypeError, ValueError):
            raise DatasetError(f"csv:{path}: regression needs a numeric target, but '{target}' is not") from None
    return _split_table(f"csv:{path}", task, x, y, str(Path(path).resolve()), class_names,
                        list(map(str, features.columns)), impute=impute)


def _refuse_missing(frame, path) -> None:
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
        raise DatasetError(f"csv:{path}: {'; '.join(gaps)}; fill or drop them, or pass --impute mean")


def _check_classes(classes, counts, path, target) -> None:
    if len(classes) < 2:
        raise DatasetError(f"csv:{path}: the target '{target}' has a single class ('{classes[0]}'); "
                           f"classification needs at least two (or pass --task regression for a number)")
    few = [f"'{c}' ({n} row{'s' if n > 1 else ''})" for c, n in zip(classes, counts, strict=True) if n < MIN_CLASS_ROWS]
    if few:
        raise DatasetError(f"csv:{path}: class{'es' if len(few) > 1 else ''} {', '.join(few)} of '{target}' "
                           f"{'have' if len(few) > 1 else 'has'} fewer than {MIN_CLASS_ROWS} rows; each class "
                           f"needs one for each of the training, validation and test splits: add rows, or drop "
                           f"or merge that class")


MAX_CATEGORIES = 50


def _check_text_columns(frame, path) -> None:
    """Text columns are one-hot encoded; one with many distinct values (names, ids, free text) cannot be."""
    import pandas as pd

    for column in frame.columns:
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values) and values.nunique() > MAX_CATEGORIES:
            raise DatasetError(f"csv:{path}: column '{column}' is text with {values.nunique()} distinct values, "
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
                                  _locate_california, _california_homes, _load_california),
    }


DATASETS = _registry()
TASKS = ("classification", "regression")


def check_name(name: str) -> str:
    """The dataset name as given, or DatasetError naming the valid ones."""
    if name in DATASETS or (name.startswith("csv:") and len(name) > 4):
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
    return DATASETS[name].load()


def load_recorded(study) -> Dataset:
    """The dataset a study recorded (a `domain.records.StudyRecord`: dataset, target, task, impute)."""
    return load_dataset(study.dataset, study.target, study.task or None, study.impute)


def dataset_task(name: str, target: str | None = None, task: str | None = None,
                 impute: str | None = None) -> str:
    """A dataset's task without loading its arrays (a CSV table is read, since its target decides)."""
    check_name(name)
    if name.startswith("csv:"):
        return load_dataset(name, target, task, impute).task
    if DATASETS[name].locate() is None:
        load_dataset(name)  # downloaded now (once per process), or an error saying where it was looked for
    return DATASETS[name].task
