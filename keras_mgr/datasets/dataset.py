import numpy as np

from keras_mgr.backend import tf
from keras_mgr.datasets.stratified_subset import stratified_split

_SPLITS = ("train", "val", "test")


class Dataset:
    """A small labelled image dataset held in memory as NumPy arrays.

    Images are float32, NHWC, with values in `value_range`; labels are int32
    class ids in `[0, num_classes)`. `load()` builds these; the constructor is
    public so that any arrays can be wrapped the same way.

    Args:
        x_train, y_train: training images and labels.
        x_test, y_test: test images and labels.
        x_val, y_val: optional validation images and labels (empty if `None`).
        class_names: list of class names; defaults to `"0", "1", ...`.
        value_range: tuple `(low, high)` the pixel values lie in.
        name: str, where the data came from.

    Example:

    >>> data = keras_mgr.datasets.load("digits", ratio=0.1)
    >>> data.x_train.shape[1:], data.num_classes
    ((32, 32, 1), 10)
    >>> images, labels = next(iter(data.as_dataset("train", batch_size=32)))
    >>> tuple(images.shape), labels.dtype.name
    ((32, 32, 32, 1), 'int32')
    """

    def __init__(
        self,
        x_train,
        y_train,
        x_test,
        y_test,
        x_val=None,
        y_val=None,
        class_names=None,
        value_range=(-1.0, 1.0),
        name=None,
    ):
        self.x_train, self.y_train = _pair(x_train, y_train, "train")
        self.x_test, self.y_test = _pair(x_test, y_test, "test")
        if x_val is None:
            x_val = np.zeros((0,) + self.x_train.shape[1:], "float32")
            y_val = np.zeros((0,), "int32")
        self.x_val, self.y_val = _pair(x_val, y_val, "val")
        if class_names is None:
            top = max(int(self.y_train.max()), int(self.y_test.max()))
            class_names = [str(i) for i in range(top + 1)]
        self.class_names = list(class_names)
        self.value_range = tuple(float(v) for v in value_range)
        self.name = name

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def image_shape(self):
        return tuple(self.x_train.shape[1:])

    @property
    def train(self):
        """Unbatched `tf.data.Dataset` of `(image, label)` training pairs."""
        return self._tf_data("train")

    @property
    def val(self):
        """Unbatched `tf.data.Dataset` of validation pairs (may be empty)."""
        return self._tf_data("val")

    @property
    def test(self):
        """Unbatched `tf.data.Dataset` of test pairs."""
        return self._tf_data("test")

    def arrays(self, split):
        """`(images, labels)` NumPy arrays of `split` ("train", "val", "test")."""
        if split == "validation":
            split = "val"
        if split not in _SPLITS:
            raise ValueError(
                f"split must be one of {_SPLITS}. Received: split={split!r}"
            )
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")

    def as_dataset(self, split="train", batch_size=32, shuffle=False, seed=0):
        """Batched `tf.data.Dataset` of one split.

        Args:
            split: "train", "val" or "test".
            batch_size: int, examples per batch (the last batch may be smaller).
            shuffle: bool, reshuffle every epoch (buffer holds the whole split).
            seed: int, seed of the shuffle.

        Returns:
            A `tf.data.Dataset` of `(images, labels)` batches.
        """
        ds = self._tf_data(split)
        if shuffle:
            n = len(self.arrays(split)[1])
            ds = ds.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def hold_out(self, fraction, seed=0):
        """Takes a stratified, seeded `fraction` of the training split out.

        The held part is the second part of
        `stratified_split(self.y_train, fraction, seed)`: about `fraction` of
        each class, at least one example per class and one left behind.

        Args:
            fraction: float in `(0, 1)`, the fraction of each class held out.
            seed: int, seed of the draw.

        Returns:
            `(rest, (x_held, y_held))`: `rest` is a `Dataset` whose training
            split is the remainder (validation and test splits, class names,
            value range and name unchanged), and the held images and labels.

        Example (8 of class 0, 4 of class 1; a quarter of each class is
        `floor(0.25 * n + 0.5)`: 2 and 1):

        >>> x, y = np.zeros((12, 2, 2, 1)), [0] * 8 + [1] * 4
        >>> data = keras_mgr.datasets.Dataset(x, y, x, y)
        >>> rest, (x_held, y_held) = data.hold_out(0.25, seed=0)
        >>> len(rest.y_train), y_held.tolist()
        (9, [0, 0, 1])
        """
        rest, held = stratified_split(self.y_train, fraction, seed=seed)
        remainder = Dataset(
            self.x_train[rest], self.y_train[rest], self.x_test, self.y_test,
            x_val=self.x_val, y_val=self.y_val, class_names=self.class_names,
            value_range=self.value_range, name=self.name,
        )
        return remainder, (self.x_train[held], self.y_train[held])

    def _tf_data(self, split):
        x, y = self.arrays(split)
        return tf.data.Dataset.from_tensor_slices((x, y))

    def __repr__(self):
        return (
            f"Dataset(name={self.name!r}, num_classes={self.num_classes}, "
            f"image_shape={self.image_shape}, train={len(self.y_train)}, "
            f"val={len(self.y_val)}, test={len(self.y_test)})"
        )


def _pair(x, y, split):
    x = np.asarray(x, dtype="float32")
    y = np.asarray(y).astype("int32")
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(
            f"x_{split} must be (N, H, W, C) with one label per image. "
            f"Received: x_{split}.shape={x.shape}, y_{split}.shape={y.shape}"
        )
    return x, y
