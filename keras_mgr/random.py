"""Counter-based random numbers that XLA and the TF kernels compute identically.

TensorFlow's stateless RNG ops (and so `keras.random`) draw *different* numbers
under `jit_compile=True` than without, even with the same seed and algorithm;
a jit-compiled step could then never be checked against a plain one. These
draws hash a counter with integer ops only (murmur3's finaliser), which every
backend evaluates bit-identically; floats follow from the bits.
"""

import keras
import numpy as np
import tensorflow as tf


def seed_state(layer, seed=None, name="seed_state"):
    """A `(2,)` int64 variable `[seed, counter]` owned by `layer`.

    Unlike `keras.random.SeedGenerator`, whose state is not among a layer's
    weights, this one is saved by `.keras`, `save_weights` and
    BackupAndRestore, so a resumed run continues the same random stream.
    `seed=None` draws one from NumPy's global RNG (`keras.utils.set_random_seed`
    fixes it).
    """
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    return layer.add_weight(
        shape=(2,), dtype="int64", trainable=False, name=name,
        initializer=keras.initializers.Constant([int(seed), 0]),
        aggregation="only_first_replica",
    )


def next_seed(state):
    """A `(2,)` uint32 seed from a `seed_state`, distinct on every replica."""
    seed = tf.identity(state.value)
    state.assign(seed + tf.constant([0, 1], "int64"))
    replica = tf.distribute.get_replica_context()
    if replica is not None and tf.distribute.get_strategy().num_replicas_in_sync > 1:
        replica_id = tf.cast(replica.replica_id_in_sync_group, "int64")
        seed = seed + tf.stack([replica_id * 1_000_003, replica_id])
    return tf.cast(seed % (2**32), "uint32")


def _bits(size, seed, stream):
    x = tf.cast(tf.range(size, dtype="int32"), "uint32")
    x = x * tf.constant(0x9E3779B9, "uint32") + seed[0] + tf.constant(stream, "uint32")
    for _ in range(2):
        x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
        x = x * tf.constant(0x85EBCA6B, "uint32")
        x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13))
        x = x * tf.constant(0xC2B2AE35, "uint32")
        x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
        x = x + seed[1]
    return x


def uniform(shape, seed, dtype="float32", stream=0):
    """Uniform in the open interval (0, 1), from 24 random bits."""
    size = tf.reduce_prod(tf.cast(shape, "int32"))
    bits = tf.bitwise.right_shift(_bits(size, seed, stream), 8)
    u = (tf.cast(bits, "float32") + 0.5) * (1.0 / 16777216.0)
    return tf.cast(tf.reshape(u, shape), dtype)


def normal(shape, seed, dtype="float32"):
    """Standard normal by the Box-Muller transform of two uniform streams."""
    u1 = uniform(shape, seed, "float32", stream=0x5BD1E995)
    u2 = uniform(shape, seed, "float32", stream=0x1B873593)
    z = tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos(6.283185307179586 * u2)
    return tf.cast(z, dtype)
