"""A small residual CNN for small images (the demo and benchmark backbone)."""

import keras
from keras import layers


def small_cnn(image_shape=(32, 32, 1), widths=(32, 64, 128), momentum=0.9, name="small_cnn"):
    """Residual CNN: per stage, two conv-BN-ReLU with a skip, then 2x pooling.

    Returns a functional model mapping images to pooled features, as `wrap()`
    expects. BatchNorm momentum defaults to 0.9: with a few hundred images an
    epoch is a couple of steps, and Keras's 0.99 leaves the moving statistics
    unconverged (docs/keras_notes.md, "Small data").

    Args:
        image_shape: `(height, width, channels)`.
        widths: filters of each stage.
        momentum: BatchNorm momentum.
        name: model name.

    Example:

    >>> small_cnn((32, 32, 1)).output_shape
    (None, 128)
    """
    inputs = keras.Input(image_shape)
    h = inputs
    for i, width in enumerate(widths):
        h = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"stem_{i}")(h)
        h = layers.BatchNormalization(momentum=momentum, name=f"stem_bn_{i}")(h)
        h = layers.ReLU()(h)
        skip = h
        h = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv_{i}")(h)
        h = layers.BatchNormalization(momentum=momentum, name=f"bn_{i}")(h)
        h = layers.ReLU()(layers.Add()([h, skip]))
        if i < len(widths) - 1:
            h = layers.MaxPooling2D()(h)
    outputs = layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, outputs, name=name)
