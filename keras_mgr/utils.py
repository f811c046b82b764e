"""Small helpers shared by the model and the regularizer."""

import keras
from keras import ops


def full_precision(x):
    """Casts half-precision tensors (mixed precision) to float32; keeps float32/64.

    Losses are computed at full precision; float64 runs (the gradient checks)
    must not be truncated to float32.
    """
    if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
        return ops.cast(x, "float32")
    return x


def dataset_fit_kwargs(x, kwargs):
    """`fit` keyword arguments with `shuffle=False` for a `tf.data.Dataset`.

    Keras ignores `shuffle` for a dataset (it must shuffle itself) but warns
    about its default `True` on every call; a dataset's own order is kept.
    """
    from keras_mgr import backend

    if backend.is_tf_dataset(x):
        kwargs = dict(kwargs)
        kwargs.setdefault("shuffle", False)
    return kwargs


class Untracked:
    """Holds an object out of Keras's tracking and saving (`.value`)."""

    def __init__(self, value):
        self.value = value
