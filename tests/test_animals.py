"""The Animal-MNIST loader: restricted unpickling, dedupe, fixed split, errors.

Most tests read a small package the test writes in the wheel's format (a
folder `animal_mnist/data/Animal_MNIST/` holding two gzip'd pickles); one reads
the real package, which `make setup` installs.
"""

import gzip
import os
import pickle
import sys
from collections import Counter

import numpy as np
import pytest

from keras_mgr import datasets
from keras_mgr.datasets import animals


def _write_package(root, images, labels):
    folder = root / "animal_mnist" / "data" / "Animal_MNIST"
    folder.mkdir(parents=True)
    (root / "animal_mnist" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    for name, value in zip(animals._FILES, (images, labels)):
        with gzip.open(folder / name, "wb") as fh:
            pickle.dump(value, fh, protocol=4)
    return folder


def _fake_images(per_class=230, duplicates=5, seed=0):
    """Distinct random images, 10 classes; the first `duplicates` of each class
    appear twice (copy appended at the end)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    dup = np.concatenate([np.flatnonzero(labels == c)[:duplicates] for c in range(10)])
    return np.concatenate([images, images[dup]]), np.concatenate([labels, labels[dup]])


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    images, labels = _fake_images()
    _write_package(tmp_path, images, labels.astype("int64"))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("animal_mnist", None)
    return images, labels


def test_load_reads_package_format_without_importing_it(fake_package):
    images, labels = fake_package
    data = datasets.load("animals", image_size=28, value_range=(0.0, 1.0))
    # 2300 distinct + 50 duplicates -> 2300 kept; 2000 test (200 per class).
    assert data.x_test.shape == (2000, 28, 28, 1)
    assert data.x_train.shape == (300, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(data.y_test), [200] * 10)
    np.testing.assert_array_equal(np.bincount(data.y_train), [30] * 10)
    assert data.class_names[0] == "bear" and data.class_names[-1] == "zebra"
    # Pixel values are the file's bytes / 255, labels kept with their image.
    first = images[labels == 3][0]
    every = np.round(np.concatenate([data.x_train, data.x_test])[..., 0] * 255)
    assert np.sum(np.all(every == first, axis=(1, 2))) == 1
    assert "animal_mnist" not in sys.modules  # the package's code never ran


def test_dedupe_before_split_no_test_image_in_training_pool(fake_package):
    data = datasets.load("animals", image_size=28)
    train = {x.tobytes() for x in data.x_train}
    test = {x.tobytes() for x in data.x_test}
    assert len(train) == len(data.x_train) and len(test) == len(data.x_test)
    assert train.isdisjoint(test)


def test_deduplicate_keeps_first_copy_in_order():
    images = np.array([[[1]], [[2]], [[1]], [[3]], [[2]]], "uint8")
    labels = np.array([0, 1, 0, 2, 1])
    kept, kept_labels = animals.deduplicate(images, labels)
    np.testing.assert_array_equal(kept.ravel(), [1, 2, 3])
    np.testing.assert_array_equal(kept_labels, [0, 1, 2])


def test_deduplicate_refuses_conflicting_labels():
    images = np.array([[[1]], [[1]]], "uint8")
    with pytest.raises(ValueError, match=r"different labels at indices \[1\]"):
        animals.deduplicate(images, np.array([0, 1]))


def test_test_split_fixed_whatever_ratio_or_seed(fake_package):
    a = datasets.load("animals", ratio=0.1, seed=0, image_size=28)
    b = datasets.load("animals", per_class=25, seed=3, image_size=28)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    np.testing.assert_array_equal(np.bincount(b.y_train), [25] * 10)


def test_per_class_subsets_are_nested_and_seeded(fake_package):
    small = datasets.load("animals", per_class=10, seed=1, image_size=28)
    large = datasets.load("animals", per_class=25, seed=1, image_size=28)
    other = datasets.load("animals", per_class=10, seed=2, image_size=28)
    small_set = {x.tobytes() for x in small.x_train}
    assert small_set <= {x.tobytes() for x in large.x_train}
    assert small_set != {x.tobytes() for x in other.x_train}


@pytest.mark.parametrize("per_class", [0, -3, 2.5, "10"])
def test_per_class_must_be_positive_int(per_class):
    with pytest.raises(ValueError, match=r"per_class must be a positive int. Received: "):
        datasets.load("digits", per_class=per_class)


def test_per_class_larger_than_a_class(fake_package):
    with pytest.raises(ValueError, match=r"per_class=31 .*\{0: 30, 1: 30"):
        datasets.load("animals", per_class=31, image_size=28)


def test_resized_to_image_size(fake_package):
    data = datasets.load("animals", per_class=2, image_size=32)
    assert data.x_train.shape == (20, 32, 32, 1)
    assert -1.0 <= data.x_train.min() and data.x_train.max() <= 1.0


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("value, name", [
    (_Payload(), "system"),
    (Counter("ab"), "collections.Counter"),
])
def test_unpickler_refuses_non_numpy(tmp_path, value, name):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as fh:
        pickle.dump(value, fh)
    with pytest.raises(pickle.UnpicklingError, match=rf"Refusing to unpickle .*{name}"):
        animals.read_array(path)


def test_unpickler_accepts_arrays_and_refuses_other_values(tmp_path):
    path = tmp_path / "ok.gz"
    with gzip.open(path, "wb") as fh:
        pickle.dump(np.arange(6, dtype="int64").reshape(2, 3), fh)
    np.testing.assert_array_equal(animals.read_array(path), [[0, 1, 2], [3, 4, 5]])
    with gzip.open(path, "wb") as fh:
        pickle.dump([1, 2], fh)
    with pytest.raises(ValueError, match="must hold a NumPy array. Received: list"):
        animals.read_array(path)


def test_missing_package_names_install_command(monkeypatch):
    monkeypatch.setattr(animals.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install --no-deps animal_mnist==0.4"):
        datasets.load("animals")


def test_missing_files_quoted(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"animal_data_version_3.gz.*Received: path="):
        animals.load_animals(str(tmp_path))


def test_real_package():
    """The installed wheel (`make setup` installs it without dependencies)."""
    data = datasets.load("animals", per_class=10, seed=0, image_size=28)
    assert data.x_test.shape == (2000, 28, 28, 1)
    assert data.x_train.shape == (100, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(data.y_test), [200] * 10)
    full = datasets.load("animals", image_size=28)
    assert len(full.y_train) == 9716 - 2000  # 284 exact duplicates dropped
    assert -1.0 == full.x_train.min() and full.x_train.max() == 1.0
