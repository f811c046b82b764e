import keras

from keras_mgr.generators.conditional_generator import _upsampling_plan


@keras.saving.register_keras_serializable(package="keras_mgr")
class ProjectionDiscriminator(keras.Model):
    """Class-conditional discriminator with a projection head.

    Spectrally normalised convolutions turn an image into a feature vector
    `phi(x)`; the output is `w . phi(x) + embed(y) . phi(x)` (one logit per
    image), the projection form of Miyato and Koyama (2018).

    `keras.layers.SpectralNormalization` renormalises each kernel in place
    whenever it is called with `training=True` (a projection after every
    update rather than a reparameterisation): call the discriminator with
    `training=True` once per discriminator step.

    Args:
        num_classes: int, number of class labels.
        image_shape: tuple `(height, width, channels)` of the input images.
        base_filters: int, filters of the first block; each later block
            doubles them.

    Example:

    >>> d = ProjectionDiscriminator(num_classes=10, image_shape=(32, 32, 1))
    >>> d([keras.random.normal((8, 32, 32, 1)), keras.ops.arange(8)]).shape
    TensorShape([8, 1])

    Reference:
        Miyato and Koyama, "cGANs with Projection Discriminator", ICLR 2018.
    """

    def __init__(
        self, num_classes=10, image_shape=(32, 32, 1), base_filters=32, **kwargs
    ):
        image_shape = tuple(int(d) for d in image_shape)
        num_downsamples, _ = _upsampling_plan(image_shape)

        def sn(layer):
            return keras.layers.SpectralNormalization(layer, name=f"sn_{layer.name}")

        images = keras.Input(image_shape, name="images")
        labels = keras.Input((), dtype="int32", name="labels")
        x = images
        filters = base_filters
        for i in range(num_downsamples):
            x = sn(keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{i}"))(x)
            x = keras.layers.LeakyReLU(0.2)(x)
            x = sn(
                keras.layers.Conv2D(
                    filters * 2, 4, strides=2, padding="same", name=f"down{i}"
                )
            )(x)
            x = keras.layers.LeakyReLU(0.2)(x)
            filters *= 2
        # Sum pooling (SNGAN): with every layer 1-Lipschitz, averaging would
        # keep the logits too small for the hinge loss to separate.
        features = keras.layers.GlobalAveragePooling2D()(x)
        features = keras.layers.Rescaling(x.shape[1] * x.shape[2], name="phi")(features)
        unconditional = sn(keras.layers.Dense(1, name="linear"))(features)
        # One-hot + bias-free Dense is an embedding that SpectralNormalization
        # can wrap (it casts outputs to the input dtype: int for raw labels).
        one_hot = keras.layers.CategoryEncoding(
            num_classes, output_mode="one_hot", name="one_hot"
        )(labels)
        embedded = sn(
            keras.layers.Dense(filters, use_bias=False, name="label_embedding")
        )(one_hot)
        projection = keras.layers.Dot(axes=1, name="projection")([embedded, features])
        logits = keras.layers.Add(name="logits")([unconditional, projection])
        super().__init__(inputs=[images, labels], outputs=logits, **kwargs)

        self.num_classes = int(num_classes)
        self.image_shape = image_shape
        self.base_filters = base_filters

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "image_shape": self.image_shape,
            "base_filters": self.base_filters,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
