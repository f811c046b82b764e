"""The networks of the PyTorch reference step, built in Keras (speed.py --networks=peer).

The PyTorch reference times one MGR step with these shapes (32x32x1 images,
batch 64 real + 64 synthetic); `speed.py --networks=peer` builds the same
networks so that the two step times can be set side by side:

- feature extractor (306,784 trainable parameters): conv3x3(1->32)+BN+ReLU;
  3 basic residual blocks (widths 32, 64, 128; stride 1, 2, 2; a 1x1
  conv+BN projection where the shape changes); global average pool;
- head (1,290): Dense(10);
- generator (427,585, frozen): concat(z (64), Embedding(10, 64)(y)) ->
  Dense(4*4*128, no bias) -> BN+ReLU -> 3 ConvTranspose(k4, s2) (64, 32, 1
  channels; BN+ReLU between) -> tanh;
- finder (16,576): z + Dense(64)(ReLU(Dense(128)(z))), unconditional, last
  layer zero.

The backbone's layers follow `keras.config.image_data_format()` (channels
last unless set otherwise). BatchNorm uses PyTorch's defaults (epsilon 1e-5,
momentum 0.1, i.e. Keras momentum 0.9). Differences that do not change the
arithmetic: Keras pads a stride-2 3x3 convolution of an even size on one
side ("same"), PyTorch on both; the views are
`ViewAugmentation(translate=0.125)` with flip and no brightness/contrast
(edge padding; the reference pads with zeros); the PCR distance is a mean
over features where the reference sums them (a factor of 128 in the loss,
none in the cost).

Example:

>>> backbone = peer_backbone((32, 32, 1))
>>> count(backbone.trainable_weights)
306784
"""

import keras
import numpy as np

LATENT_DIM = 64
NUM_CLASSES = 10
FINDER_HIDDEN = 128


def _bn(x, name):
    axis = 1 if keras.config.image_data_format() == "channels_first" else -1
    return keras.layers.BatchNormalization(axis=axis, momentum=0.9, epsilon=1e-5, name=name)(x)


def _conv(x, filters, kernel, stride, name):
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same",
                               use_bias=False, name=name)(x)


def _block(x, filters, stride, name):
    out = keras.layers.ReLU()(_bn(_conv(x, filters, 3, stride, name + "_conv1"), name + "_bn1"))
    out = _bn(_conv(out, filters, 3, 1, name + "_conv2"), name + "_bn2")
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _bn(_conv(x, filters, 1, stride, name + "_proj"), name + "_proj_bn")
    return keras.layers.ReLU()(keras.layers.Add()([out, shortcut]))


def peer_backbone(image_shape, widths=(32, 64, 128)):
    """Feature extractor: stem, one basic block per width, global average pool."""
    inputs = keras.Input(image_shape)
    x = keras.layers.ReLU()(_bn(_conv(inputs, 32, 3, 1, "stem_conv"), "stem_bn"))
    for i, width in enumerate(widths):
        x = _block(x, width, 1 if i == 0 else 2, f"block{i + 1}")
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="peer_backbone")


def peer_generator(channels=1):
    """Frozen conditional generator `[z, labels] -> images` in [-1, 1], 32x32."""
    z = keras.Input((LATENT_DIM,))
    labels = keras.Input((), dtype="int32")
    embedded = keras.layers.Embedding(NUM_CLASSES, LATENT_DIM)(labels)
    x = keras.layers.Dense(4 * 4 * 128, use_bias=False)(
        keras.layers.Concatenate()([z, embedded]))
    x = keras.layers.ReLU()(_bn(keras.layers.Reshape((4, 4, 128))(x), "gen_bn0"))
    for i, filters in enumerate((64, 32)):
        x = keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same",
                                         use_bias=False)(x)
        x = keras.layers.ReLU()(_bn(x, f"gen_bn{i + 1}"))
    x = keras.layers.Conv2DTranspose(channels, 4, strides=2, padding="same",
                                     activation="tanh")(x)
    generator = keras.Model([z, labels], x, name="peer_generator")
    generator.latent_dim, generator.num_classes = LATENT_DIM, NUM_CLASSES
    generator.output_range = (-1.0, 1.0)
    generator.trainable = False
    return generator


def peer_wrap_options():
    """`wrap()` arguments that give the reference's finder, views and rates."""
    from keras_mgr.augment import ViewAugmentation

    return {"finder_hidden_dim": FINDER_HIDDEN, "finder_num_layers": 1,
            "finder_conditional": False, "finder_learning_rate": 1e-3,
            "augmentation": ViewAugmentation(translate=0.125, brightness=0.0, contrast=0.0,
                                             seed=0)}


def count(weights):
    return int(sum(np.prod(w.shape) for w in weights))
