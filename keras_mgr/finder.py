"""The finder network F_phi of meta pseudo sampling (MPS)."""

import keras
from keras import ops


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
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.conditional = bool(conditional)
        if max_shift is not None and not float(max_shift) > 0:
            raise ValueError(f"max_shift must be > 0 or None. Received: max_shift={max_shift!r}")
        self.max_shift = None if max_shift is None else float(max_shift)
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
        z, labels = inputs
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
