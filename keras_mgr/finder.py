"""The finder network F_phi of meta pseudo sampling (MPS)."""

import keras
from keras import ops

from keras_mgr import checks, option_checks


@keras.saving.register_keras_serializable(package="keras_mgr")
class Finder(keras.Model):
    """Residual MLP mapping uniform latents to the latents MGR samples.

    `finder([z, labels]) = z + MLP(z [, one_hot(labels)])`. The last layer is
    zero-initialised, so a fresh finder is exactly the identity: training starts
    at the generator's uniform sampling and the meta step moves it from there.
    With `max_shift`, each residual is scaled down to norm at most `max_shift`
    (a trust region around `z`): the finder then cannot carry latents off the
    region the generator was trained on (`||z|| ~ sqrt(latent_dim)`).

    Args:
        latent_dim: int, size of the generator latent the finder works in.
        num_classes: int, number of classes (used when `conditional`).
        hidden_dim: int, width of the hidden layers.
        num_layers: int, number of hidden layers.
        conditional: bool, whether the MLP also sees the class label.
        max_shift: float or None, largest `||finder(z) - z||` (None: unbounded).

    Each argument is checked (ValueError quoting it): a width of 2.5 or a
    depth of -1 would otherwise build a different finder without a word.

    Example:

    >>> finder = Finder(latent_dim=4, num_classes=3)
    >>> z = keras.random.normal((2, 4))
    >>> bool(keras.ops.all(finder([z, keras.ops.array([0, 2])]) == z))
    True

    Reference: Yamaguchi et al., "Regularizing Neural Networks with
    Meta-Learning Generative Models", NeurIPS 2023, Sec. 4.3.
    """

    def __init__(
        self,
        latent_dim,
        num_classes,
        hidden_dim=256,
        num_layers=2,
        conditional=True,
        max_shift=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        count = checks.number
        self.latent_dim = count("latent_dim", latent_dim, 1, integer=True)
        self.num_classes = count("num_classes", num_classes, 1, integer=True)
        self.hidden_dim = count("hidden_dim", hidden_dim, 1, integer=True)
        self.num_layers = count("num_layers", num_layers, 1, integer=True)
        self.conditional = option_checks.flag("conditional", conditional)
        self.max_shift = option_checks.max_shift("max_shift", max_shift)
        self.hidden = [
            keras.layers.Dense(self.hidden_dim, activation="relu", name=f"hidden_{i}",
                               dtype=self.dtype_policy)
            for i in range(self.num_layers)
        ]
        self.out = keras.layers.Dense(
            self.latent_dim, kernel_initializer="zeros", name="residual",
            dtype=self.dtype_policy,
        )
        self.build([(None, self.latent_dim), (None,)])

    def build(self, input_shape):
        width = self.latent_dim + (self.num_classes if self.conditional else 0)
        for layer in self.hidden:
            layer.build((None, width))
            width = self.hidden_dim
        self.out.build((None, width))
        self.built = True

    def call(self, inputs):
        z, labels = ops.convert_to_tensor(inputs[0]), inputs[1]
        h = z
        if self.conditional:
            onehot = ops.one_hot(ops.cast(labels, "int32"), self.num_classes, dtype=z.dtype)
            h = ops.concatenate([z, onehot], axis=-1)
        for layer in self.hidden:
            h = layer(h)
        shift = self.out(h)
        if self.max_shift is not None:
            norm = ops.sqrt(ops.sum(ops.square(shift), axis=-1, keepdims=True) + 1e-12)
            shift = shift * ops.minimum(1.0, self.max_shift / norm)
        return z + shift

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "num_classes": self.num_classes,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "conditional": self.conditional,
            "max_shift": self.max_shift,
        }
