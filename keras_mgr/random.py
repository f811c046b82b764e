"""Counter-based random numbers that XLA and the TF kernels compute identically.

TensorFlow's stateless RNG ops (and so `keras.random`) draw *different* numbers
under `jit_compile=True` than without, even with the same seed and algorithm;
a jit-compiled step could then never be checked against a plain one, nor a
TensorFlow step against a JAX one. These draws hash a counter with integer
`keras.ops` only (murmur3's finaliser), which every backend evaluates
bit-identically; floats follow from the bits. PyTorch lacks uint32 addition
and shifts, so there the 32-bit words are held in int64 and reduced mod 2^32
after each operation (products split in 16-bit halves to stay below 2^63).
"""

import keras
import numpy as np
from keras import ops

from keras_mgr import backend
from keras_mgr.backend import replica


def seed_state(layer, seed=None, name="seed_state"):
    """A `(2,)` int64 variable `[seed, counter]` owned by `layer` (int32 on JAX,
    whose 64-bit integers need x64: the same low 32 bits, so the same draws).

    Unlike `keras.random.SeedGenerator`, whose state is not among a layer's
    weights, this one is saved by `.keras`, `save_weights` and
    BackupAndRestore, so a resumed run continues the same random stream.
    `seed=None` draws one from NumPy's global RNG (`keras.utils.set_random_seed`
    fixes it).
    """
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    dtype, seed = "int64", int(seed)
    if backend.is_jax():  # JAX without x64: int32 holding the low 32 bits
        dtype, seed = "int32", (seed + 2**31) % 2**32 - 2**31
    state = layer.add_weight(
        shape=(2,), dtype=dtype, trainable=False, name=name,
        initializer=keras.initializers.Constant([seed, 0]),
        aggregation="only_first_replica",
    )
    state.is_seed_state = True  # what `seed_states` looks for
    return state


def seed_states(layer):
    """The ids of `layer`'s variables that hold a random stream's position:
    `seed_state`s and Keras `SeedGenerator` states (e.g. Dropout's)."""
    found = {id(v) for v in layer.variables if getattr(v, "is_seed_state", False)}
    for sublayer in layer._flatten_layers(include_self=True):
        found.update(id(g.state) for g in getattr(sublayer, "_seed_generators", []))
    return found


def next_seed(state):
    """A `(2,)` uint32 seed from a `seed_state`, distinct on every replica."""
    seed = ops.copy(state.value)  # the value before the assign below
    state.assign(seed + ops.convert_to_tensor([0, 1], "int64"))
    replica_id = replica.replica_id()
    if replica_id is not None:
        replica_id = ops.cast(replica_id, "int64")
        seed = seed + ops.stack([replica_id * 1_000_003, replica_id])
    return to_uint32(seed)


def to_uint32(seed):
    """The low 32 bits of an int64 seed (int32 on JAX without x64: its bits),
    as a 32-bit word (`_WORD`)."""
    if "64" in str(seed.dtype):
        seed = seed % (2**32)
    return _word(seed)


# A 32-bit word's dtype: uint32, or int64 on PyTorch (words in [0, 2^32)).
_WORD = "int64" if keras.backend.backend() == "torch" else "uint32"


def _word(x):
    if _WORD == "uint32":
        return ops.cast(x, "uint32")
    x = ops.cast(x, "int64")
    return ops.where(x < 0, x + 2**32, x)  # an int32 seed's bits


def _u32(value):
    return ops.convert_to_tensor(np.asarray(value, _WORD), _WORD)


def _low32(x):  # x mod 2^32 on int64 words; nothing on uint32
    return x if _WORD == "uint32" else ops.bitwise_and(x, _u32(0xFFFFFFFF))


def _add(x, y):
    return _low32(x + y)


def _multiply(x, constant):
    if _WORD == "uint32":
        return x * _u32(constant)
    low = x * _u32(constant & 0xFFFF)
    high = ops.bitwise_and(x * _u32(constant >> 16), _u32(0xFFFF))
    return _low32(low + ops.left_shift(high, _u32(16)))


def _bits(size, seed, stream):
    x = _word(ops.arange(size, dtype="int32"))
    x = _add(_add(_multiply(x, 0x9E3779B9), seed[0]), _u32(stream))
    for _ in range(2):
        x = ops.bitwise_xor(x, ops.right_shift(x, _u32(16)))
        x = _multiply(x, 0x85EBCA6B)
        x = ops.bitwise_xor(x, ops.right_shift(x, _u32(13)))
        x = _multiply(x, 0xC2B2AE35)
        x = ops.bitwise_xor(x, ops.right_shift(x, _u32(16)))
        x = _add(x, seed[1])
    return x


def uniform(shape, seed, dtype="float32", stream=0):
    """Uniform in the open interval (0, 1), from 24 random bits."""
    size = int(np.prod(shape)) if _static(shape) else ops.prod(ops.cast(shape, "int32"))
    bits = ops.right_shift(_bits(size, _word(seed), stream), _u32(8))
    u = (ops.cast(bits, "float32") + 0.5) * (1.0 / 16777216.0)
    return ops.cast(ops.reshape(u, shape), dtype)


def normal(shape, seed, dtype="float32"):
    """Standard normal by the Box-Muller transform of two uniform streams."""
    u1 = uniform(shape, seed, "float32", stream=0x5BD1E995)
    u2 = uniform(shape, seed, "float32", stream=0x1B873593)
    z = ops.sqrt(-2.0 * ops.log(u1)) * ops.cos(6.283185307179586 * u2)
    return ops.cast(z, dtype)


def _static(shape):
    return all(isinstance(d, (int, np.integer)) for d in shape)
