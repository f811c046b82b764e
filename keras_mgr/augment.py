"""Differentiable view augmentation for pseudo consistency regularization."""

import keras
import numpy as np
from keras import ops

from keras_mgr import option_checks, random


@keras.saving.register_keras_serializable(package="keras_mgr")
class ViewAugmentation(keras.layers.Layer):
    """Random views of a batch, differentiable with respect to the images.

    PCR compares the features of two random views of each synthetic image, and
    the finder's meta-gradient flows back through those views to the generator
    latents, so every transform here has a non-zero image gradient and lowers
    to XLA (no `ImageProjectiveTransformV3`, no hue/saturation ops).

    Randomness is drawn once by `get_random_transformation` and applied by the
    deterministic `transform_images`, as in Keras's augmentation layers.

    Args:
        flip: bool, random horizontal flip with probability 0.5.
        translate: float in [0, 1), largest shift as a fraction of height and
            width; border pixels are repeated (pad + random crop).
        brightness: float, largest additive shift as a fraction of the value
            range width.
        contrast: float in [0, 1), contrast factor drawn in
            `[1 - contrast, 1 + contrast]` around each image's mean.
        value_range: `(low, high)` of the images, used to scale brightness.
        seed: int or None.

    Input shape: `(batch, height, width, channels)`. Output shape: the same.

    Example:

    >>> aug = ViewAugmentation(translate=0.125, seed=0)
    >>> aug(keras.ops.zeros((2, 8, 8, 3))).shape
    TensorShape([2, 8, 8, 3])
    """

    def __init__(
        self,
        flip=True,
        translate=0.125,
        brightness=0.1,
        contrast=0.1,
        value_range=(-1.0, 1.0),
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= translate < 1.0:
            raise ValueError(f"translate must be in [0, 1). Received: translate={translate}")
        if not 0.0 <= contrast < 1.0:
            raise ValueError(f"contrast must be in [0, 1). Received: contrast={contrast}")
        if brightness < 0:
            raise ValueError(f"brightness must be >= 0. Received: brightness={brightness}")
        self.flip = option_checks.flag("flip", flip)  # "no" would be truthy
        self.translate = translate
        self.brightness = brightness
        self.contrast = contrast
        self.value_range = tuple(value_range)
        self.seed = seed
        self.seed_state = random.seed_state(self, seed)

    def get_random_transformation(self, images, training=True, seed=None):
        """Draws per-image parameters: a dict of tensors of leading size batch."""
        seed = random.next_seed(self.seed_state) if seed is None else seed
        batch = ops.shape(images)[0]
        max_dy = int(self.translate * images.shape[1])
        max_dx = int(self.translate * images.shape[2])
        uniform = random.uniform((batch, 5), seed)
        return {
            "flip": uniform[:, 0] < (0.5 if self.flip else 0.0),
            # Integer shifts in [-max, max]: uniform * (2 max + 1) floors evenly.
            "dy": ops.cast(ops.floor(uniform[:, 1] * (2 * max_dy + 1)), "int32") - max_dy,
            "dx": ops.cast(ops.floor(uniform[:, 2] * (2 * max_dx + 1)), "int32") - max_dx,
            "brightness": (2.0 * uniform[:, 3] - 1.0) * self.brightness,
            "contrast": 1.0 + (2.0 * uniform[:, 4] - 1.0) * self.contrast,
        }

    def transform_images(self, images, transformation, training=True):
        """Applies `transformation` (from `get_random_transformation`)."""
        if not training:
            return images
        dtype = images.dtype
        t = transformation
        images = ops.where(
            ops.reshape(t["flip"], (-1, 1, 1, 1)), ops.flip(images, axis=2), images
        )
        images = _shift(images, t["dy"], axis=1)
        images = _shift(images, t["dx"], axis=2)
        low, high = self.value_range
        delta = ops.cast(t["brightness"] * (high - low), dtype)
        factor = ops.cast(t["contrast"], dtype)
        mean = ops.mean(images, axis=(1, 2, 3), keepdims=True)
        images = (images - mean) * ops.reshape(factor, (-1, 1, 1, 1)) + mean
        return images + ops.reshape(delta, (-1, 1, 1, 1))

    def call(self, images, training=True):
        if not training:
            return images
        return self.transform_images(images, self.get_random_transformation(images))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "flip": self.flip,
            "translate": self.translate,
            "brightness": self.brightness,
            "contrast": self.contrast,
            "value_range": self.value_range,
            "seed": self.seed,
        }


def _shift(images, offsets, axis):
    """Shifts each image by its own integer offset along `axis`, repeating edges."""
    size = images.shape[axis]
    index = ops.clip(ops.arange(size, dtype="int32")[None, :] - offsets[:, None], 0, size - 1)
    index = ops.reshape(index, (-1, size, 1, 1) if axis == 1 else (-1, 1, size, 1))
    return ops.take_along_axis(images, ops.broadcast_to(index, ops.shape(images)), axis=axis)


def _image_gradient(augmentation, images):
    """`(d sum(views^2) / d images, views)`; the gradient None where it does
    not exist (TensorFlow) or is zero everywhere (JAX, which has no None)."""
    def total(x):
        views = augmentation(x, training=True)
        return ops.sum(ops.square(ops.cast(views, "float32"))), views

    if keras.backend.backend() == "jax":
        import jax

        with keras.StatelessScope():  # its random streams may advance
            grad, views = jax.grad(total, has_aux=True)(images)
        return (grad if np.any(np.asarray(grad)) else None), views
    import tensorflow as tf

    images = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(images)
        value, views = total(images)
    return tape.gradient(value, images), views


def check_differentiable(augmentation, image_shape, dtype="float32"):
    """Raises if `augmentation` blocks the gradient with respect to its input.

    Core Keras's RandomHue / RandomSaturation (and colour jitter built on them)
    return `None` image gradients without an error; through PCR that would
    silently cut the finder's meta-gradient.
    """
    images = np.random.default_rng(0).uniform(size=(2,) + tuple(image_shape)).astype(dtype)
    grad, views = _image_gradient(augmentation, images)
    name = getattr(augmentation, "name", type(augmentation).__name__)
    if grad is None:
        raise ValueError(
            f"The view augmentation {name!r} is not differentiable with respect to "
            "its input images (its gradient is None), so the finder's meta-gradient "
            "could not flow through the synthetic images. Known culprits: "
            "RandomHue, RandomSaturation, RandomColorJitter with those factors. "
            f"Received: augmentation={augmentation!r}, image_shape={tuple(image_shape)}"
        )
    if tuple(views.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"The view augmentation {name!r} changes the image shape: "
            f"Received: input shape {tuple(image_shape)}, output shape "
            f"{tuple(views.shape[1:])}"
        )
