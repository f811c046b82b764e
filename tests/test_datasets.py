import os

import numpy as np
import pytest
import tensorflow as tf

from keras_mgr import datasets
from keras_mgr.datasets import Dataset, load, stratified_subset
from keras_mgr.datasets.stratified_subset import stratified_split

# --- stratified_subset ------------------------------------------------------


def test_stratified_subset_counts_by_hand():
    labels = np.array([0] * 10 + [1] * 20 + [2] * 5)
    idx = stratified_subset(labels, 0.5, seed=0)
    # floor(0.5 * n + 0.5): 10 -> 5, 20 -> 10, 5 -> 3 (2.5 rounds half up).
    np.testing.assert_array_equal(np.bincount(labels[idx]), [5, 10, 3])
    assert len(np.unique(idx)) == len(idx)
    assert np.all(np.diff(idx) > 0)


def test_stratified_subset_keeps_one_per_class():
    labels = np.array([0] * 50 + [1] * 50 + [2] * 2)
    idx = stratified_subset(labels, 0.1, seed=3)
    np.testing.assert_array_equal(np.bincount(labels[idx]), [5, 5, 1])


def test_stratified_subset_deterministic_and_seeded():
    labels = np.repeat(np.arange(10), 30)
    a = stratified_subset(labels, 0.2, seed=7)
    b = stratified_subset(labels, 0.2, seed=7)
    c = stratified_subset(labels, 0.2, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_stratified_subset_nested_across_ratios():
    labels = np.repeat(np.arange(5), 40)
    small = stratified_subset(labels, 0.1, seed=1)
    large = stratified_subset(labels, 0.5, seed=1)
    assert set(small) <= set(large)


def test_stratified_subset_ratio_one_is_everything():
    labels = np.array([2, 0, 1, 1, 0])
    np.testing.assert_array_equal(stratified_subset(labels, 1.0, seed=5), np.arange(5))


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5, float("nan"), "half"])
def test_stratified_subset_ratio_out_of_range(ratio):
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]. Received: ratio="):
        stratified_subset([0, 1, 0, 1], ratio, seed=0)


def test_stratified_subset_too_small():
    labels = np.repeat(np.arange(10), 10)  # 100 examples, 10 classes
    with pytest.raises(ValueError, match=r"keeps about 5 of 100 examples, fewer than the 10"):
        stratified_subset(labels, 0.05, seed=0)


def test_stratified_split_by_hand():
    labels = np.array([0] * 10 + [1] * 4)
    first, second = stratified_split(labels, 0.3, seed=0)
    # floor(0.3 * 10 + 0.5) = 3, floor(0.3 * 4 + 0.5) = 1
    np.testing.assert_array_equal(np.bincount(labels[second]), [3, 1])
    np.testing.assert_array_equal(np.bincount(labels[first]), [7, 3])
    assert set(first).isdisjoint(second)
    assert len(first) + len(second) == len(labels)


