import math

import keras
import numpy as np
from keras import ops

from keras_mgr import atomic_files, backend, data_checks, numerics, synthetic
from keras_mgr.generators.conditional_generator import ConditionalGenerator
from keras_mgr.generators.diff_augment import DiffAugment
from keras_mgr.generators.projection_discriminator import ProjectionDiscriminator
from keras_mgr.utils import dataset_fit_kwargs


@keras.saving.register_keras_serializable(package="keras_mgr")
class ConditionalGAN(atomic_files.AtomicSaving, keras.Model):
    """Class-conditional GAN sized for small labelled datasets.

    A `ConditionalGenerator` and a spectrally normalised
    `ProjectionDiscriminator`, trained with the hinge loss; real and generated
    images both pass through `DiffAugment` before the discriminator. An
    exponential moving average (EMA) of the generator's weights is what
    `generator`, `sample()` and `call()` use: it gives cleaner samples than
    the generator being trained. `fit()` takes batches of `(images, labels)`
    with images in `output_range`.

    Args:
        num_classes: int, number of class labels.
        image_shape: tuple `(height, width, channels)`, e.g. `(32, 32, 1)` or
            `(64, 64, 3)`.
        latent_dim: int, size of `z`.
        generator_filters: int, `base_filters` of the generator. The
            default is sized for digits on a CPU; use 32-64 for richer data.
        discriminator_filters: int, `base_filters` of the discriminator.
        augment_policy: str, `DiffAugment` policy ("" for none).
        ema_decay: float, EMA decay of the sampling generator. The first
            steps use `min(ema_decay, (1 + t) / (10 + t))` so the average
            forgets the random initialisation quickly.
        output_range: tuple `(low, high)` of image values.
        seed: int or `None`, seed of latents and augmentation.

    Example:

    >>> data = keras_mgr.datasets.load("digits", ratio=0.1)
    >>> gan = ConditionalGAN(num_classes=10, image_shape=(32, 32, 1))
    >>> gan.compile()
    >>> history = gan.fit(data.train.shuffle(1000).batch(64), epochs=2, verbose=0)  # 500
    >>> gan.sample([0, 1, 2], seed=0).shape  # NumPy
    (3, 32, 32, 1)
    >>> g = gan.generator  # EMA generator, for keras_mgr.wrap()

    Reference:
        Miyato and Koyama, "cGANs with Projection Discriminator", ICLR 2018;
        Zhao et al., "Differentiable Augmentation for Data-Efficient GAN
        Training", NeurIPS 2020.
    """

    def __init__(
        self,
        num_classes=10,
        image_shape=(32, 32, 1),
        latent_dim=64,
        generator_filters=16,
        discriminator_filters=16,
        augment_policy="color,translation,cutout",
        ema_decay=0.999,
        output_range=(-1.0, 1.0),
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(
                f"ema_decay must be in [0, 1). Received: ema_decay={ema_decay}"
            )
        self.num_classes = int(num_classes)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.latent_dim = int(latent_dim)
        self.generator_filters = generator_filters
        self.discriminator_filters = discriminator_filters
        self.augment_policy = augment_policy
        self.ema_decay = float(ema_decay)
        self.output_range = tuple(float(v) for v in output_range)
        self.seed = seed

        def make_generator(name):
            return ConditionalGenerator(
                latent_dim=self.latent_dim,
                num_classes=self.num_classes,
                image_shape=self.image_shape,
                base_filters=generator_filters,
                output_range=self.output_range,
                name=name,
            )

        self.online_generator = make_generator("online_generator")
        self.ema_generator = make_generator("ema_generator")
        self.ema_generator.set_weights(self.online_generator.get_weights())
        self.ema_generator.trainable = False
        self.discriminator = ProjectionDiscriminator(
            num_classes=self.num_classes,
            image_shape=self.image_shape,
            base_filters=discriminator_filters,
            name="discriminator",
        )
        self.diff_augment = DiffAugment(augment_policy, seed=seed, name="diff_augment")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.built = True

    @property
    def generator(self):
        """The EMA generator (non-trainable): what to hand to `wrap()`."""
        return self.ema_generator

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    def call(self, inputs, training=False):
        return self.ema_generator(inputs, training=False)

    def fit(self, x=None, *args, **kwargs):
        """`keras.Model.fit`; a `tf.data.Dataset` keeps its own order (no
        shuffle warning: batch and shuffle it yourself). Inputs are checked
        first (int class ids, batched datasets, images in `output_range`); a
        non-finite d_loss or g_loss stops training with that step's updates
        skipped."""
        data_checks.gan_data(x, args[0] if args else kwargs.get("y"), self.num_classes,
                             self.image_shape, self.output_range)
        kwargs = dataset_fit_kwargs(x, kwargs)
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), _StopOnNonFinite()]
        return super().fit(x, *args, **kwargs)

    def compile(self, g_optimizer="auto", d_optimizer="auto", **kwargs):
        """Configure training.

        Args:
            g_optimizer: generator optimizer; "auto" is
                `Adam(1e-3, beta_1=0.0, beta_2=0.999)`, which trained this GAN
                on small subsets where the common `Adam(2e-4, beta_1=0.5)`
                did not (docs/benchmarks_appendix.md, "The GAN's optimizer").
            d_optimizer: discriminator optimizer; "auto" is the same.
            **kwargs: passed to `keras.Model.compile` (e.g. `run_eagerly`).
        """
        self.g_optimizer = _get_optimizer(g_optimizer)
        self.d_optimizer = _get_optimizer(d_optimizer)
        # Keras's JAX trainer carries one optimizer's state: the discriminator's
        # (the generator's travels as extra state, `non_trainable_variables`).
        super().compile(optimizer=self.d_optimizer if backend.is_jax() else None,
                        **kwargs)
        # Built now, on exactly the variables each updates, so that `.keras`
        # files and BackupAndRestore restore their state.
        self.g_optimizer.build(self.online_generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)

    def get_compile_config(self):
        return {
            "g_optimizer": keras.saving.serialize_keras_object(self.g_optimizer),
            "d_optimizer": keras.saving.serialize_keras_object(self.d_optimizer),
        }

    def compile_from_config(self, config):
        self.compile(
            g_optimizer=keras.saving.deserialize_keras_object(config["g_optimizer"]),
            d_optimizer=keras.saving.deserialize_keras_object(config["d_optimizer"]),
        )

    def _symbolic_build(self, iterator=None, data_batch=None):
        # Built in __init__, optimizers in compile; on JAX Keras would call
        # `call` (z, labels -> images) on a batch of real images.
        if backend.is_tensorflow():
            super()._symbolic_build(iterator=iterator, data_batch=data_batch)

    @property
    def non_trainable_variables(self):
        """Keras's, and on JAX the generator optimizer's state."""
        variables = super().non_trainable_variables
        if not backend.is_jax() or not getattr(self, "g_optimizer", None):
            return variables
        return variables + list(self.g_optimizer.variables)

    def train_step(self, *args):
        """`train_step(data)` on TensorFlow, `train_step(state, data)` on JAX."""
        return backend.run_step(self, args, self._train_step)

    def _train_step(self, data):
        real, labels = data[0], data[1]
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        batch = ops.shape(real)[0]
        generator, discriminator = self.online_generator, self.discriminator

        # Discriminator: hinge loss on one batch holding real and fake images.
        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        fake = generator([z, labels], training=True)
        def discriminator_loss():
            images = self.diff_augment(ops.concatenate([real, fake], axis=0))
            logits = discriminator(
                [images, ops.concatenate([labels, labels], axis=0)], training=True
            )
            real_logits, fake_logits = logits[:batch], logits[batch:]
            d_loss = ops.mean(ops.relu(1.0 - real_logits)) + ops.mean(
                ops.relu(1.0 + fake_logits)
            )
            return self.d_optimizer.scale_loss(d_loss), d_loss

        weights = discriminator.trainable_variables
        _, d_loss, d_grads = backend.value_and_grad(discriminator_loss, weights,
                                                    self._written)
        d_ok = numerics.update_ok(self.d_optimizer, d_loss, d_grads)
        numerics.apply_if(d_ok, self.d_optimizer, d_grads, weights)

        # Generator: raise the discriminator's score of fresh fakes.
        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        def generator_loss():
            fake = generator([z, labels], training=True)
            logits = discriminator([self.diff_augment(fake), labels], training=False)
            g_loss = -ops.mean(logits)
            return self.g_optimizer.scale_loss(g_loss), g_loss

        weights = generator.trainable_variables
        _, g_loss, g_grads = backend.value_and_grad(generator_loss, weights, self._written)
        ok = ops.logical_and(d_ok, numerics.update_ok(self.g_optimizer, g_loss, g_grads))
        numerics.apply_if(ok, self.g_optimizer, g_grads, weights)

        numerics.run_if(ok, self._update_ema, self.ema_generator.weights)
        # Updated whatever the verdict: a NaN in the logs stops fit on the host.
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {m.name: m.result() for m in self.metrics}

    @property
    def _written(self):
        """What the losses assign: BatchNorm statistics, DiffAugment's stream."""
        return [v for v in self.variables if not v.trainable]

    def _update_ema(self):
        """Moves the EMA generator towards the online one; returns nothing."""
        # BatchNorm moving statistics are averaged along with the weights.
        step = ops.cast(self.g_optimizer.iterations.value, "float32")
        decay = ops.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))
        for ema, online in zip(self.ema_generator.weights, self.online_generator.weights):
            ema.assign(decay * ema.value + (1.0 - decay) * online.value)

    def sample(self, labels, seed=None):
        """Generate one image per label with the EMA generator.

        Args:
            labels: 1-D int array-like of class ids.
            seed: int for reproducible latents, `None` for fresh ones.

        Returns:
            NumPy float32 array `(len(labels), *image_shape)`.
        """
        labels = np.asarray(labels, "int32").reshape(-1)
        return synthetic.sample(self.ema_generator, labels,
                                self.seed_generator if seed is None else seed,
                                batch_size=max(1, len(labels)), latent_dim=self.latent_dim)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "image_shape": self.image_shape,
            "latent_dim": self.latent_dim,
            "generator_filters": self.generator_filters,
            "discriminator_filters": self.discriminator_filters,
            "augment_policy": self.augment_policy,
            "ema_decay": self.ema_decay,
            "output_range": self.output_range,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _get_optimizer(optimizer):
    if isinstance(optimizer, str) and optimizer == "auto":
        return keras.optimizers.Adam(learning_rate=1e-3, beta_1=0.0, beta_2=0.999)
    return keras.optimizers.get(optimizer)


class _StopOnNonFinite(keras.callbacks.Callback):
    """Stops `ConditionalGAN.fit` at the first non-finite d_loss / g_loss."""

    def on_train_batch_end(self, batch, logs=None):
        for name in ("d_loss", "g_loss"):
            value = float((logs or {}).get(name, 0.0))
            if not math.isfinite(value):
                step = int(self.model.g_optimizer.iterations) + 1
                raise FloatingPointError(
                    f"Non-finite {name} at GAN training step {step} (epoch batch "
                    f"{batch + 1}): training stopped and this step's updates were "
                    "skipped, so no weight took a NaN. Check the images for NaN or Inf, "
                    "or lower the learning rates. Received: "
                    f"{name}={value}")
