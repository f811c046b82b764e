import numbers
import os

import keras
import numpy as np

from keras_mgr import option_checks
from keras_mgr.backend import tf
from keras_mgr.datasets.animals import load_animals
from keras_mgr.datasets.dataset import Dataset
from keras_mgr.datasets.stratified_subset import (
    _check_ratio,
    stratified_per_class,
    stratified_split,
    stratified_subset,
)

# The paper's six fine-grained sets, by friendly name: (TFDS name, train split,
# test split). Flowers and DTD ship a separate validation split; like most
# fine-grained work we train on train+validation and test on test.
# FGVC-Aircraft is not in the TFDS catalog (checked with tensorflow-datasets
# 4.9.10): it must be given as an image folder.
TFDS_NAMES = {
    "cars": ("cars196", "train", "test"),
    "aircraft": (None, None, None),
    "birds": ("caltech_birds2011", "train", "test"),
    "dtd": ("dtd", "train+validation", "test"),
    "flowers": ("oxford_flowers102", "train+validation", "test"),
    "pets": ("oxford_iiit_pet", "train", "test"),
}
_SPLIT_SEED = 0  # The fixed train/test split never depends on `seed`.
_TEST_FRACTION = 0.3


def load(
    name="digits",
    ratio=1.0,
    seed=0,
    image_size=32,
    per_class=None,
    validation_ratio=0.0,
    value_range=(-1.0, 1.0),
    data_dir=None,
):
    """Load a small image-classification dataset as a `Dataset`.

    The test split is fixed by the source (or by a stratified 70/30 split with
    a fixed seed) and is never subsampled. `ratio` keeps a stratified fraction
    of the training split (or `per_class` images of each class), drawn with
    `seed`; `validation_ratio` then moves a stratified fraction of that subset
    into a validation split (`Dataset.hold_out` with seed `seed + 1`).

    Sources, chosen by `name`:
    - `"digits"`: scikit-learn's 8x8 digits (1797 images, no download),
      bilinearly resized to `image_size`, 1 channel.
    - `"animals"`: Animal-MNIST silhouettes (10 classes, 28x28, 1 channel;
      9,716 distinct images: a fixed test split of 2,000, 200 per class, and
      a training pool of 7,716). Needs
      `pip install --no-deps animal_mnist==0.4`. Use `image_size=28` for the
      native size.
    - a path to an image folder (or `name="folder"` with `data_dir=path`):
      one subfolder per class, or `train/` and `test/` folders each holding
      one subfolder per class. Images are centre-cropped to square, resized,
      3 channels.
    - `"cars"`, `"aircraft"`, `"birds"`, `"dtd"`, `"flowers"`, `"pets"` (the
      paper's fine-grained sets) or any TensorFlow Datasets name with `image`
      and `label` features. Needs `pip install tensorflow-datasets`;
      `data_dir` is then the TFDS data directory.

    Args:
        name: str, dataset name or image-folder path.
        ratio: float in `(0, 1]`, fraction of the training split to keep.
        seed: int, seed of the training subset and validation draw.
        image_size: int, height and width of the returned images.
        per_class: int or None; if set, keep this many training images of
            each class instead of `ratio` (an error if a class has fewer).
        validation_ratio: float in `[0, 1)`, fraction of the training subset
            moved to the validation split (at least one image per class).
        value_range: tuple `(low, high)` of the pixel values.
        data_dir: str, image-folder path (with `name="folder"`) or TFDS data
            directory.

    Returns:
        A `Dataset`.

    Example:

    >>> data = keras_mgr.datasets.load("digits", ratio=0.1, seed=1)
    >>> data.x_train.shape, data.x_test.shape
    ((128, 32, 32, 1), (539, 32, 32, 1))
    """
    # Fail before any loading; bools and strings are refused, not converted.
    _check_ratio(ratio)
    if not (_is_number(validation_ratio) and 0.0 <= validation_ratio < 1.0):
        raise ValueError("validation_ratio must be in [0, 1). "
                         f"Received: validation_ratio={validation_ratio!r}")
    if not (_is_number(image_size, int) and image_size > 0):
        raise ValueError(f"image_size must be a positive int. Received: image_size={image_size!r}")
    if per_class is not None and not (_is_number(per_class, int) and per_class > 0):
        raise ValueError(f"per_class must be a positive int. Received: per_class={per_class!r}")
    option_checks.seed(seed)
    low, high = (float(v) for v in value_range)
    if not low < high:
        raise ValueError(f"value_range must be (low, high) with low < high. "
                         f"Received: value_range={value_range}")

    if name == "digits":
        source = _load_digits(image_size)
    elif name == "animals":
        source = _load_animals(image_size)
    elif name == "folder" or _looks_like_path(name):
        path = data_dir if name == "folder" else name
        source = _load_folder(path, image_size)
    else:
        source = _load_tfds(name, image_size, data_dir)
    x_train, y_train, x_test, y_test, class_names, max_value = source

    keep = (stratified_subset(y_train, ratio, seed) if per_class is None
            else stratified_per_class(y_train, per_class, seed))

    def scale(x):
        x = x.astype("float32") / np.float32(max_value)
        return x * np.float32(high - low) + np.float32(low)

    data = Dataset(scale(x_train[keep]), y_train[keep], scale(x_test), y_test,
                   class_names=class_names, value_range=(low, high), name=name)
    if validation_ratio == 0:
        return data
    rest, (x_val, y_val) = data.hold_out(validation_ratio, seed + 1)
    return Dataset(rest.x_train, rest.y_train, rest.x_test, rest.y_test, x_val=x_val,
                   y_val=y_val, class_names=class_names, value_range=(low, high), name=name)


