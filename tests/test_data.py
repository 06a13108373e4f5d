"""The dataset registry, on the real Fashion-MNIST and on small files the tests write in each format."""

import gzip
import struct

import numpy as np
import pytest

from sweeper.domain.errors import DatasetError
from sweeper.ml import data
from sweeper.ml.data import load_csv, load_dataset, read_idx


@pytest.fixture(autouse=True)
def _fresh_cache():
    load_dataset.cache_clear()
    yield
    load_dataset.cache_clear()


def write_idx(path, array):
    header = b"\0\0\x08" + bytes([array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist_files(directory, n_train=120, n_test=30):
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(directory / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(directory / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)


def test_fashion_is_the_real_dataset_split_and_scaled():
    ds = load_dataset("fashion")
    assert ds.x_train.shape == (55000, 28, 28) and ds.x_val.shape == (5000, 28, 28)
    assert ds.x_test.shape == (10000, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.divisor == 255  # held as bytes, a quarter of floats' memory
    inputs = ds.inputs(ds.x_train[:100])  # what a model is given: the bytes divided
    assert inputs.dtype == np.float32 and 0.0 <= inputs.min() and inputs.max() <= 1.0
    assert np.array_equal(inputs, ds.x_train[:100] / np.float32(255))
    floats = ds.as_inputs()
    assert floats.divisor is None and floats.x_test.dtype == np.float32 and floats.inputs(floats.x_val) is floats.x_val
    assert np.array_equal(floats.x_val, ds.inputs(ds.x_val)) and floats.preprocessing == ds.preprocessing
    assert ds.class_names[0] == "T-shirt/top" and ds.n_outputs == 10 and ds.task == "classification"
    assert sorted(np.unique(ds.y_val)) == list(range(10))
    again = data._image_dataset("fashion", data._load_idx(data._find_idx_dir(data._idx_dirs("fashion-mnist", True))),
                                "x", data.FASHION_CLASSES)
    assert np.array_equal(again.y_val, ds.y_val)  # the validation split is fixed


def test_subset_keeps_validation_and_test():
    ds = load_dataset("fashion").subset(300)
    assert len(ds.x_train) == 300 and len(ds.x_val) == 5000 and len(ds.x_test) == 10000


def test_sweeper_data_dir_comes_first(tmp_path, monkeypatch):
    write_mnist_files(tmp_path / "fashion-mnist")
    monkeypatch.setenv("SWEEPER_DATA_DIR", str(tmp_path))
    ds = load_dataset("fashion")
    assert ds.source == str(tmp_path / "fashion-mnist") and len(ds.x_train) + len(ds.x_val) == 120


def test_image_splits_hold_every_training_image_once_beside_its_own_label(tmp_path, monkeypatch):
    write_mnist_files(tmp_path / "fashion-mnist")
    images = read_idx(tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz").copy()
    images[:, 0, 0] = np.arange(len(images))  # each image marked with its row, whose label is row % 10
    write_idx(tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz", images)
    monkeypatch.setenv("SWEEPER_DATA_DIR", str(tmp_path))
    ds = load_dataset("fashion")
    rows = np.concatenate([ds.x_train[:, 0, 0], ds.x_val[:, 0, 0]]).astype(int)
    assert sorted(rows) == list(range(120)) and len(ds.x_val) == 10
    assert np.array_equal(rows % 10, np.concatenate([ds.y_train, ds.y_val]))
    assert np.array_equal(np.concatenate([ds.x_train, ds.x_val]), images[rows])


def test_mnist_reads_idx_files(tmp_path, monkeypatch):
    write_mnist_files(tmp_path / "mnist")
    monkeypatch.setenv("SWEEPER_DATA_DIR", str(tmp_path))
    ds = load_dataset("mnist")
    assert ds.x_test.shape == (30, 28, 28) and ds.class_names == tuple("0123456789")
    assert data.DATASETS["mnist"].locate() == str(tmp_path / "mnist")


def test_missing_dataset_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", tmp_path / "system")
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion")
    message = str(info.value)
    assert message.startswith(f"Fashion-MNIST not found (looked in: {tmp_path}/fashion-mnist; {tmp_path}; "
                              f"{tmp_path}/system/fashion-mnist; {tmp_path}/keras/datasets/fashion-mnist)")
    assert "apt-get install dataset-fashion-mnist" in message


def test_truncated_idx_file_is_reported(tmp_path):
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\0\0\x08\x01" + struct.pack(">I", 10) + b"abc")
    with pytest.raises(DatasetError, match="truncated: expected 10 values, found 3"):
        read_idx(path)


def test_digits_is_bundled():
    ds = load_dataset("digits")
    assert ds.input_shape == (8, 8) and ds.x_train.max() <= 1.0
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 1797


def test_california_reads_scikit_learn_cache_format(tmp_path, monkeypatch):
    import joblib

    rng = np.random.default_rng(0)
    table = rng.normal(size=(200, 9)) + 3  # column 0 is the target, in dollars
    joblib.dump(table * [100_000] + [0] * 9, tmp_path / "cal_housing_py3.pkz", compress=6)
    monkeypatch.setenv("SWEEPER_DATA_DIR", str(tmp_path))
    ds = load_dataset("california")
    assert ds.task == "regression" and ds.input_shape == (8,) and ds.class_names is None
    assert abs(float(ds.x_train.mean())) < 1e-5  # standardised with training statistics
    assert ds.preprocessing["features"][0] == "MedInc"


def test_csv_infers_classification_and_regression(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["size,colour,price,kind"] + [f"{rng.uniform(1, 9):.2f},{'red' if i % 2 else 'blue'},"
                                          f"{rng.uniform(100, 900):.1f},{'ab'[i % 2]}" for i in range(60)]
    path = tmp_path / "t.csv"
    path.write_text("\n".join(rows))
    classes = load_csv(str(path), "kind")
    assert classes.task == "classification" and classes.class_names == ("a", "b")
    assert classes.preprocessing["features"] == ["size", "price", "colour_blue", "colour_red"]
    values = load_csv(str(path), "price")
    assert values.task == "regression" and values.y_train.dtype == np.float32
    assert load_csv(str(path), "price", "regression").task == "regression"


def test_csv_errors_name_the_problem(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match=r"no column 'c'; the columns are: a, b"):
        load_csv(str(path), "c")
    with pytest.raises(DatasetError, match="at least 20 rows"):
        load_csv(str(path), "b")
    with pytest.raises(DatasetError, match="no such file"):
        load_csv(str(tmp_path / "none.csv"), "b")


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'; expected one of fashion, mnist, digits, "
                                           "california or csv:PATH"):
        load_dataset("cifar")


@pytest.mark.parametrize("shuffle", [True, False])
def test_bytes_are_fed_in_the_batches_keras_feeds_of_the_divided_floats(shuffle):
    """On JAX and PyTorch the bytes reach the model through `DividedBatches`: the same batches, the same values and in
    the same order for the same seed, as Keras' own feed gives of the floats (so that a sweep's models are the ones
    it trained when the images were held as floats)."""
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    from sweeper.ml.tensors import _divided_batches

    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 256, (70, 3, 2), dtype=np.uint8), np.arange(70)
    np.random.seed(11)
    theirs = list(ArrayDataAdapter(x / np.float32(255), y, batch_size=32, shuffle=shuffle).get_numpy_iterator())
    np.random.seed(11)
    fed = _divided_batches()(x, y, batch_size=32, shuffle=shuffle, divisor=255)
    fed.on_epoch_begin()
    ours = [fed[i] for i in range(len(fed))]
    assert [len(b[1]) for b in ours] == [32, 32, 6]
    for (x_ours, y_ours), (x_theirs, y_theirs) in zip(ours, theirs, strict=True):
        assert x_ours.dtype == np.float32 and np.array_equal(x_ours, x_theirs) and np.array_equal(y_ours, y_theirs)
    fed.on_epoch_begin()
    again = np.concatenate([fed[i][1] for i in range(len(fed))])
    assert sorted(again) == list(range(70)) and (list(again) != list(np.concatenate([b[1] for b in ours]))) == shuffle
