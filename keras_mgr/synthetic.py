"""Latents and class-balanced labels for the synthetic batch, in the step or in tf.data."""

import keras
import numpy as np
from keras import ops

from keras_mgr import random
from keras_mgr.backend import tf


def balanced_draw(batch_size, latent_dim, num_classes, seed, dtype="float32"):
    """`(z, labels)` for one `(2,)` uint32 seed: `z ~ N(0, I)`, balanced labels.

    Labels are a random rotation of `0, 1, ..., C-1, 0, 1, ...`, shuffled, so
    every class appears `floor(n / C)` or `ceil(n / C)` times.
    """
    z = random.normal((batch_size, latent_dim), seed, dtype)
    u = random.uniform((batch_size + 1,), seed, stream=7)
    offset = ops.cast(u[0] * num_classes, "int32")
    labels = (ops.arange(batch_size, dtype="int32") + offset) % num_classes
    return z, ops.take(labels, ops.argsort(u[1:]))


@keras.saving.register_keras_serializable(package="keras_mgr")
class SyntheticSampler(keras.layers.Layer):
    """Draws `z ~ N(0, I)` and class-balanced labels inside the training step.

    Why a seeded draw in the step and not a `tf.data` pipeline: the finder
    needs gradients through `G(F_phi(z), y)`, so the images must be generated
    inside the step anyway; the seed state is a variable, so it is checkpointed
    (an interrupted run resumes the same draws) and one `seed` fixes every draw;
    and a generator inside `tf.data.map` is slower (docs/keras_notes.md). Under
    `tf.distribute` the replica id is folded into the seed so that each replica
    draws different latents.

    Labels are class-balanced (`balanced_draw`).

    Args:
        latent_dim: int, size of `z`.
        num_classes: int.
        seed: int or None.

    Example:

    >>> sampler = SyntheticSampler(latent_dim=4, num_classes=3, seed=0)
    >>> z, y = sampler.sample(6)
    >>> sorted(keras.ops.convert_to_numpy(y).tolist())
    [0, 0, 1, 1, 2, 2]
    """

    def __init__(self, latent_dim, num_classes, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.seed = seed
        self.seed_state = random.seed_state(self, seed)
        self.built = True

    def call(self, reference):
        """Draws a batch as large as `reference`'s first dimension."""
        return self.sample(ops.shape(reference)[0])

    def sample(self, batch_size, dtype=None):
        """Returns `(z, labels)`: `(batch_size, latent_dim)` and `(batch_size,)` int32."""
        return balanced_draw(batch_size, self.latent_dim, self.num_classes,
                             random.next_seed(self.seed_state), dtype or self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "num_classes": self.num_classes,
            "seed": self.seed,
        }



def synthetic_dataset(generator, batch_size, num_batches=None, seed=0, latent_dim=None,
                      num_classes=None):
    """A `tf.data` pipeline of synthetic `(images, labels)` batches from a generator.

    Batch `i` is `G(z_i, y_i)` with `(z_i, y_i) = balanced_draw(..., seed=(seed, i))`,
    so the stream is fixed by `seed` and any batch can be recomputed alone.
    Generation runs in the pipeline's threads and is prefetched. `wrap()` builds
    its synthetic pool (`synthetic_pool_size`, gda / pcr) from it; the finder
    modes generate inside the step instead, where `G(F_phi(z), y)` needs
    gradients. Also handy for sample grids and quality scores.

    Args:
        generator: a conditional generator (the `wrap()` protocol), called as
            `generator([z, labels], training=False)`.
        batch_size: images per batch.
        num_batches: batches in the dataset; `None` repeats forever.
        seed: int, the stream's seed.
        latent_dim: defaults to `generator.latent_dim`.
        num_classes: defaults to `generator.num_classes`.

    Returns:
        A `tf.data.Dataset` of `(images, int32 labels)`.

    Example:

    ```python
    ds = keras_mgr.synthetic_dataset(gan.generator, batch_size=64, num_batches=10)
    images, labels = next(iter(ds))
    ```
    """
    latent_dim = int(latent_dim or getattr(generator, "latent_dim", 0))
    num_classes = int(num_classes or getattr(generator, "num_classes", 0))
    if latent_dim <= 0 or num_classes <= 0 or int(batch_size) <= 0:
        raise ValueError(
            "synthetic_dataset needs positive batch_size, latent_dim and num_classes "
            "(from the generator's attributes or the arguments). Received: "
            f"batch_size={batch_size}, latent_dim={latent_dim}, num_classes={num_classes}")
    dtype = keras.config.floatx()
    if keras.backend.backend() != "tensorflow":  # a JAX generator cannot run in tf.data
        return _eager_dataset(generator, int(batch_size), num_batches, seed, latent_dim,
                              num_classes, dtype)

    def generate(index):
        seed_pair = tf.cast(tf.stack([tf.constant(seed, "int64"), index]) % (2**32), "uint32")
        z, labels = balanced_draw(int(batch_size), latent_dim, num_classes, seed_pair, dtype)
        return generator([z, labels], training=False), labels

    indices = tf.data.Dataset.range(num_batches) if num_batches else tf.data.Dataset.range(
        2**62)
    return indices.map(generate, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True).prefetch(tf.data.AUTOTUNE)


def _eager_dataset(generator, batch_size, num_batches, seed, latent_dim, num_classes, dtype):
    """`synthetic_dataset` for backends whose generator runs outside tf.data:
    the same batches, generated in Python as the dataset is read."""
    def batch(index):
        seed_pair = ops.convert_to_tensor(np.array([seed % 2**32, index % 2**32], "uint32"))
        z, labels = balanced_draw(batch_size, latent_dim, num_classes, seed_pair, dtype)
        images = generator([z, labels], training=False)
        return ops.convert_to_numpy(images), ops.convert_to_numpy(labels).astype("int32")

    first = batch(0)

    def batches():
        index = 0
        while num_batches is None or index < num_batches:
            yield first if index == 0 else batch(index)
            index += 1

    return tf.data.Dataset.from_generator(batches, output_signature=(
        tf.TensorSpec(first[0].shape, first[0].dtype), tf.TensorSpec(first[1].shape, "int32")))