def _is_number(value, kind=float):
    """Whether `value` is a real number (an integer if `kind` is int), not a bool."""
    wanted = numbers.Integral if kind is int else numbers.Real
    return isinstance(value, wanted) and not isinstance(value, (bool, np.bool_))


def _looks_like_path(name):
    if name is None:
        return False
    name = os.fspath(name)
    return os.path.isdir(name) or os.sep in name or name.startswith(("~", "."))


def _fixed_test_split(labels):
    return stratified_split(labels, _TEST_FRACTION, _SPLIT_SEED)


def _load_digits(image_size):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = _resize(digits.images.astype("float32")[..., None], image_size, 16.0)
    y = digits.target.astype("int32")
    train, test = _fixed_test_split(y)
    names = [str(c) for c in digits.target_names]
    return x[train], y[train], x[test], y[test], names, 16.0


def _load_animals(image_size):
    x_train, y_train, x_test, y_test, names, top = load_animals()
    return (_resize(x_train, image_size, top), y_train, _resize(x_test, image_size, top),
            y_test, names, top)


def _resize(x, image_size, top):
    """Bilinear resize of `(N, h, w, C)` images to `image_size`, clipped to [0, top]."""
    if x.shape[1:3] == (image_size, image_size):
        return x
    x = tf.image.resize(x.astype("float32"), (image_size, image_size), method="bilinear")
    return np.clip(x.numpy(), 0.0, top)


def _load_folder(path, image_size):
    if path is None or not os.path.isdir(os.path.expanduser(os.fspath(path))):
        raise FileNotFoundError(
            f"Image folder not found. Received: path={path!r}"
        )
    path = os.path.expanduser(os.fspath(path))
    train_dir, test_dir = os.path.join(path, "train"), os.path.join(path, "test")
    if os.path.isdir(train_dir) != os.path.isdir(test_dir):
        found, missing = ("train", "test") if os.path.isdir(train_dir) else ("test", "train")
        raise ValueError(
            f"An image folder holds either one subfolder per class, or train/ and test/ "
            f"folders each holding one per class: {path} has {found}/ but no {missing}/ "
            f"(it would be read as a class named {found!r}). Add {missing}/, or move "
            f"the class subfolders of {found}/ up. Received: path={path!r}")
    if os.path.isdir(train_dir) and os.path.isdir(test_dir):
        x_train, y_train, names = _read_folder(train_dir, image_size)
        x_test, y_test, test_names = _read_folder(test_dir, image_size)
        if test_names != names:
            raise ValueError(
                f"{train_dir} and {test_dir} must hold the same class "
                f"subfolders. Received: train classes {names}, test classes "
                f"{test_names}"
            )
    else:
        x, y, names = _read_folder(path, image_size)
        train, test = _fixed_test_split(y)
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    return x_train, y_train, x_test, y_test, names, 255.0


