"""Pseudo consistency regularization (PCR): the loss synthetic images feed."""

import keras
from keras import ops

from keras_mgr.augment import ViewAugmentation
from keras_mgr.utils import full_precision

CONSISTENCIES = ("l2", "cosine", "simsiam")


@keras.saving.register_keras_serializable(package="keras_mgr")
class MGRRegularizer(keras.layers.Layer):
    """Label-free consistency between the features of two views of an image.

    Given backbone features of a batch of views laid out as
    `[view_1 (n rows); view_2 (n rows)]`, returns the scalar

    - `"l2"`: `mean((f1 - f2)^2)`, the mean squared distance per feature;
    - `"cosine"`: `mean(2 - 2 cos(f1, f2))`, the squared distance of the
      L2-normalised features;
    - `"simsiam"`: `mean(2 - 2 cos(p1, sg(z2)) + 2 - 2 cos(p2, sg(z1))) / 2`
      with projector `z = proj(f)` and predictor `p = pred(z)` (Chen & He, 2021).

    The loss only ever reaches the backbone (and the SimSiam heads): the
    classifier head is not part of it. `views()` makes the two views with the
    layer's `augmentation`.

    Args:
        consistency: one of `"l2"`, `"cosine"`, `"simsiam"`.
        augmentation: a layer or callable making one random view of a batch,
            differentiable with respect to the images. Defaults to
            `ViewAugmentation(value_range=value_range)`.
        value_range: `(low, high)` of the synthetic images (default augmentation).
        projection_dim: int, SimSiam projector width.
        prediction_dim: int, SimSiam predictor bottleneck width.
        seed: int or None, seed of the default augmentation.

    Example:

    >>> reg = MGRRegularizer("l2")
    >>> float(reg(keras.ops.ones((4, 8))))
    0.0

    Reference: Yamaguchi et al., NeurIPS 2023, Eq. (3) (PCR).
    """

    def __init__(
        self,
        consistency="l2",
        augmentation=None,
        value_range=(-1.0, 1.0),
        projection_dim=256,
        prediction_dim=64,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if consistency not in CONSISTENCIES:
            raise ValueError(
                f"consistency must be one of {CONSISTENCIES}. Received: "
                f"consistency={consistency!r}"
            )
        self.consistency = consistency
        self.value_range = tuple(value_range)
        self.projection_dim = projection_dim
        self.prediction_dim = prediction_dim
        self.seed = seed
        if augmentation is None:
            # seed + 1: a stream apart from the latents drawn with `seed`.
            augmentation = ViewAugmentation(
                value_range=self.value_range, seed=None if seed is None else seed + 1)
        self.augmentation = augmentation
        if consistency == "simsiam":
            self.projector = keras.Sequential(
                [
                    keras.layers.Dense(projection_dim, use_bias=False),
                    keras.layers.LayerNormalization(),
                    keras.layers.ReLU(),
                    keras.layers.Dense(projection_dim),
                ],
                name="projector",
            )
            self.predictor = keras.Sequential(
                [
                    keras.layers.Dense(prediction_dim, use_bias=False),
                    keras.layers.LayerNormalization(),
                    keras.layers.ReLU(),
                    keras.layers.Dense(projection_dim),
                ],
                name="predictor",
            )

    def build(self, features_shape):
        if self.consistency == "simsiam":
            self.projector.build(features_shape)
            self.predictor.build((None, self.projection_dim))
        self.built = True

    # Views ---------------------------------------------------------------
    def draw_views(self, images):
        """Random parameters of both views, or None if the augmentation draws its own.

        Drawing ahead of time makes the loss a deterministic function of the
        images, which the finite-difference checks of the meta step rely on.
        """
        if not hasattr(self.augmentation, "get_random_transformation"):
            return None
        draw = self.augmentation.get_random_transformation
        return (draw(images, training=True), draw(images, training=True))

    def views(self, images, transformations=None):
        """Both views of `images`, concatenated along the batch axis."""
        aug = self.augmentation
        if transformations is None:
            return ops.concatenate([aug(images, training=True), aug(images, training=True)], 0)
        t1, t2 = transformations
        return ops.concatenate(
            [aug.transform_images(images, t1, training=True),
             aug.transform_images(images, t2, training=True)],
            axis=0,
        )

    # Consistency ---------------------------------------------------------
    def call(self, features, stop_gradient=None):
        """Consistency loss of `features = [f(view_1); f(view_2)]`.

        `stop_gradient` is the stop used for the SimSiam targets; the meta step
        passes one that stops only the inner derivative (see `MGRModel`).
        """
        stop_gradient = stop_gradient or ops.stop_gradient
        features = full_precision(features)
        f1, f2 = ops.split(features, 2, axis=0)
        if self.consistency == "l2":
            return ops.mean(ops.square(f1 - f2))
        if self.consistency == "cosine":
            return ops.mean(2.0 - 2.0 * _cosine(f1, f2))
        z = full_precision(self.projector(features))
        p = full_precision(self.predictor(z))
        z1, z2 = ops.split(z, 2, axis=0)
        p1, p2 = ops.split(p, 2, axis=0)
        return ops.mean(
            2.0 - _cosine(p1, stop_gradient(z2)) - _cosine(p2, stop_gradient(z1))
        )

    def compute_output_shape(self, features_shape):
        return ()

    def get_config(self):
        return {
            **super().get_config(),
            "consistency": self.consistency,
            "augmentation": keras.saving.serialize_keras_object(self.augmentation),
            "value_range": self.value_range,
            "projection_dim": self.projection_dim,
            "prediction_dim": self.prediction_dim,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["augmentation"] = keras.saving.deserialize_keras_object(config["augmentation"])
        return cls(**config)


def _cosine(a, b, epsilon=1e-12):
    a = a / ops.sqrt(ops.sum(ops.square(a), axis=-1, keepdims=True) + epsilon)
    b = b / ops.sqrt(ops.sum(ops.square(b), axis=-1, keepdims=True) + epsilon)
    return ops.sum(a * b, axis=-1)
