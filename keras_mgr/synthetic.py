"""Synthetic images `G(F(z, y), y)` and what they are drawn from.

Latents and class-balanced labels (`balanced_draw`, `SyntheticSampler`), the
images made from them by one function, `generate`, for every user (the
training step's `Synthesis`, with the finder called statelessly at phi; the
sample-grid callback; the quality scores; `ConditionalGAN.sample`), and
`tf.data` pipelines of them (`synthetic_dataset`, the pool of `make_pool`).
"""

import keras
import numpy as np
from keras import ops

from keras_mgr import random, terms
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
    >>> z, y = sampler(batch_size=6)
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

    def call(self, batch_size, dtype=None):
        """The next draw, `(z, labels)`: `(batch_size, latent_dim)` in `dtype`
        (default the layer's compute dtype) and `(batch_size,)` int32."""
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


def generate(generator, z, labels, finder=None, latent_space="z"):
    """`(images, latents, start)`: `G(F(z, y), y)`, or `G(z, y)` without a finder.

    Args:
        generator: a frozen conditional generator `[z, labels] -> images`;
            with `latent_space="w"` it has `mapping([z, y])` and
            `synthesis([w, y])` (StyleGAN2-like).
        z: `(n, latent_dim)` noise.
        labels: `(n,)` int class ids.
        finder: None, or a callable `(latents, labels) -> latents` (the finder
            at the current weights, or at phi inside the step).
        latent_space: `"z"` or `"w"` (the finder moves `mapping(z, y)`).

    Returns:
        The images, the latents fed to the generator and those the finder
        started from (equal without a finder).

    Example:

    >>> import keras_mgr, numpy as np
    >>> g = keras_mgr.generators.conditional_generator(4, 2, (8, 8, 1), base_filters=4)
    >>> images, _, _ = generate(g, np.zeros((3, 4), "float32"), np.array([0, 1, 1]))
    >>> tuple(images.shape)
    (3, 8, 8, 1)
    """
    if isinstance(z, np.ndarray):  # eager callers (grid, quality): one tensor type
        z = ops.convert_to_tensor(z.astype("float32"))
    labels = ops.convert_to_tensor(labels, "int32")
    synthesis = generator
    if latent_space == "w":
        z = generator.mapping([z, labels], training=False)
        synthesis = generator.synthesis
    found = z if finder is None else finder(z, labels)
    return synthesis([found, labels], training=False), found, z


def latent_shift(found, start):
    """Per-sample `||F(z) - z||` in float32, without gradient (a diagnostic)."""
    return ops.norm(ops.cast(ops.stop_gradient(found - start), "float32"), axis=-1)


class Synthesis:
    """The synthetic batch of one training step.

    `draw(n)` takes the step's random draws (latents and balanced labels from
    the seeded `sampler`, or indices into a pre-generated pool); calling
    `synthesis(phi, draws)` makes the images, with the finder at phi (finder
    modes) so the meta step can differentiate them with respect to phi.

    Args:
        generator: `fn() -> generator` (the model may hold it untracked).
        sampler: a `SyntheticSampler`.
        image_shape: the backbone's input shape; other sizes are resized.
        dtype: compute dtype of the images.
        finder: a `Finder` or None.
        latent_space: `"z"` or `"w"`.
        pool: None, or `(images, labels)` variables of a pre-generated pool.
    """

    def __init__(self, generator, sampler, image_shape, dtype, finder=None,
                 latent_space="z", pool=None):
        self.generator = generator
        self.sampler = sampler
        self.image_shape = tuple(image_shape)
        self.dtype = dtype
        self.finder = finder
        self.latent_space = latent_space
        self.pool = pool

    def draw(self, batch_size):
        """`{"z", "labels"}`, or `{"pool_index", "labels"}` with a pool."""
        z, labels = self.sampler(batch_size=batch_size, dtype=keras.config.floatx())
        if self.pool is None:
            return {"z": z, "labels": labels}
        images, pool_labels = self.pool
        u = random.uniform((batch_size,), random.next_seed(self.sampler.seed_state))
        index = ops.cast(u * images.shape[0], "int32")
        return {"pool_index": index, "labels": ops.take(pool_labels.value, index)}

    def __call__(self, phi, draws, return_shift=False):
        """The images; with `return_shift`, `(images, mean ||F_phi(z) - z||)`."""
        shift = ops.zeros((), "float32")
        if "pool_index" in draws:
            images = ops.take(self.pool[0].value, draws["pool_index"], axis=0)
            return (images, shift) if return_shift else images
        finder = None
        if self.finder is not None:
            def finder(z, labels):
                return self.finder.stateless_call(phi, [], [z, labels])[0]
        images, found, start = generate(self.generator(), draws["z"], draws["labels"],
                                        finder, self.latent_space)
        if self.finder is not None:
            shift = ops.mean(latent_shift(found, start))
        images = ops.cast(self.resize(images), self.dtype)
        return (images, shift) if return_shift else images

    def resize(self, images):
        if tuple(images.shape[1:3]) != self.image_shape[:2]:
            images = ops.image.resize(images, self.image_shape[:2])
        return images


def make_pool(owner, generator, size, mode, seed, num_classes, latent_dim, image_shape):
    """Generates `size` class-balanced images once (gda, pcr); `(images,
    labels)` variables added to `owner` (so they are saved with it)."""
    if not terms.mode(mode).pool:
        raise ValueError(
            "synthetic_pool_size needs a mode with synthetic images and no finder "
            f"({', '.join(terms.POOL_MODES)}): the finder must generate inside the step. Received: "
            f"mode={mode!r}, synthetic_pool_size={size}")
    batches = list(synthetic_dataset(
        generator, min(size, 256), num_batches=-(-size // 256), seed=seed,
        latent_dim=latent_dim, num_classes=num_classes))
    images = ops.concatenate([b[0] for b in batches], axis=0)[:size]
    labels = ops.concatenate([b[1] for b in batches], axis=0)[:size]
    if tuple(images.shape[1:3]) != tuple(image_shape[:2]):
        images = ops.image.resize(images, image_shape[:2])
    pool_images = owner.add_weight(shape=(size,) + tuple(image_shape), initializer="zeros",
                                   trainable=False, name="pool_images")
    pool_labels = owner.add_weight(shape=(size,), initializer="zeros", dtype="int32",
                                   trainable=False, name="pool_labels")
    pool_images.assign(images)
    pool_labels.assign(labels)
    return pool_images, pool_labels


def sample(generator, labels, seed=None, batch_size=256, latent_dim=None):
    """One image per label from `N(0, I)` latents, as float32 NumPy (eager).

    `seed`: an int, a `keras.random.SeedGenerator` or None; `latent_dim`
    defaults to `generator.latent_dim`.
    """
    labels = np.asarray(labels, "int32").reshape(-1)
    z = keras.random.normal((len(labels), latent_dim or generator.latent_dim), seed=seed)
    out = [ops.convert_to_numpy(generate(generator, z[i:i + batch_size],
                                         labels[i:i + batch_size])[0])
           for i in range(0, len(labels), batch_size)]
    return np.concatenate(out).astype("float32") if out else np.zeros((0,), "float32")
