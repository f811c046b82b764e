"""Latents and class-balanced labels for the synthetic batch."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mgr")
class SyntheticSampler(keras.layers.Layer):
    """Draws `z ~ N(0, I)` and class-balanced labels inside the training step.

    Why a `SeedGenerator` in the step and not a `tf.data` pipeline: the finder
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
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, reference):
        """Draws a batch as large as `reference`'s first dimension."""
        return self.sample(ops.shape(reference)[0])

    def sample(self, batch_size, dtype=None):
        """Returns `(z, labels)`: `(batch_size, latent_dim)` and `(batch_size,)` int32."""
        import tensorflow as tf

        seed = _replica_seed(self.seed_generator)
        z = tf.random.stateless_normal(
            (batch_size, self.latent_dim), seed=seed, dtype=dtype or self.compute_dtype
        )
        # Rotation offset and permutation from one uniform draw of size n + 1.
        u = tf.random.stateless_uniform((batch_size + 1,), seed=seed[::-1])
        offset = tf.cast(u[0] * self.num_classes, "int32")
        labels = (tf.range(batch_size, dtype="int32") + offset) % self.num_classes
        labels = tf.gather(labels, tf.argsort(u[1:]))
        return z, labels

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "num_classes": self.num_classes,
            "seed": self.seed,
        }


def _replica_seed(seed_generator):
    """A fresh `(2,)` seed, different on each replica of a tf.distribute strategy."""
    import tensorflow as tf

    seed = tf.cast(seed_generator.next(), "int64")
    replica = tf.distribute.get_replica_context()
    if replica is not None and tf.distribute.get_strategy().num_replicas_in_sync > 1:
        seed = seed + tf.cast(
            tf.stack([0, replica.replica_id_in_sync_group]), seed.dtype
        ) * tf.constant(1_000_003, seed.dtype)
    return seed
