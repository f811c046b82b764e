"""Latents and class-balanced labels for the synthetic batch."""

import keras
from keras import ops

from keras_mgr import random


@keras.saving.register_keras_serializable(package="keras_mgr")
class SyntheticSampler(keras.layers.Layer):
    """Draws `z ~ N(0, I)` and class-balanced labels inside the training step.

    Why a seeded draw in the step and not a `tf.data` pipeline: the finder
    needs gradients through `G(F_phi(z), y)`, so the images must be generated
    inside the step anyway; the seed state is a variable, so it is checkpointed
    (an interrupted run resumes the same draws) and one `seed` fixes every draw;
    and on 2 cores a generator inside `tf.data.map` was measured 2x slower
    (KERAS_NOTES.md). Under `tf.distribute` the replica id is folded into the
    seed so that each replica draws different latents.

    Labels are balanced: a random rotation of `0, 1, ..., C-1, 0, 1, ...`,
    shuffled, so every class appears `floor(n / C)` or `ceil(n / C)` times.

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
        seed = random.next_seed(self.seed_state)
        z = random.normal((batch_size, self.latent_dim), seed, dtype or self.compute_dtype)
        # A random rotation of 0..C-1, 0..C-1, ..., then a random permutation.
        u = random.uniform((batch_size + 1,), seed, stream=7)
        offset = ops.cast(u[0] * self.num_classes, "int32")
        labels = (ops.arange(batch_size, dtype="int32") + offset) % self.num_classes
        return z, ops.take(labels, ops.argsort(u[1:]))

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "num_classes": self.num_classes,
            "seed": self.seed,
        }