def _read_folder(path, image_size):
    ds = keras.utils.image_dataset_from_directory(
        path, labels="inferred", label_mode="int", color_mode="rgb",
        image_size=(image_size, image_size), batch_size=None, shuffle=False,
        crop_to_aspect_ratio=True, verbose=False)
    images, labels = [], []
    for x, y in ds.batch(256).as_numpy_iterator():
        images.append(np.clip(np.round(x), 0, 255).astype("uint8"))
        labels.append(y.astype("int32"))
    if not images:
        raise ValueError(f"No images found in {path}. Received: path={path!r}")
    if len(ds.class_names) < 2:
        raise ValueError(
            f"An image folder needs one subfolder per class, at least 2 (a classifier of "
            f"one class learns nothing): {path} holds {len(ds.class_names)}. Received: "
            f"path={path!r}, class subfolders {list(ds.class_names)}")
    return np.concatenate(images), np.concatenate(labels), list(ds.class_names)


def _load_tfds(name, image_size, data_dir):
    if name in TFDS_NAMES and TFDS_NAMES[name][0] is None:
        raise ValueError(
            f"{name!r} (FGVC-Aircraft) is not in the TensorFlow Datasets "
            "catalog. Download it from "
            "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/, arrange it "
            "as train/<class>/*.jpg and test/<class>/*.jpg and pass that "
            f"folder as `name`. Received: name={name!r}"
        )
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        if name not in TFDS_NAMES:
            raise ValueError(_unknown_name_message(name)) from e
        raise ImportError(
            f"Loading {name!r} needs TensorFlow Datasets: "
            "`pip install tensorflow-datasets`."
        ) from e

    tfds_name, train_split, test_split = TFDS_NAMES.get(
        name, (name, "train", "test")
    )
    if tfds_name.split("/")[0].split(":")[0] not in tfds.list_builders():
        raise ValueError(_unknown_name_message(name))
    kwargs = dict(data_dir=data_dir, with_info=True, shuffle_files=False)
    train_ds, info = tfds.load(tfds_name, split=train_split, **kwargs)
    test_ds = tfds.load(tfds_name, split=test_split, **kwargs)[0]
    label = info.features["label"]
    x_train, y_train = _tfds_arrays(train_ds, image_size)
    x_test, y_test = _tfds_arrays(test_ds, image_size)
    return x_train, y_train, x_test, y_test, list(label.names), 255.0


def _tfds_arrays(ds, image_size):
    def prepare(example):
        image = example["image"]
        if image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        image = _center_crop_resize(image, image_size)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), "uint8"), tf.cast(
            example["label"], "int32"
        )

    images, labels = [], []
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(256)
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    shape = (0, image_size, image_size, 3)
    if not images:
        return np.zeros(shape, "uint8"), np.zeros((0,), "int32")
    return np.concatenate(images), np.concatenate(labels)


def _center_crop_resize(image, size):
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    side = tf.minimum(h, w)
    image = tf.image.crop_to_bounding_box(
        image, (h - side) // 2, (w - side) // 2, side, side
    )
    return tf.image.resize(image, (size, size), method="bilinear")


def _unknown_name_message(name):
    known = ["animals", "digits"] + sorted(TFDS_NAMES)
    return (
        f"Unknown dataset name. Known names: {known}, any TensorFlow Datasets "
        "name (with `pip install tensorflow-datasets`), or a path to an "
        f"image folder. Received: name={name!r}"
    )
