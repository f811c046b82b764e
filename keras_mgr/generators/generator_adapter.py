"""Adapts any callable generator to the protocol `wrap()` expects."""

import keras
from keras import ops

from keras_mgr import checks, option_checks

LABEL_FORMATS = ("int", "one_hot")


class GeneratorAdapter(keras.Model):
    """Turns `fn(z, labels) -> images` into a protocol generator.

    The protocol (see `keras_mgr.generators`): called as
    `generator([z, labels], training=False)` with int labels, carrying
    `latent_dim`, `num_classes` and `output_range`. The adapter converts int
    labels to one-hot for generators that take one-hot labels, and is frozen.
    `fn` must be differentiable with respect to `z` (the finder learns through
    it). A Keras model's weights are tracked; a plain function has none.

    Not serializable to `.keras` (it holds an arbitrary callable): save with
    `save_weights`, or pass `wrap(..., checkpoint_generator=False)` to keep the
    generator out of the model's checkpoints (hand it to `load_model` again).

    Args:
        fn: callable `(z, labels) -> images`, or a `keras.Model` taking
            `[z, labels]`.
        latent_dim: int, size of `z`.
        num_classes: int.
        output_range: `(low, high)` of the images, or None if unknown.
        label_format: `"int"` (class ids) or `"one_hot"`, what `fn` takes.

    Each argument is checked here (ValueError quoting it), not at the first
    call, where `int("five")` would fail without naming the argument.

    Example:

    >>> fn = lambda z, y: keras.ops.tanh(keras.ops.reshape(z, (-1, 2, 2, 1)))
    >>> g = GeneratorAdapter(fn, latent_dim=4, num_classes=3)
    >>> g([keras.ops.zeros((5, 4)), keras.ops.arange(5) % 3]).shape
    TensorShape([5, 2, 2, 1])
    """

    def __init__(self, fn, latent_dim, num_classes, output_range=(-1.0, 1.0),
                 label_format="int", **kwargs):
        super().__init__(**kwargs)
        if label_format not in LABEL_FORMATS:
            raise ValueError(f"label_format must be one of {LABEL_FORMATS}. "
                             f"Received: label_format={label_format!r}")
        if not callable(fn):
            raise ValueError(f"fn must be callable. Received: fn={fn!r}")
        self.fn = fn
        self.latent_dim = checks.number("latent_dim", latent_dim, 1, integer=True)
        self.num_classes = checks.number("num_classes", num_classes, 1, integer=True)
        self.output_range = option_checks.value_range("output_range", output_range)
        self.label_format = label_format
        self.trainable = False

    def call(self, inputs, training=False):
        z, labels = inputs
        if self.label_format == "one_hot":
            labels = ops.one_hot(ops.cast(labels, "int32"), self.num_classes, dtype=z.dtype)
        if isinstance(self.fn, keras.Model):
            return self.fn([z, labels], training=training)
        return self.fn(z, labels)
