"""ResNet-18 / ResNet-34 backbones (core Keras ships neither), images -> pooled features."""

import os

import keras
from keras import layers

_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def _basic_block(h, filters, stride, momentum, name):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""
    shortcut = h
    if stride != 1 or h.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                 name=f"{name}_proj")(h)
        shortcut = layers.BatchNormalization(momentum=momentum, name=f"{name}_proj_bn")(shortcut)
    h = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      name=f"{name}_conv1")(h)
    h = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn1")(h)
    h = layers.ReLU(name=f"{name}_relu1")(h)
    h = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(h)
    h = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn2")(h)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([h, shortcut]))


def resnet(depth=18, image_shape=(224, 224, 3), small_inputs=None, width=64,
           momentum=0.9, weights=None, name=None):
    """ResNet with basic blocks (He et al., 2016), the paper's ResNet-18 setting.

    Args:
        depth: 18 or 34.
        image_shape: `(height, width, channels)`.
        small_inputs: use a 3x3 stride-1 stem without max pooling (the CIFAR
            variant) instead of the 7x7 stride-2 stem and pooling. Defaults to
            True for images smaller than 64 pixels.
        width: filters of the first stage (64 in the paper); stages double it.
        momentum: BatchNorm momentum; 0.9 because a small dataset gives few
            steps per epoch (see `small_cnn`).
        weights: None (random) or the path of a local `.weights.h5` file saved
            from this architecture (no download ever happens).
        name: model name; defaults to `resnet{depth}`.

    Returns:
        A functional `keras.Model` mapping images to `(8 * width,)` features.

    Example:

    >>> resnet(18, (32, 32, 3), width=8).output_shape
    (None, 64)
    """
    if depth not in _BLOCKS:
        raise ValueError(f"depth must be one of {sorted(_BLOCKS)}. Received: depth={depth!r}")
    if len(image_shape) != 3:
        raise ValueError(
            f"image_shape must be (height, width, channels). Received: {image_shape!r}")
    if small_inputs is None:
        small_inputs = min(image_shape[:2]) < 64
    inputs = keras.Input(image_shape)
    if small_inputs:
        h = layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    else:
        h = layers.Conv2D(width, 7, strides=2, padding="same", use_bias=False,
                          name="stem_conv")(inputs)
    h = layers.BatchNormalization(momentum=momentum, name="stem_bn")(h)
    h = layers.ReLU(name="stem_relu")(h)
    if not small_inputs:
        h = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(h)
    for stage, blocks in enumerate(_BLOCKS[depth]):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            h = _basic_block(h, width * 2**stage, stride, momentum,
                             name=f"stage{stage + 1}_block{block + 1}")
    outputs = layers.GlobalAveragePooling2D(name="pool")(h)
    model = keras.Model(inputs, outputs, name=name or f"resnet{depth}")
    if weights is not None:
        if not os.path.exists(weights):
            raise FileNotFoundError(
                f"No weights file at {weights!r}: pass the path of a local .weights.h5 "
                "saved from this architecture (keras_mgr never downloads weights).")
        model.load_weights(weights)
    return model


def resnet18(image_shape=(224, 224, 3), **kwargs):
    """ResNet-18 backbone; see `resnet` for the arguments.

    Example:

    >>> resnet18((32, 32, 3), width=8).output_shape
    (None, 64)
    """
    return resnet(18, image_shape, **kwargs)