def test_hold_out_by_hand():
    # 10, 4 and 6 examples; a 0.3 fraction of each class is floor(0.3 * n + 0.5):
    # floor(3.5) = 3, floor(1.7) = 1, floor(2.3) = 2 held; 7, 3 and 4 left.
    y = np.array([0] * 10 + [1] * 4 + [2] * 6)
    x = np.arange(20, dtype="float32").reshape(20, 1, 1, 1)  # the value names the example
    x_val, y_val = np.full((2, 1, 1, 1), -1.0), np.array([0, 1])
    data = Dataset(x, y, x[:3], y[:3], x_val=x_val, y_val=y_val,
                   class_names=["a", "b", "c"], value_range=(0, 20), name="toy")
    rest, (x_held, y_held) = data.hold_out(0.3, seed=5)
    np.testing.assert_array_equal(np.bincount(y_held), [3, 1, 2])
    np.testing.assert_array_equal(np.bincount(rest.y_train), [7, 3, 4])
    held, kept = x_held.ravel().astype(int), rest.x_train.ravel().astype(int)
    assert set(held).isdisjoint(kept) and sorted(set(held) | set(kept)) == list(range(20))
    np.testing.assert_array_equal(y[held], y_held)  # images and labels stay paired
    np.testing.assert_array_equal(y[kept], rest.y_train)
    # The same indices as stratified_split with that seed (the recorded
    # benchmark results' meta_validation_fraction runs used these).
    first, second = stratified_split(y, 0.3, seed=5)
    np.testing.assert_array_equal(held, second)
    np.testing.assert_array_equal(kept, first)
    assert not np.array_equal(data.hold_out(0.3, seed=6)[1][0].ravel(), x_held.ravel())
    # Only the training split changes.
    np.testing.assert_array_equal(rest.x_test, data.x_test)
    np.testing.assert_array_equal(rest.x_val, x_val)
    assert (rest.class_names, rest.value_range, rest.name) == (["a", "b", "c"], (0, 20),
                                                                 "toy")


def test_stratified_split_needs_two_per_class():
    with pytest.raises(ValueError, match=r"\{1: 1\}"):
        stratified_split([0, 0, 0, 1], 0.5, seed=0)


# --- digits -----------------------------------------------------------------


def test_digits_full_shapes_and_range():
    data = load("digits", image_size=32)
    assert isinstance(data, Dataset)
    # 1797 images, a fixed ~70/30 stratified split.
    assert len(data.y_train) + len(data.y_test) == 1797
    assert len(data.y_test) == 539
    assert data.x_train.shape == (1258, 32, 32, 1)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    assert data.x_train.min() == -1.0 and data.x_train.max() == 1.0
    assert data.num_classes == 10 and data.image_shape == (32, 32, 1)
    assert data.class_names == [str(i) for i in range(10)]
    assert data.x_val.shape == (0, 32, 32, 1)


def test_digits_native_size_matches_sklearn():
    from sklearn.datasets import load_digits

    data = load("digits", image_size=8, value_range=(0.0, 16.0))
    raw = load_digits()
    # Every returned training image is one of sklearn's, unchanged.
    lookup = {img.tobytes(): t for img, t in zip(raw.images.astype("float32"), raw.target)}
    for image, label in zip(data.x_train[:50, ..., 0], data.y_train[:50]):
        assert lookup[image.tobytes()] == label


