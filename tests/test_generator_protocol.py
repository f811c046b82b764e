"""What wrap() accepts as a generator: models, adapted callables, W space."""

import keras
import numpy as np
import pytest
import tiny

import keras_mgr
from keras_mgr.generators import GeneratorAdapter


def test_plain_function_and_one_hot_generator():
    kernel = np.random.default_rng(0).standard_normal((5 + 3, 64)).astype("float32")

    def fn(z, one_hot):  # takes one-hot labels
        h = keras.ops.concatenate([z, one_hot], axis=-1)
        return keras.ops.reshape(keras.ops.tanh(h @ kernel), (-1, 8, 8, 1))

    generator = GeneratorAdapter(fn, latent_dim=5, num_classes=3, label_format="one_hot")
    a = generator([np.zeros((2, 5), "float32"), np.array([0, 1])])
    b = fn(np.zeros((2, 5), "float32"), np.eye(3, dtype="float32")[[0, 1]])
    np.testing.assert_allclose(a, b)
    model = keras_mgr.wrap(tiny.backbone(), generator, seed=0, meta_batch_size=8)
    model.compile()
    x, y = tiny.data(16)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert np.isfinite(history["meta_loss"][-1])
    with pytest.raises(ValueError, match="label_format must be one of"):
        GeneratorAdapter(fn, 5, 3, label_format="soft")


class MappedGenerator(keras.Model):
    """z -> w (mapping network) -> images (synthesis), like StyleGAN2."""

    def __init__(self):
        super().__init__()
        self.latent_dim, self.num_classes, self.output_range = 5, 3, (-1.0, 1.0)
        z, y = keras.Input((5,)), keras.Input((), dtype="int32")
        w = keras.layers.Dense(7)(keras.layers.Concatenate()([z, keras.layers.Embedding(3, 5)(y)]))
        self.mapping = keras.Model([z, y], w)
        w_in, y2 = keras.Input((7,)), keras.Input((), dtype="int32")
        images = keras.layers.Reshape((8, 8, 1))(keras.layers.Dense(64, activation="tanh")(w_in))
        self.synthesis = keras.Model([w_in, y2], images)
        self.trainable = False

    def call(self, inputs, training=False):
        z, y = inputs
        return self.synthesis([self.mapping([z, y]), y])


def test_finder_in_w_space():
    generator = MappedGenerator()
    model = keras_mgr.wrap(tiny.backbone(), generator, latent_space="w", seed=0,
                           meta_batch_size=8)
    assert model.finder.latent_dim == 7
    draws = model.objective.draw(4)
    phi = [v.value for v in model.finder.trainable_variables]
    np.testing.assert_allclose(model.synthesis(phi, draws),
                               generator([draws["z"], draws["labels"]]), rtol=1e-6)
    model.compile()
    x, y = tiny.data(16)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    with pytest.raises(ValueError, match="latent_space='w' needs.*mapping"):
        keras_mgr.wrap(tiny.backbone(), tiny.generator(), latent_space="w")
