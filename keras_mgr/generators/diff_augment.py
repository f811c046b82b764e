import keras
from keras import ops

_POLICIES = ("color", "translation", "cutout")


@keras.saving.register_keras_serializable(package="keras_mgr")
class DiffAugment(keras.layers.Layer):
    """Differentiable augmentation for GAN training on little data.

    Applied to real and generated images before the discriminator, it keeps
    the discriminator from memorising a small training set while letting
    gradients reach the generator. Every op is differentiable with respect to
    the images: colour (brightness shift, saturation and contrast scaling),
    translation with zero padding (written as one-hot matrix products, so it
    also compiles with XLA) and cutout of one square. Each image draws its own
    parameters. Pixel values are assumed to span about `[-1, 1]`.

    Args:
        policy: str, comma-separated subset of "color", "translation",
            "cutout"; "" turns the layer into the identity.
        translation_ratio: float, largest shift as a fraction of the size.
        cutout_ratio: float, side of the cut square as a fraction of the size.
        seed: int or `None`, seed of the random draws.

    Input shape: `(batch, height, width, channels)`.
    Output shape: same.

    Example:

    >>> augment = DiffAugment("color,translation,cutout", seed=0)
    >>> augment(keras.random.uniform((4, 32, 32, 3), -1, 1)).shape
    TensorShape([4, 32, 32, 3])

    Reference:
        Zhao, Liu, Lin, Zhu, Han, "Differentiable Augmentation for
        Data-Efficient GAN Training", NeurIPS 2020.
    """

    def __init__(
        self,
        policy="color,translation,cutout",
        translation_ratio=0.125,
        cutout_ratio=0.5,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        parts = [p.strip() for p in policy.split(",") if p.strip()]
        unknown = [p for p in parts if p not in _POLICIES]
        if unknown:
            raise ValueError(
                f"policy may only name {_POLICIES}. Received: policy={policy!r}"
            )
        self.policy = policy
        self.parts = parts
        self.translation_ratio = translation_ratio
        self.cutout_ratio = cutout_ratio
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images):
        if not self.parts:
            return images
        params = self.get_random_transformation(ops.shape(images))
        return self.transform_images(images, params)

    def get_random_transformation(self, shape):
        """Draw per-image parameters for a batch of `shape` (NHWC)."""
        batch, height, width = shape[0], shape[1], shape[2]
        sg = self.seed_generator
        params = {}
        if "color" in self.parts:
            params["brightness"] = keras.random.uniform((batch, 1, 1, 1), -0.5, 0.5, seed=sg)
            params["saturation"] = keras.random.uniform((batch, 1, 1, 1), 0.0, 2.0, seed=sg)
            params["contrast"] = keras.random.uniform((batch, 1, 1, 1), 0.5, 1.5, seed=sg)
        if "translation" in self.parts:
            pad_h = int(height * self.translation_ratio + 0.5)
            pad_w = int(width * self.translation_ratio + 0.5)
            params["shift"] = ops.stack(
                [
                    keras.random.randint((batch,), -pad_h, pad_h + 1, seed=sg),
                    keras.random.randint((batch,), -pad_w, pad_w + 1, seed=sg),
                ],
                axis=1,
            )
        if "cutout" in self.parts:
            cut_h = int(height * self.cutout_ratio + 0.5)
            cut_w = int(width * self.cutout_ratio + 0.5)
            params["cutout"] = ops.stack(
                [
                    keras.random.randint((batch,), -(cut_h // 2), height - cut_h // 2, seed=sg),
                    keras.random.randint((batch,), -(cut_w // 2), width - cut_w // 2, seed=sg),
                ],
                axis=1,
            )
        return params

    def transform_images(self, images, params):
        """Apply parameters from `get_random_transformation` to `images`."""
        x = ops.convert_to_tensor(images)
        height, width = x.shape[1], x.shape[2]
        if "brightness" in params:
            x = x + ops.cast(params["brightness"], x.dtype)
            if x.shape[-1] > 1:
                mean = ops.mean(x, axis=-1, keepdims=True)
                x = (x - mean) * ops.cast(params["saturation"], x.dtype) + mean
            mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
            x = (x - mean) * ops.cast(params["contrast"], x.dtype) + mean
        if "shift" in params:
            # out[i, j] = in[i - dy, j - dx], zero where that falls outside.
            rows = _shift_matrix(params["shift"][:, 0], height, x.dtype)
            cols = _shift_matrix(params["shift"][:, 1], width, x.dtype)
            x = ops.einsum("bih,bhwc->biwc", rows, x)
            x = ops.einsum("bjw,biwc->bijc", cols, x)
        if "cutout" in params:
            corner = ops.convert_to_tensor(params["cutout"], "int32")
            top, left = corner[:, 0][:, None], corner[:, 1][:, None]
            cut_h = int(height * self.cutout_ratio + 0.5)
            cut_w = int(width * self.cutout_ratio + 0.5)
            i = ops.arange(height, dtype="int32")[None, :]
            j = ops.arange(width, dtype="int32")[None, :]
            inside_i = ops.logical_and(i >= top, i < top + cut_h)  # (b, h)
            inside_j = ops.logical_and(j >= left, j < left + cut_w)  # (b, w)
            cut = ops.logical_and(inside_i[:, :, None], inside_j[:, None, :])
            x = x * ops.cast(ops.logical_not(cut), x.dtype)[..., None]
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "policy": self.policy,
                "translation_ratio": self.translation_ratio,
                "cutout_ratio": self.cutout_ratio,
                "seed": self.seed,
            }
        )
        return config


def _shift_matrix(shift, size, dtype):
    """(batch, size, size) matrices M with M[b, i, i - shift[b]] = 1."""
    source = ops.arange(size, dtype="int32")[None, :] - ops.cast(shift, "int32")[:, None]
    valid = ops.logical_and(source >= 0, source < size)
    one_hot = ops.one_hot(ops.where(valid, source, 0), size, dtype=dtype)
    return one_hot * ops.cast(valid, dtype)[..., None]
