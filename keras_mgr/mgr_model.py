"""`MGRModel`: a classifier trained with meta generative regularization."""

import warnings

import keras
import tensorflow as tf
from keras import ops

from keras_mgr import batchnorm, checks, meta, numerics, random, saving
from keras_mgr.finder import Finder
from keras_mgr.regularizer import MGRRegularizer
from keras_mgr.synthetic import SyntheticSampler, synthetic_dataset
from keras_mgr.utils import dataset_fit_kwargs, full_precision
from keras_mgr.validation_buffer import ValidationBuffer

MODES = ("base", "gda", "metagda", "pcr", "mgr")
META_GRADIENTS = ("second_order", "finite_difference", "random_drift")


@keras.saving.register_keras_serializable(package="keras_mgr")
class MGRModel(keras.Model):
    """Backbone + linear head, trained with synthetic-image regularization.

    Usually built by `keras_mgr.wrap()`, which checks the parts and documents
    every argument. Calling the model (`predict`, `evaluate`) runs
    `head(backbone(images))` only; the generator, finder and regularizer are
    used by `train_step` alone.

    One training step, by `mode` (Yamaguchi et al., NeurIPS 2023):

    - `base`: `CE(h(g(x)), y)`.
    - `gda` / `metagda`: `+ gda_weight * CE(h(g(G(z, y_s))), y_s)`, with
      uniform `z` (gda) or finder latents `F_phi(z)` (metagda).
    - `pcr` / `mgr`: `+ pcr_weight * D(g(T1(x_s)), g(T2(x_s)))`, `x_s = G(z, y_s)`
      with uniform `z` (pcr) or finder latents (mgr). No synthetic image enters
      the cross-entropy and the head gets no gradient from PCR.
    - metagda / mgr: every `meta_every` steps the finder takes an Adam step on
      the validation loss after a one-step lookahead (`keras_mgr.meta`).

    Synthetic forward passes are stateless: BatchNorm moving statistics are
    written back from the real batch only.
    """

    def __init__(
        self,
        backbone,
        head,
        generator,
        num_classes,
        mode="mgr",
        finder=None,
        regularizer=None,
        pcr_weight=1.0,
        gda_weight=1.0,
        meta_every=1,
        meta_gradient="second_order",
        finder_learning_rate=1e-3,
        synthetic_batch_size=None,
        meta_batch_size=64,
        lookahead_training=True,
        finite_difference_epsilon=0.01,
        latent_dim=None,
        image_shape=None,
        latent_space="z",
        synthetic_pool_size=0,
        meta_holdout_size=0,
        checkpoint_generator=True,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
        if meta_gradient not in META_GRADIENTS:
            raise ValueError(
                f"meta_gradient must be one of {META_GRADIENTS}. "
                f"Received: meta_gradient={meta_gradient!r}"
            )
        meta_every = checks.number("meta_every", meta_every, 1, integer=True)
        pcr_weight = checks.number("pcr_weight", pcr_weight)
        gda_weight = checks.number("gda_weight", gda_weight)
        finder_learning_rate = checks.number("finder_learning_rate", finder_learning_rate,
                                             strict=True)
        synthetic_batch_size = checks.number("synthetic_batch_size", synthetic_batch_size, 1,
                                             integer=True, allow_none=True)
        meta_batch_size = checks.number("meta_batch_size", meta_batch_size, 1, integer=True)
        finite_difference_epsilon = checks.number(
            "finite_difference_epsilon", finite_difference_epsilon, strict=True)
        synthetic_pool_size = checks.number("synthetic_pool_size", synthetic_pool_size,
                                            integer=True)
        self.backbone = backbone
        self.head = head
        self.checkpoint_generator = bool(checkpoint_generator)
        if self.checkpoint_generator:
            self._generator = generator
        else:  # not tracked: its weights stay out of every checkpoint
            self._generator_box = _Untracked(generator)
        self.num_classes = int(num_classes)
        self.mode = mode
        self.pcr_weight = float(pcr_weight)
        self.gda_weight = float(gda_weight)
        self.meta_every = int(meta_every)
        self.meta_gradient = meta_gradient
        self.finder_learning_rate = finder_learning_rate
        self.synthetic_batch_size = synthetic_batch_size
        self._fit_batch_size = None  # per replica, set by fit() (default synthetic batch)
        self.meta_batch_size = int(meta_batch_size)
        self.lookahead_training = bool(lookahead_training)
        self.finite_difference_epsilon = float(finite_difference_epsilon)
        self.latent_dim = int(latent_dim or generator.latent_dim)
        self.image_shape = tuple(image_shape or backbone.input_shape[1:])
        self.latent_space = latent_space
        self.seed = seed
        # Only the finder modes build (and checkpoint) a finder.
        self.finder = (finder or Finder(self.latent_dim, self.num_classes, name="finder")
                       ) if mode in ("metagda", "mgr") else None
        self.regularizer = regularizer or MGRRegularizer(name="regularizer", seed=seed)
        if not self.regularizer.built:
            self.regularizer.build(backbone.output_shape)
        self.sampler = SyntheticSampler(self.latent_dim, self.num_classes, seed=seed)
        self.synthetic_pool_size = int(synthetic_pool_size)
        self.meta_holdout_size = int(meta_holdout_size)

        self.uses_synthetic = mode != "base"
        self.uses_pcr = mode in ("pcr", "mgr")
        self.uses_finder = mode in ("metagda", "mgr")
        self.synthetic_weight = self.pcr_weight if self.uses_pcr else self.gda_weight
        self._synthetic_name = "pcr_loss" if self.uses_pcr else "gda_loss"
        if self.synthetic_pool_size:
            self._make_pool()

        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        if self.uses_synthetic:
            self.synthetic_tracker = keras.metrics.Mean(name=self._synthetic_name)
        if self.uses_finder:
            self.meta_tracker = _MetaStepMean(name="meta_loss")
            # Diagnostics of the finder: the norm of its meta-gradient (meta
            # steps only; per replica under tf.distribute, then averaged) and
            # how far it moves latents from uniform sampling, the mean
            # ||F(z) - z|| over the synthetic batch.
            self.meta_grad_norm_tracker = _MetaStepMean(name="meta_grad_norm")
            self.latent_shift_tracker = keras.metrics.Mean(name="latent_shift")
            # The lookahead's validation batch: recent real examples, or the
            # held-out set of wrap's meta_validation_data.
            self.validation = ValidationBuffer(
                self.meta_batch_size, self.image_shape, self.meta_holdout_size,
                seed=None if seed is None else seed + 1, name="validation_buffer")
        self.nonfinite = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False,
            name="nonfinite", aggregation="only_first_replica",
        )
        self.finder_optimizer = None
        self._host_step = None
        self.build((None,) + self.image_shape)

    def build(self, input_shape):
        self.built = True

    @property
    def _num_backbone_trainable(self):
        # Read when a step is traced, so freezing layers and recompiling works.
        return len(self.backbone.trainable_variables)

    @property
    def _is_seed_state(self):
        # Seed-generator states are integer variables: synthetic passes may
        # advance them (fresh dropout masks), BN statistics come from real data.
        return ["int" in str(v.dtype) for v in self.backbone.non_trainable_variables]

    @property
    def generator(self):
        """The frozen generator."""
        if self.checkpoint_generator:
            return self._generator
        return self._generator_box.value

    @property
    def classifier_variables(self):
        """theta: the backbone's then the head's trainable variables."""
        return self.backbone.trainable_variables + self.head.trainable_variables

    def call(self, images, training=False):
        return self.head(self.backbone(images, training=training))

    # Compile -------------------------------------------------------------
    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics="auto",
        finder_optimizer="auto",
        **kwargs,
    ):
        """Configures training; `"auto"` picks the defaults below.

        Args:
            optimizer: `"auto"` is Adam(1e-3). Updates backbone, head and the
                SimSiam heads.
            loss: `"auto"` is sparse categorical cross-entropy on logits; so
                is a cross-entropy given by name. A custom loss receives int
                class ids (one-hot labels are converted) and logits; one built
                with `from_logits=False` is refused.
            metrics: `"auto"` is `["accuracy"]` (sparse categorical accuracy).
            finder_optimizer: `"auto"` is Adam with `finder_learning_rate`;
                `epsilon=1e-12` because meta-gradients are tiny (they scale
                with eta * lambda) and Adam's default epsilon would swamp them.
            **kwargs: passed to `keras.Model.compile` (`jit_compile`,
                `steps_per_execution`, ...).
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(1e-3)
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        loss = checks.logits_loss(loss)
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        auto_finder = isinstance(finder_optimizer, str) and finder_optimizer == "auto"
        if not self.uses_finder and not auto_finder and finder_optimizer is not None:
            warnings.warn(f"mode={self.mode!r} has no finder: finder_optimizer ignored. "
                          f"Received: {finder_optimizer!r}", stacklevel=2)
        if auto_finder:
            finder_optimizer = keras.optimizers.Adam(
                self.finder_learning_rate, epsilon=1e-12
            )
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        self.finder_optimizer = (keras.optimizers.get(finder_optimizer)
                                 if self.uses_finder else None)
        # Build each optimizer on exactly the variables it updates, so that
        # `.keras` saving and BackupAndRestore keep both states.
        self.optimizer.build(self._updated_variables)
        if self.uses_finder:
            self.finder_optimizer.build(self.finder.trainable_variables)

    @property
    def _updated_variables(self):
        return self.classifier_variables + self.regularizer.trainable_variables

    def get_compile_config(self):
        config = super().get_compile_config() or {}
        if self.finder_optimizer is not None:
            config["finder_optimizer"] = keras.saving.serialize_keras_object(
                self.finder_optimizer
            )
        return config

    def compile_from_config(self, config):
        config = dict(config)
        finder_optimizer = config.pop("finder_optimizer", "auto")
        config = keras.saving.deserialize_keras_object(config)
        if isinstance(finder_optimizer, dict):
            finder_optimizer = keras.saving.deserialize_keras_object(finder_optimizer)
        self.compile(finder_optimizer=finder_optimizer, **config)

    # Functional pieces (pure in theta, phi and the random draws) ----------
    def forward(self, theta, state, images, training=True):
        """`(features, logits, new_state, losses)` of backbone + head at `theta`."""
        nb = self._num_backbone_trainable
        features, state, losses = self.backbone.stateless_call(
            theta[:nb], state, images, training=training, return_losses=True
        )
        logits, _ = self.head.stateless_call(theta[nb:], [], features)
        return features, logits, state, losses

    def _make_pool(self):
        """Generates `synthetic_pool_size` class-balanced images once (gda, pcr)."""
        if self.uses_finder or not self.uses_synthetic:
            raise ValueError(
                "synthetic_pool_size needs a mode with synthetic images and no finder "
                "(gda, pcr): the finder must generate inside the step. Received: "
                f"mode={self.mode!r}, synthetic_pool_size={self.synthetic_pool_size}"
            )
        n = self.synthetic_pool_size
        batches = list(synthetic_dataset(
            self.generator, min(n, 256), num_batches=-(-n // 256),
            seed=int(self.sampler.seed_state.numpy()[0]),
            latent_dim=self.latent_dim, num_classes=self.num_classes))
        images = ops.concatenate([b[0] for b in batches], axis=0)[:n]
        labels = ops.concatenate([b[1] for b in batches], axis=0)[:n]
        if tuple(images.shape[1:3]) != self.image_shape[:2]:
            images = ops.image.resize(images, self.image_shape[:2])
        self.pool_images = self.add_weight(
            shape=(n,) + self.image_shape, initializer="zeros", trainable=False,
            name="pool_images")
        self.pool_labels = self.add_weight(
            shape=(n,), initializer="zeros", dtype="int32", trainable=False,
            name="pool_labels")
        self.pool_images.assign(images)
        self.pool_labels.assign(labels)

    def draw(self, batch_size):
        """Random draws of one step: latents, labels and both view transforms."""
        z, labels = self.sampler.sample(batch_size, dtype=keras.config.floatx())
        draws = {"z": z, "labels": labels}
        if self.synthetic_pool_size:
            u = random.uniform((batch_size,), random.next_seed(self.sampler.seed_state))
            index = ops.cast(u * self.synthetic_pool_size, "int32")
            draws = {"pool_index": index, "labels": ops.take(self.pool_labels.value, index)}
        if self.uses_pcr:
            template = ops.zeros((batch_size,) + self.image_shape, self.compute_dtype)
            draws["views"] = self.regularizer.draw_views(template)
        return draws

    def synthesize(self, phi, draws, return_shift=False):
        """`G(F_phi(z), y_s)` (finder modes) or `G(z, y_s)`.

        With `latent_space="w"`: `synthesis(F_phi(mapping(z, y)), y)`. With a
        synthetic pool: the drawn pool images. With `return_shift=True`,
        returns `(images, shift)`, `shift` the batch mean of `||F_phi(z) - z||`
        (0 without a finder).
        """
        shift = ops.zeros((), "float32")
        if "pool_index" in draws:
            images = ops.take(self.pool_images.value, draws["pool_index"], axis=0)
            return (images, shift) if return_shift else images
        z, labels = draws["z"], draws["labels"]
        generate = self.generator
        if self.latent_space == "w":
            z = self.generator.mapping([z, labels], training=False)
            generate = self.generator.synthesis
        if self.uses_finder:
            found, _ = self.finder.stateless_call(phi, [], [z, labels])
            # A logged diagnostic only: no gradient (the norm has none at 0).
            shift = ops.mean(ops.norm(ops.cast(ops.stop_gradient(found - z), "float32"),
                                      axis=-1))
            z = found
        images = generate([z, labels], training=False)
        if tuple(images.shape[1:3]) != self.image_shape[:2]:
            images = ops.image.resize(images, self.image_shape[:2])
        images = ops.cast(images, self.compute_dtype)
        return (images, shift) if return_shift else images

    def synthetic_loss(self, theta, state, images, draws, stop_gradient=None):
        """PCR of `images` at `theta` (backbone only), or their CE for gda modes.

        Returns `(loss, new_state)`; the state is not written back.
        """
        if self.uses_pcr:
            views = self.regularizer.views(images, draws.get("views"))
            features, state = self.backbone.stateless_call(
                theta[: self._num_backbone_trainable], state, views, training=True
            )
            return self.regularizer(features, stop_gradient=stop_gradient), state
        _, logits, state, _ = self.forward(theta, state, images, training=True)
        return self._ce(draws["labels"], logits), state

    def train_loss(self, theta, state, phi, x, y, draws, sample_weight=None,
                   stop_gradient=None):
        """`CE(theta; x, y) + weight * R(theta; phi)` and its parts.

        Returns `(total, aux)`; `aux` holds `ce`, `synthetic`, `logits` and the
        states after the real (`real_state`) and synthetic (`synthetic_state`)
        passes. Losses are per-replica scaled (divide by the replica count), as
        Keras losses are under `tf.distribute`.
        """
        total, aux = self.real_loss(theta, state, x, y, sample_weight)
        if self.uses_synthetic:
            weighted, synthetic = self.regularization(
                theta, aux["real_state"], phi, draws, stop_gradient=stop_gradient)
            aux.update(synthetic)
            total = total + weighted
        return total, aux

    def real_loss(self, theta, state, x, y, sample_weight=None):
        """`CE(theta; x, y)` plus the backbone's own losses; `(total, aux)`."""
        _, logits, real_state, losses = self.forward(theta, state, x, training=True)
        ce = self._ce(y, logits, sample_weight)
        total = ce + numerics.per_replica(ops.sum(losses)) if losses else ce
        return total, {"ce": ce, "logits": logits, "real_state": real_state,
                       "synthetic_state": real_state}

    def regularization(self, theta, state, phi, draws, stop_gradient=None):
        """`weight * R(theta; phi)`, the only term that depends on phi.

        Returns `(weighted, aux)`, `aux` holding `synthetic` (R, replica
        scaled), `synthetic_state` and `latent_shift`.
        """
        images, shift = self.synthesize(phi, draws, return_shift=True)
        synthetic, synthetic_state = self.synthetic_loss(
            theta, state, images, draws, stop_gradient)
        if self.uses_pcr:
            synthetic = numerics.per_replica(synthetic)
        aux = {"synthetic": synthetic, "synthetic_state": synthetic_state,
               "latent_shift": shift}
        return self.synthetic_weight * synthetic, aux

    def meta_loss(self, theta, state, x_val, y_val, weights):
        """Validation CE at `theta`, averaged over rows with weight 1."""
        _, logits, _, _ = self.forward(
            theta, state, x_val, training=self.lookahead_training
        )
        per_example = keras.losses.sparse_categorical_crossentropy(
            y_val, full_precision(logits), from_logits=True
        )
        weights = ops.cast(weights, per_example.dtype)
        loss = ops.sum(per_example * weights) / ops.maximum(ops.sum(weights), 1.0)
        return numerics.per_replica(loss)

    def meta_gradient_of(self, theta_vars, state, phi_vars, x, y, draws, x_val, y_val,
                         val_weights, sample_weight=None):
        """Meta-gradient of the finder, and the inner gradient it was built on.

        Returns `(meta_grads, inner_grads, meta_loss, total, aux)`;
        `inner_grads` covers `theta_vars` then the regularizer's variables and
        is reused for the real update (the fused step); under mixed precision
        it is still loss-scaled, as the `LossScaleOptimizer` expects. The
        algorithms are `meta.second_order` and `meta.finite_difference`.
        """
        extra_vars = self.regularizer.trainable_variables
        eta = self._learning_rate()

        def meta_loss(theta, real_state):
            return self.meta_loss(theta, real_state, x_val, y_val, val_weights)

        if self.meta_gradient == "finite_difference":
            def synthetic_loss(theta, real_state, images):
                loss, _ = self.synthetic_loss(theta, real_state, images, draws)
                return numerics.per_replica(loss) if self.uses_pcr else loss

            return meta.finite_difference(
                theta_vars, extra_vars, phi_vars,
                lambda theta, phi: self.train_loss(theta, state, phi, x, y, draws,
                                                   sample_weight),
                meta_loss, lambda phi: self.synthesize(phi, draws), synthetic_loss,
                self.optimizer, eta, self.finite_difference_epsilon, self.synthetic_weight)
        return meta.second_order(  # second_order, random_drift
            theta_vars, extra_vars, phi_vars,
            lambda theta: self.real_loss(theta, state, x, y, sample_weight),
            lambda theta, real_state, phi, stop: self.regularization(
                theta, real_state, phi, draws, stop_gradient=stop),
            meta_loss, self.optimizer, eta)

    # Training step -------------------------------------------------------
    def train_step(self, data):
        return self._train_step(data, meta_step=False)

    def meta_train_step(self, data):
        """A training step fused with the finder's meta update."""
        return self._train_step(data, meta_step=True)

    def _train_step(self, data, meta_step):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y = checks.class_ids(y, self.num_classes)
        x = ops.cast(x, self.compute_dtype)
        theta_vars = self.classifier_variables
        updated = self._updated_variables
        state = [v.value for v in self.backbone.non_trainable_variables]
        phi_vars = self.finder.trainable_variables if self.uses_finder else []
        draws = None
        if self.uses_synthetic:
            draws = self.draw(self.synthetic_batch_size or self._fit_batch_size
                              or ops.shape(x)[0])

        loss_val = meta_grads = None
        if meta_step and self.uses_finder:
            x_val, y_val, val_weights = self.validation.batch()
            meta_grads, grads, loss_val, total, aux = self.meta_gradient_of(
                theta_vars, state, phi_vars, x, y, draws, ops.cast(x_val, x.dtype), y_val,
                val_weights, sample_weight)
            if self.meta_gradient == "random_drift":
                meta_grads = self._random_direction(meta_grads)
        else:
            with tf.GradientTape() as tape:
                total, aux = self.train_loss(
                    [v.value for v in theta_vars], state,
                    [v.value for v in phi_vars], x, y, draws, sample_weight)
                scaled = self.optimizer.scale_loss(total)
            grads = tape.gradient(scaled, updated)  # a LossScaleOptimizer unscales

        # A non-finite term must not reach any weight: skip this step's
        # updates and let the host stop training (`_check_finite`).
        ok = numerics.record_nonfinite(self.nonfinite, self.optimizer,
                                       (aux["ce"], aux.get("synthetic")), loss_val, grads,
                                       meta_grads or [])
        numerics.apply_if(ok, self.optimizer, grads, updated)
        if meta_grads is not None:
            # Order the finder's all-reduce after the main optimizer's: two
            # independent collectives may run in a different order per replica.
            with tf.control_dependencies([self.optimizer.iterations.value]):
                meta_grads = [tf.identity(g) for g in meta_grads]
            # Skipped, not failed: a loss-scale overflow, or a validation
            # buffer not yet full (its zero rows would enter BN statistics).
            meta_ok = ops.logical_and(ok, ops.logical_and(
                numerics.all_finite(meta_grads), self.validation.ready()))
            numerics.apply_if(meta_ok, self.finder_optimizer, meta_grads, phi_vars)
            self.meta_tracker.update_state(numerics.all_replicas(loss_val))
            self.meta_grad_norm_tracker.update_state(meta.global_norm(meta_grads))
        self._write_back_state(aux["real_state"], aux["synthetic_state"], ok)
        if self.uses_finder:
            self.validation.remember(x, y, ok)

        batch = ops.shape(x)[0]
        self._loss_tracker.update_state(numerics.all_replicas(total),
                                        sample_weight=batch)
        self.ce_tracker.update_state(numerics.all_replicas(aux["ce"]),
                                     sample_weight=batch)
        if self.uses_synthetic:
            self.synthetic_tracker.update_state(
                numerics.all_replicas(aux["synthetic"]))
        if self.uses_finder:
            self.latent_shift_tracker.update_state(aux["latent_shift"])
        return self.compute_metrics(x, y, aux["logits"], sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y = checks.class_ids(y, self.num_classes)
        logits = self(x, training=False)
        loss = self._ce(y, logits, sample_weight)
        self._loss_tracker.update_state(
            numerics.all_replicas(loss), sample_weight=ops.shape(x)[0])
        self._compile_metrics.update_state(y, logits, sample_weight)
        # Only what evaluation measures: the training-only terms would read 0.
        return {"loss": self._loss_tracker.result(), **self._compile_metrics.result()}

    # Host-side scheduling of the meta step ------------------------------
    def make_train_function(self, force=False):
        """Two compiled step functions; the host picks one per step.

        A `tf.cond` holding the meta step inside one XLA-compiled function was
        measured ~90x slower on CPU than choosing between two compiled
        functions from Python (docs/keras_notes.md). After each call the host
        checks the step's non-finite flag (one scalar read).
        """
        if self.train_function is not None and not force:
            return self.train_function
        if self.uses_finder and self.meta_every > 1 and self.steps_per_execution > 1:
            raise ValueError(
                "meta_every > 1 is scheduled on the host, one step at a time: use "
                "steps_per_execution=1 with it. Received: meta_every="
                f"{self.meta_every}, steps_per_execution={self.steps_per_execution}")
        self.nonfinite.assign(0)
        plain = self._make_function(self.train_step)
        fused = self._make_function(self.meta_train_step) if self.uses_finder else plain
        self._host_step = None

        def train_function(iterator):
            if self._host_step is None:
                # Resume the schedule from the optimizer's step count.
                self._host_step = int(self.optimizer.iterations.numpy())
            step = self._host_step
            self._host_step += self.steps_per_execution
            logs = (fused if step % self.meta_every == 0 else plain)(iterator)
            numerics.raise_if_nonfinite(self.nonfinite, self._synthetic_name,
                                        self._host_step, self.steps_per_execution)
            return logs

        self.train_function = train_function
        return train_function

    def fit(self, x=None, y=None, *args, **kwargs):
        checks.fit_data(x, y, self.num_classes, self.image_shape,
                        self.regularizer.value_range if self.uses_synthetic else None)
        checks.checkpoint_callbacks(self, kwargs.get("callbacks"))
        self._set_fit_batch_size(x, args[0] if args else kwargs.get("batch_size"))
        history = super().fit(x, y, *args, **dataset_fit_kwargs(x, kwargs))
        batchnorm.warn_if_unconverged(
            self.backbone, int(keras.ops.convert_to_numpy(self.optimizer.iterations)))
        return history

    def _set_fit_batch_size(self, x, batch_size):
        """Fixes the default synthetic batch to the full real batch size.

        Without it a smaller last batch (e.g. 2 of 98 images at batch 32)
        would also shrink the synthetic batch: PCR and the meta step on 2
        images, with BatchNorm statistics over 2 views.
        """
        if self.synthetic_batch_size or not self.uses_synthetic:
            return
        size = None
        if isinstance(x, tf.data.Dataset):
            spec = tf.nest.flatten(x.element_spec)[0]
            size = spec.shape[0] if spec.shape.rank else None
            if size is None:
                size = int(tf.nest.flatten(next(iter(x.take(1))))[0].shape[0])
        elif hasattr(x, "shape") and len(x.shape):
            size = min(int(batch_size or 32), int(x.shape[0]))
        if size:
            size = max(1, int(size) // numerics.replicas())
        if size != self._fit_batch_size:
            self._fit_batch_size = size
            self.train_function = None  # retrace with the new size

    # Helpers ----------------------------------------------------------
    def _random_direction(self, grads):
        """A random direction with the global norm of `grads` (the random-drift
        control). Its seed is derived from the sampler's stream without
        advancing it, so the synthetic draws stay those of mode mgr."""
        seed = tf.cast((self.sampler.seed_state.value + tf.constant([104729, 0], "int64"))
                       % (2**32), "uint32")
        noise = [random.normal(ops.shape(g), seed + i, g.dtype) for i, g in enumerate(grads)]
        scale = meta.global_norm(grads) / (meta.global_norm(noise) + 1e-30)
        return [n * ops.cast(scale, n.dtype) for n in noise]

    def _ce(self, y, logits, sample_weight=None):
        return self._compile_loss(y, full_precision(logits), sample_weight)

    def _learning_rate(self):
        return ops.cast(self.optimizer.learning_rate, keras.config.floatx())

    def _write_back_state(self, real_state, synthetic_state, ok):
        for var, is_seed, real, synthetic in zip(
            self.backbone.non_trainable_variables, self._is_seed_state,
            real_state, synthetic_state,
        ):
            var.assign(synthetic if is_seed else ops.where(ok, real, var.value))

    # Serialization ------------------------------------------------------
    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        try:
            generator = serialize(self.generator)
        except (NotImplementedError, TypeError, AttributeError) as error:
            if not self.checkpoint_generator:
                generator = None  # supplied again by keras_mgr.load_model
            else:
                raise ValueError(
                    f"The generator {self.generator.name!r} cannot be serialized "
                    f"(it has no usable get_config: {type(error).__name__}), so the "
                    "model cannot be saved "
                    "to .keras. Either save weights only (model.save_weights("
                    "'m.weights.h5') or ModelCheckpoint(save_weights_only=True)) and "
                    "rebuild with wrap() before load_weights; or give the generator a "
                    "get_config(); or wrap(..., checkpoint_generator=False) and load "
                    "with keras_mgr.load_model(path, generator=generator)."
                ) from error
        return {
            **super().get_config(),
            "backbone": serialize(self.backbone),
            "head": serialize(self.head),
            "generator": generator,
            "finder": None if self.finder is None else serialize(self.finder),
            "regularizer": serialize(self.regularizer),
            "num_classes": self.num_classes,
            "mode": self.mode,
            "pcr_weight": self.pcr_weight,
            "gda_weight": self.gda_weight,
            "meta_every": self.meta_every,
            "meta_gradient": self.meta_gradient,
            "finder_learning_rate": self.finder_learning_rate,
            "synthetic_batch_size": self.synthetic_batch_size,
            "meta_batch_size": self.meta_batch_size,
            "lookahead_training": self.lookahead_training,
            "finite_difference_epsilon": self.finite_difference_epsilon,
            "latent_dim": self.latent_dim,
            "image_shape": self.image_shape,
            "latent_space": self.latent_space,
            "synthetic_pool_size": self.synthetic_pool_size,
            "meta_holdout_size": self.meta_holdout_size,
            "checkpoint_generator": self.checkpoint_generator,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "head", "generator", "finder", "regularizer"):
            if config[key] is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        if saving.generator_override() is not None:
            config["generator"] = saving.generator_override()
        if config["generator"] is None:
            raise ValueError(
                "This model was saved without its generator (checkpoint_generator="
                "False). Load it with keras_mgr.load_model(path, generator=generator).")
        config["generator"].trainable = False
        return cls(**config)


class _MetaStepMean(keras.metrics.Mean):
    """Mean over the epoch's meta steps; in an epoch without one (meta_every
    larger than the epoch), the previous value rather than a misleading 0."""

    def __init__(self, name, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.last = self.add_variable(shape=(), initializer="zeros", name="last",
                                      dtype=self.dtype)

    def reset_state(self):
        if hasattr(self, "last"):
            self.last.assign(self.result())
        super().reset_state()

    def result(self):
        return ops.where(self.count > 0, super().result(), self.last)


class _Untracked:
    """Holds an object out of Keras's variable tracking."""

    def __init__(self, value):
        self.value = value
