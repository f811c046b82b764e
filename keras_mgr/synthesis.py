"""Synthetic images: `G(F(z, y), y)`, in the training step and outside it.

One function, `generate`, turns latents into images for every user: the
training step (`Synthesis`, with the finder called statelessly at phi), the
sample-grid callback, the generator quality scores and `ConditionalGAN.sample`.
"""

import keras
import numpy as np
from keras import ops

from keras_mgr import random, terms
from keras_mgr.synthetic import synthetic_dataset


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
        z, labels = self.sampler.sample(batch_size, dtype=keras.config.floatx())
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
