import math

import keras


@keras.saving.register_keras_serializable(package="keras_mgr")
class ConditionalGenerator(keras.Model):
    """Class-conditional image generator following the generator protocol.

    A functional model mapping `[z, labels]` to images: the label embedding is
    concatenated to `z`, a Dense layer makes a small feature map (4 to 7 pixels
    a side), and blocks of nearest-neighbour upsampling, 3x3 convolution,
    BatchNorm and ReLU grow it to `image_shape`; a 3x3 convolution and `tanh`
    give the channels, rescaled to `output_range`.

    Args:
        latent_dim: int, size of `z`.
        num_classes: int, number of class labels.
        image_shape: tuple `(height, width, channels)` of the output images.
            Height and width must be a number from 4 to 7 times a power of two
            (e.g. 28, 32, 64).
        base_filters: int, filters of the last upsampling block; each earlier
            block has twice as many.
        output_range: tuple `(low, high)` of the output pixel values.
        batchnorm_momentum: float, BatchNorm momentum (0.9 suits the few
            steps small-data training takes).

    Example:

    >>> g = ConditionalGenerator(latent_dim=64, num_classes=10,
    ...                          image_shape=(32, 32, 1))
    >>> images = g([keras.random.normal((8, 64)), keras.ops.arange(8)])
    >>> images.shape
    TensorShape([8, 32, 32, 1])
    """

    def __init__(
        self,
        latent_dim=64,
        num_classes=10,
        image_shape=(32, 32, 1),
        base_filters=32,
        output_range=(-1.0, 1.0),
        batchnorm_momentum=0.9,
        **kwargs,
    ):
        image_shape = tuple(int(d) for d in image_shape)
        output_range = tuple(float(v) for v in output_range)
        num_upsamples, start = _upsampling_plan(image_shape)
        low, high = output_range
        if not low < high:
            raise ValueError(
                "output_range must be (low, high) with low < high. "
                f"Received: output_range={output_range}"
            )

        z = keras.Input((latent_dim,), name="z")
        labels = keras.Input((), dtype="int32", name="labels")
        embedded = keras.layers.Embedding(
            num_classes, latent_dim, name="label_embedding"
        )(labels)
        x = keras.layers.Concatenate(name="z_and_label")([z, embedded])
        filters = base_filters * 2**num_upsamples
        x = keras.layers.Dense(start[0] * start[1] * filters, name="stem")(x)
        x = keras.layers.Reshape((start[0], start[1], filters))(x)
        x = keras.layers.BatchNormalization(momentum=batchnorm_momentum)(x)
        x = keras.layers.ReLU()(x)
        for i in range(num_upsamples):
            filters //= 2
            x = keras.layers.UpSampling2D(2, name=f"up{i}")(x)
            x = keras.layers.Conv2D(
                filters, 3, padding="same", use_bias=False, name=f"conv{i}"
            )(x)
            x = keras.layers.BatchNormalization(momentum=batchnorm_momentum)(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.Conv2D(image_shape[-1], 3, padding="same", name="to_image")(x)
        x = keras.layers.Activation("tanh")(x)
        images = keras.layers.Rescaling(
            scale=(high - low) / 2.0, offset=(high + low) / 2.0, name="to_range"
        )(x)
        super().__init__(inputs=[z, labels], outputs=images, **kwargs)

        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.image_shape = image_shape
        self.base_filters = base_filters
        self.output_range = output_range
        self.batchnorm_momentum = batchnorm_momentum

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "latent_dim": self.latent_dim,
            "num_classes": self.num_classes,
            "image_shape": self.image_shape,
            "base_filters": self.base_filters,
            "output_range": self.output_range,
            "batchnorm_momentum": self.batchnorm_momentum,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _upsampling_plan(image_shape):
    """Number of 2x steps and start size so that start * 2**n == (H, W)."""
    if len(image_shape) != 3:
        raise ValueError(
            "image_shape must be (height, width, channels). "
            f"Received: image_shape={image_shape}"
        )
    height, width, _ = image_shape
    n = 0
    while height % 2**(n + 1) == 0 and width % 2**(n + 1) == 0 and (
        min(height, width) // 2**(n + 1) >= 4
    ):
        n += 1
    start = (height // 2**n, width // 2**n)
    if max(start) > 7 or min(start) < 4 or math.prod(start) == 0:
        raise ValueError(
            "image_shape height and width must each be 4 to 7 times a shared "
            f"power of two (e.g. 28, 32, 64). Received: image_shape={image_shape}"
        )
    return n, start


def conditional_generator(latent_dim, num_classes, image_shape, **kwargs):
    """Build a `ConditionalGenerator` (the generator protocol's reference model).

    Args:
        latent_dim: int, size of `z`.
        num_classes: int, number of class labels.
        image_shape: tuple `(height, width, channels)`.
        **kwargs: other `ConditionalGenerator` arguments (`base_filters`,
            `output_range`, `name`, ...).

    Returns:
        A `ConditionalGenerator`; it carries `latent_dim`, `num_classes`,
        `output_range` and `image_shape`, and they survive `.keras` saving.
    """
    return ConditionalGenerator(
        latent_dim=latent_dim,
        num_classes=num_classes,
        image_shape=image_shape,
        **kwargs,
    )
