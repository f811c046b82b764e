"""`ValidationBuffer`: the real examples the finder's lookahead is scored on."""

import keras
from keras import ops

from keras_mgr import random


class ValidationBuffer(keras.layers.Layer):
    """The validation batch of the meta step, kept as (checkpointed) weights.

    By default a rolling buffer of the `size` most recent real training
    examples (newest first): the lookahead is scored on real data other than
    the current batch, and no separate split is assumed (docs/method.md).
    With `holdout_size > 0` it holds a fixed held-out set instead (wrap's
    `meta_validation_data`), from which each meta step draws `size` examples
    without replacement.

    Args:
        size: int, examples per validation batch (wrap's `meta_batch_size`).
        image_shape: `(H, W, C)` of the images.
        holdout_size: int, number of held-out examples (0: rolling buffer).
        seed: int or None, seeds the draws from the held-out set.

    Example:

    >>> buffer = ValidationBuffer(2, (1, 1, 1))
    >>> buffer.remember(keras.ops.ones((1, 1, 1, 1)), keras.ops.array([3]), True)
    >>> [w.numpy().tolist() for w in buffer.batch()[1:]]
    [[3, 0], [1.0, 0.0]]
    """

    def __init__(self, size, image_shape, holdout_size=0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.size, self.image_shape = int(size), tuple(image_shape)
        self.holdout_size = int(holdout_size)
        self.images = self.add_weight(shape=(self.size,) + self.image_shape,
                                      initializer="zeros", trainable=False, name="meta_images")
        self.labels = self.add_weight(shape=(self.size,), initializer="zeros", dtype="int32",
                                      trainable=False, name="meta_labels")
        self.count = self.add_weight(shape=(), initializer="zeros", dtype="int32",
                                     trainable=False, name="meta_count")
        if self.holdout_size:
            self.holdout_images = self.add_weight(
                shape=(self.holdout_size,) + self.image_shape, initializer="zeros",
                trainable=False, name="holdout_images")
            self.holdout_labels = self.add_weight(
                shape=(self.holdout_size,), initializer="zeros", dtype="int32",
                trainable=False, name="holdout_labels")
            self.holdout_seed = random.seed_state(self, seed, name="holdout_seed")
        self.built = True

    def batch(self):
        """`(images, labels, weights)`: the buffer (rows not yet filled weigh
        0), or `size` held-out examples drawn without replacement."""
        if not self.holdout_size:
            weights = ops.cast(ops.arange(self.size, dtype="int32") < self.count.value,
                               "float32")
            return self.images.value, self.labels.value, weights
        images, labels = self.holdout_images.value, self.holdout_labels.value
        if self.holdout_size > self.size:
            u = random.uniform((self.holdout_size,), random.next_seed(self.holdout_seed))
            index = ops.top_k(u, self.size)[1]
            images, labels = ops.take(images, index, axis=0), ops.take(labels, index)
        return images, labels, ops.ones((ops.shape(labels)[0],), "float32")

    def ready(self):
        """Whether a meta step may use `batch()` (the buffer is full)."""
        if self.holdout_size:
            return ops.array(True)
        return self.count.value >= self.size

    def remember(self, x, y, ok):
        """Pushes a batch in (newest first), only when its step was accepted
        (`ok`): a rejected batch may hold the NaN. No-op with a held-out set."""
        if self.holdout_size:
            return
        cap = self.size
        images = ops.concatenate([ops.cast(x, self.images.dtype), self.images.value],
                                 axis=0)[:cap]
        labels = ops.concatenate([y, self.labels.value], axis=0)[:cap]
        count = ops.minimum(self.count + ops.shape(x)[0], cap)
        self.images.assign(ops.where(ok, ops.reshape(images, self.images.shape),
                                     self.images.value))
        self.labels.assign(ops.where(ok, ops.reshape(labels, (cap,)), self.labels.value))
        self.count.assign(ops.where(ok, count, self.count.value))
