"""Tiny backbones and generators the tests build (no downloads)."""

import contextlib
import os

import keras
import numpy as np
from keras import layers

from keras_mgr.layers import ExactBatchNormalization


def backbone(image_shape=(8, 8, 1), norm=None, activation="tanh", filters=4, momentum=0.9,
             use_bias=True):
    """Conv -> [BN] -> activation -> global average pool."""
    inputs = keras.Input(image_shape)
    h = layers.Conv2D(filters, 3, padding="same", use_bias=use_bias)(inputs)
    if norm == "keras":
        h = layers.BatchNormalization(momentum=momentum)(h)
    elif norm == "exact":
        h = ExactBatchNormalization(momentum=momentum)(h)
    h = layers.Activation(activation)(h)
    return keras.Model(inputs, layers.GlobalAveragePooling2D()(h), name="backbone")


def generator(latent_dim=5, num_classes=3, image_shape=(8, 8, 1), output_range=(-1.0, 1.0)):
    """A frozen class-conditional generator: tanh(Dense([z, embed(y)]))."""
    z = keras.Input((latent_dim,))
    y = keras.Input((), dtype="int32")
    e = layers.Embedding(num_classes, latent_dim)(y)
    h = layers.Concatenate()([z, e])
    h = layers.Dense(int(np.prod(image_shape)), activation="tanh")(h)
    model = keras.Model([z, y], layers.Reshape(image_shape)(h), name="generator")
    model.latent_dim = latent_dim
    model.num_classes = num_classes
    model.output_range = output_range
    model.trainable = False
    return model


def numpy(x):
    """`x` as a NumPy array on every backend (a PyTorch tensor that requires
    grad refuses `np.asarray`)."""
    return keras.ops.convert_to_numpy(x)


def data(n=24, image_shape=(8, 8, 1), num_classes=3, seed=0):
    """Random images in [-1, 1] whose class shifts the mean (learnable)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    x = rng.uniform(-1, 1, (n,) + image_shape) * 0.5 + (y[:, None, None, None] - 1) * 0.4
    return x.astype(keras.config.floatx()), y.astype("int32")


def wrapped(mode="mgr", norm=None, seed=0, optimizer="auto", scope=None, compile=None,
            generator_=None, **options):
    """A tiny `keras_mgr.wrap` model of `backbone(norm)` and `generator()` (or
    `generator_`), compiled.

    Seeded with `seed` (global state and the model's streams), with a
    validation buffer of 8 and a finder of width 8; `options` override these
    and go to `wrap`. `optimizer`: as for `compile`, or a function making one
    (called inside `scope`, a `tf.distribute` strategy, if given); `compile`:
    more `compile` arguments.
    """
    import keras_mgr

    keras.utils.set_random_seed(seed)
    options = {"meta_batch_size": 8, "finder_hidden_dim": 8, **options}
    with scope.scope() if scope else contextlib.nullcontext():
        model = keras_mgr.wrap(backbone(norm=norm), generator_ or generator(), num_classes=3,
                               mode=mode,
                               seed=seed, **options)
        model.compile(optimizer=optimizer() if callable(optimizer) else optimizer,
                      **(compile or {}))
    return model


def child_env(**variables):
    """`os.environ` plus `variables` for a `python -c` child process that imports
    `tiny` (pytest's `pythonpath` setting reaches only its own process)."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, **variables)
