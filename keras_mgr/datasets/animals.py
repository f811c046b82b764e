"""Animal-MNIST: 10 animal silhouette classes, 28x28 grayscale, 1,000 images each.

The images ship inside the `animal_mnist` wheel (MIT licence) as two gzip'd
pickles of NumPy arrays. Its metadata requires the full `tensorflow` wheel and
pandas, so install it without dependencies (nothing of it is imported here):

    pip install --no-deps animal_mnist==0.4

The pickles are read with an unpickler that accepts NumPy arrays only. About
3% of the images are exact duplicates (none with conflicting labels); each is
kept once, before the fixed test split is drawn, so no test image also sits in
the training pool.
"""

import gzip
import importlib.util
import io
import os
import pickle

import numpy as np

CLASS_NAMES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse",
               "sheep", "zebra"]
TEST_SIZE = 2000  # fixed, stratified: 200 per class
INSTALL = "pip install --no-deps animal_mnist==0.4"
_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")
# What a pickled ndarray needs (NumPy 1.x and 2.x module names).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and refuses every other class or function."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"Refusing to unpickle {module}.{name}: only NumPy arrays are "
            f"accepted from dataset files. Received: {module}.{name}"
        )


def read_array(path):
    """The NumPy array stored as a gzip'd pickle at `path` (NumPy types only)."""
    with gzip.open(path, "rb") as fh:
        value = NumpyOnlyUnpickler(io.BytesIO(fh.read())).load()
    if not isinstance(value, np.ndarray):
        raise ValueError(
            f"{path} must hold a NumPy array. Received: {type(value).__name__}"
        )
    return value


def data_dir():
    """The folder holding the two pickles inside the installed package."""
    spec = importlib.util.find_spec("animal_mnist")  # never imports the package
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The 'animals' dataset needs the animal_mnist package (its images "
            f"ship inside the wheel). Install it with `{INSTALL}` (without "
            "dependencies: its metadata pulls a second TensorFlow and pandas)."
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "Animal_MNIST")


def load_animals(path=None):
    """`(x_train, y_train, x_test, y_test, class_names, max_value)` of Animal-MNIST.

    Images are uint8 `(N, 28, 28, 1)`. Duplicates are dropped (first copy kept),
    then `TEST_SIZE` images (stratified, fixed seed) form the test split and the
    rest the training pool; neither depends on the caller's ratio or seed.

    Args:
        path: folder holding the two pickles; default: the installed package's.
    """
    path = path or data_dir()
    missing = [f for f in _FILES if not os.path.exists(os.path.join(path, f))]
    if missing:
        raise FileNotFoundError(
            f"Animal-MNIST files {missing} not found in {path}. Reinstall with "
            f"`{INSTALL}`. Received: path={path!r}"
        )
    images, labels = (read_array(os.path.join(path, f)) for f in _FILES)
    if images.ndim != 3 or labels.shape != (len(images),):
        raise ValueError(
            "Animal-MNIST images must be (N, H, W) with one label each. Received: "
            f"images.shape={images.shape}, labels.shape={labels.shape}"
        )
    images, labels = deduplicate(images, labels.astype("int32"))
    train, test = fixed_test_split(labels, TEST_SIZE)
    x = images[..., None]
    return x[train], labels[train], x[test], labels[test], list(CLASS_NAMES), 255.0


def deduplicate(images, labels):
    """Keeps the first copy of each exact duplicate image, in the original order.

    A duplicate whose copies carry different labels is an error: no label
    could be trusted for it.
    """
    flat = images.reshape(len(images), -1)
    _, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    conflict = np.flatnonzero(labels != labels[first][inverse])
    if conflict.size:
        raise ValueError(
            "Exact duplicate images carry different labels at indices "
            f"{conflict[:5].tolist()} (labels {labels[conflict[:5]].tolist()})."
        )
    keep = np.sort(first)
    return images[keep], labels[keep]


def fixed_test_split(labels, test_size, seed=0):
    """`(train, test)` index arrays; `test_size` images, equal per class, fixed seed."""
    classes = np.unique(labels)
    per_class = test_size // len(classes)
    rng = np.random.default_rng(seed)
    test = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) <= per_class:
            raise ValueError(
                f"Class {c} has {len(members)} images, not more than the "
                f"{per_class} its test split needs."
            )
        test.append(members[rng.permutation(len(members))[:per_class]])
    test = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test), test