def test_digits_subset_is_stratified_and_test_fixed():
    full = load("digits")
    a = load("digits", ratio=0.1, seed=1)
    b = load("digits", ratio=0.1, seed=1)
    c = load("digits", ratio=0.1, seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    counts = np.bincount(a.y_train, minlength=10)
    assert counts.min() >= 12 and counts.max() <= 13
    assert len(a.y_train) == 128
    for other in (a, c):
        np.testing.assert_array_equal(other.x_test, full.x_test)
        np.testing.assert_array_equal(other.y_test, full.y_test)


def test_digits_validation_split():
    data = load("digits", ratio=0.2, seed=0, validation_ratio=0.25)
    subset = load("digits", ratio=0.2, seed=0)
    assert len(subset.y_train) == 250  # about 25 of each class's ~126
    # The validation split is carved out of the same subset, ~25% per class.
    assert len(data.y_train) + len(data.y_val) == 250
    assert 60 <= len(data.y_val) <= 65
    np.testing.assert_array_equal(
        np.sort(np.concatenate([data.y_train, data.y_val])), np.sort(subset.y_train)
    )
    assert set(np.unique(data.y_val)) == set(range(10))
    assert set(np.unique(data.y_train)) == set(range(10))
    train = {x.tobytes() for x in data.x_train}
    assert not any(x.tobytes() in train for x in data.x_val)
    # It is `Dataset.hold_out` with seed + 1.
    rest, (x_val, y_val) = subset.hold_out(0.25, seed=1)
    for a, b in ((data.x_train, rest.x_train), (data.y_train, rest.y_train),
                 (data.x_val, x_val), (data.y_val, y_val)):
        np.testing.assert_array_equal(a, b)


def test_digits_value_range():
    data = load("digits", ratio=0.1, value_range=(0.0, 1.0))
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0


def test_tf_data_views():
    data = load("digits", ratio=0.1, image_size=16)
    image, label = next(iter(data.train))
    assert image.shape == (16, 16, 1) and label.dtype == tf.int32
    batches = list(data.as_dataset("train", batch_size=50))
    assert [len(b[1]) for b in batches] == [50, 50, 28]
    shuffled = np.concatenate([y for _, y in data.as_dataset("train", 50, shuffle=True, seed=1)])
    assert sorted(shuffled.tolist()) == sorted(data.y_train.tolist())
    assert sum(len(y) for _, y in data.as_dataset("test", 1000)) == 539
    with pytest.raises(ValueError, match="Received: split='dev'"):
        data.as_dataset("dev")


def test_load_errors():
    with pytest.raises(ValueError, match=r"Received: ratio=0"):
        load("digits", ratio=0)
    with pytest.raises(ValueError, match=r"Received: ratio=1.2"):
        load("digits", ratio=1.2)
    with pytest.raises(ValueError, match="fewer than the 10 classes"):
        load("digits", ratio=0.005)
    with pytest.raises(FileNotFoundError, match="no/such/folder"):
        load("./no/such/folder")
    with pytest.raises(FileNotFoundError, match="Received: path=None"):
        load("folder")
    with pytest.raises(ValueError, match="Received: validation_ratio=1.0"):
        load("digits", validation_ratio=1.0)


# --- image folder -------------------------------------------------------------


def _write_pngs(root, classes, per_class, size=(12, 20)):
    for c, name in enumerate(classes):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            # Class c is a flat image of grey level 40 * c + i (i < 5).
            image = np.full(size + (3,), 40 * c + i, dtype="uint8")
            png = tf.io.encode_png(image)
            tf.io.write_file(os.path.join(root, name, f"{i}.png"), png)


def test_image_folder_split(tmp_path):
    _write_pngs(str(tmp_path), ["cat", "dog", "emu"], per_class=5)
    data = load(str(tmp_path), image_size=8, value_range=(0.0, 255.0))
    assert data.class_names == ["cat", "dog", "emu"]
    assert data.x_train.shape[1:] == (8, 8, 3)
    # 5 per class: floor(0.3 * 5 + 0.5) = 2 test, 3 train.
    np.testing.assert_array_equal(np.bincount(data.y_test), [2, 2, 2])
    np.testing.assert_array_equal(np.bincount(data.y_train), [3, 3, 3])
    # Flat images stay flat: the grey level identifies class and index.
    levels = data.x_train[:, 0, 0, 0]
    np.testing.assert_allclose(data.x_train, levels[:, None, None, None] + 0 * data.x_train)
    np.testing.assert_array_equal(levels // 40, data.y_train)
    same = load("folder", data_dir=str(tmp_path), image_size=8, value_range=(0.0, 255.0))
    np.testing.assert_array_equal(same.x_test, data.x_test)


def test_image_folder_train_test_subfolders(tmp_path):
    _write_pngs(str(tmp_path / "train"), ["a", "b"], per_class=4)
    _write_pngs(str(tmp_path / "test"), ["a", "b"], per_class=2)
    data = load(str(tmp_path), image_size=8, ratio=0.5, seed=0)
    assert len(data.y_test) == 4 and len(data.y_train) == 4
    np.testing.assert_array_equal(np.bincount(data.y_train), [2, 2])
    assert data.x_train.min() >= -1.0 and data.x_train.max() <= 1.0


# --- TensorFlow Datasets (mock data, never downloads) ---------------------------


def test_tfds_mock():
    import tensorflow_datasets as tfds  # a test requirement (requirements-test.txt)
    with tfds.testing.mock_data(num_examples=40):
        data = load("mnist", image_size=16, ratio=1.0)
        assert data.x_train.shape == (40, 16, 16, 3)
        assert len(data.y_test) == 40
        assert data.num_classes == 10
        assert data.x_train.min() >= -1.0 and data.x_train.max() <= 1.0
        half = load("mnist", image_size=16, ratio=0.5, seed=0)
        assert set(np.unique(half.y_train)) == set(np.unique(data.y_train))
        assert len(half.y_train) < 40


def test_tfds_friendly_name_mock():
    import tensorflow_datasets as tfds  # a test requirement (requirements-test.txt)
    assert datasets.TFDS_NAMES["flowers"][0] == "oxford_flowers102"
    with tfds.testing.mock_data(num_examples=6):
        data = load("flowers", image_size=8)
    assert data.num_classes == 102
    assert data.class_names[0] == "pink primrose"
    assert data.x_train.shape[1:] == (8, 8, 3)


def test_unknown_name_lists_known_names():
    known = r"Known names: \['animals', 'digits', 'aircraft', 'birds'.*name='no_such_set'"
    with pytest.raises(ValueError, match=known):
        load("no_such_set")


def test_aircraft_points_to_folder():
    with pytest.raises(ValueError, match="not in the TensorFlow Datasets catalog"):
        load("aircraft")


def test_tfds_missing_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
        load("cars")
    with pytest.raises(ValueError, match="Unknown dataset name"):
        load("no_such_set")


# --- arguments and folders that loaded something else (issue 24) ---------------


@pytest.mark.parametrize("name, value, message", [
    ("ratio", True, r"ratio must be in \(0, 1\]; a bool is not a ratio. Received: ratio=True$"),
    ("ratio", np.True_, r"a bool is not a ratio. Received: ratio=True$"),
    ("validation_ratio", "0.1", r"validation_ratio must be in \[0, 1\)\. Received: "
                                r"validation_ratio='0.1'$"),
    ("per_class", True, r"per_class must be a positive int. Received: per_class=True$"),
    ("image_size", True, r"image_size must be a positive int. Received: image_size=True$"),
    ("seed", 2.5, r"seed must be an integer in \[0, 2\*\*63 - 2\] or None. Received: seed=2.5$"),
])
def test_load_refuses_bools_and_strings_before_loading(name, value, message):
    with pytest.raises(ValueError, match=message):
        load("no-such-dataset", **{name: value})


def test_image_folder_with_one_class_is_refused(tmp_path):
    _write_pngs(str(tmp_path), ["cat"], per_class=4)
    with pytest.raises(ValueError, match=r"one subfolder per class, at least 2 .*holds 1\. "
                                         r"Received: path='.*', class subfolders \['cat'\]$"):
        load(str(tmp_path), image_size=8)
    _write_pngs(str(tmp_path / "split" / "train"), ["a"], per_class=4)
    _write_pngs(str(tmp_path / "split" / "test"), ["a"], per_class=2)
    with pytest.raises(ValueError, match=r"at least 2.*class subfolders \['a'\]$"):
        load(str(tmp_path / "split"), image_size=8)


@pytest.mark.parametrize("present, missing", [("train", "test"), ("test", "train")])
def test_image_folder_with_train_but_no_test_is_refused(tmp_path, present, missing):
    _write_pngs(str(tmp_path / present), ["a", "b"], per_class=4)
    _write_pngs(str(tmp_path / "c"), ["x"], per_class=4)  # a stray class beside it
    with pytest.raises(ValueError, match=rf"has {present}/ but no {missing}/ \(it would be "
                                         rf"read as a class named '{present}'\).*Received: "
                                         r"path='.*'$"):
        load(str(tmp_path), image_size=8)
