"""`MGRModel`: the variables and the Keras plumbing of an MGR classifier.

The method's parts live in `terms` (the modes), `synthetic` (images),
`objective` (losses as pure functions), `step` (one training step), `meta`
(meta-gradients), `validation_buffer`, `numerics`, `schedule` (host side),
`saving`, and `backend` (what differs between TensorFlow, JAX and PyTorch).
"""

import keras
from keras import ops

from keras_mgr import (
    backend,
    batchnorm,
    checks,
    multi_worker,
    numerics,
    option_checks,
    saving,
    schedule,
    step,
    terms,
)
from keras_mgr.batch_checks import BatchCheck, build_batch, make_checked_test_function
from keras_mgr.batchnorm.fused import fuse as fuse_batchnorm
from keras_mgr.data_checks import evaluate_arguments, fit_arguments, predict_arguments
from keras_mgr.meta_accumulation import MetaAccumulator
from keras_mgr.objective import Objective
from keras_mgr.out_of_memory import hint as out_of_memory_hint
from keras_mgr.synthetic import Synthesis, SyntheticSampler, make_pool
from keras_mgr.utils import Untracked, dataset_fit_kwargs, full_precision
from keras_mgr.validation_buffer import ValidationBuffer

if backend.is_jax():
    from keras_mgr.backend import jax_step

MODES = terms.MODES
META_GRADIENTS = ("second_order", "finite_difference", "random_drift")


@keras.saving.register_keras_serializable(package="keras_mgr")
class MGRModel(saving.Checkpointing, keras.Model):
    """Backbone + linear head, trained with synthetic-image regularization.

    Usually built by `keras_mgr.wrap()`, which checks the parts and documents
    every argument (`"auto"` resolves to `terms.FINDER_DEFAULTS` in both).
    Calling the model (`predict`, `evaluate`) runs `head(backbone(images))`
    only; the generator, finder and regularizer are used by `train_step`.

    One training step minimizes `CE(h(g(x)), y) + weight * R`, R the mode's
    term (`keras_mgr.terms`: none, the synthetic cross-entropy of gda /
    metagda, or PCR of pcr / mgr, on `G(z, y_s)` or finder latents
    `G(F_phi(z), y_s)`). In metagda / mgr, every `meta_every` steps the finder
    also takes a step on the validation loss after a one-step lookahead
    (`keras_mgr.meta`), in one step with the real update. Synthetic forward passes
    are stateless: BatchNorm moving statistics come from the real batch only.
    """

    def __init__(self, backbone, head, generator, num_classes, mode="mgr", finder=None,
                 regularizer=None, pcr_weight=1.0, gda_weight=1.0, meta_every="auto",
                 meta_gradient="second_order", finder_learning_rate="auto",
                 synthetic_batch_size=None, meta_batch_size=64, lookahead_training=True,
                 finite_difference_epsilon=0.01, latent_dim=None, image_shape=None,
                 value_range=(-1.0, 1.0), latent_space="z", synthetic_pool_size=0,
                 meta_holdout_size=0, checkpoint_generator=True, seed=None,
                 meta_microbatches="auto", fused_batchnorm="auto", meta_accumulation=1,
                 **kwargs):
        super().__init__(**kwargs)
        checks.choice("mode", mode, MODES)
        self.meta_gradient = checks.choice("meta_gradient", meta_gradient, META_GRADIENTS)
        term_class, self.uses_finder = terms.mode(mode)
        number = checks.number
        self.backbone, self.head = backbone, head
        self.fused_batchnorm = fused_batchnorm  # "auto" is saved as "auto"
        if terms.resolve_auto(mode, "fused_batchnorm", fused_batchnorm):
            fuse_batchnorm(backbone)  # a TensorFlow kernel: JAX warns, keeps Keras's pass
        self.checkpoint_generator = bool(checkpoint_generator)
        if self.checkpoint_generator:
            self._generator = generator
        else:  # not tracked: its weights stay out of every checkpoint
            self._generator_box = Untracked(generator)
        self.num_classes, self.mode, self.seed = int(num_classes), mode, seed
        self.meta_holdout_size = int(meta_holdout_size)
        self.pcr_weight = float(number("pcr_weight", pcr_weight))
        self.gda_weight = float(number("gda_weight", gda_weight))
        self.meta_every = int(number("meta_every", terms.resolve_auto(
            mode, "meta_every", meta_every), 1, integer=True))
        self.finder_learning_rate = number("finder_learning_rate", terms.resolve_auto(
            mode, "finder_learning_rate", finder_learning_rate), strict=True)
        self.synthetic_batch_size = number("synthetic_batch_size", synthetic_batch_size, 1,
                                           integer=True, allow_none=True)
        self._fit_batch_size = None  # per replica, set by fit() (default synthetic batch)
        self.meta_batch_size = int(number("meta_batch_size", meta_batch_size, 1, integer=True))
        self.lookahead_training, self.latent_space = bool(lookahead_training), latent_space
        self.finite_difference_epsilon = float(number(
            "finite_difference_epsilon", finite_difference_epsilon, strict=True))
        self.latent_dim = int(latent_dim or generator.latent_dim)
        self.image_shape = tuple(image_shape or backbone.input_shape[1:])
        # The generator's images; real ones are checked against it.
        self.value_range = option_checks.value_range("value_range", value_range)
        if self.value_range is None:
            raise ValueError("MGRModel needs value_range, the (low, high) of the generator's "
                             "images. Received: value_range=None")
        self.finder = self.meta_accumulator = None
        self.meta_accumulation = int(number("meta_accumulation", meta_accumulation, 1,
                                            integer=True))
        if self.uses_finder:  # a mode builds only the parts it uses
            self.finder = _required(finder, "finder", mode)
            if self.meta_accumulation > 1:
                self.meta_accumulator = MetaAccumulator(
                    self.meta_accumulation, [v.shape for v in self.finder.trainable_variables],
                    name="meta_accumulator")
        self.regularizer = None
        if terms.mode(mode).uses_pcr:
            self.regularizer = _required(regularizer, "regularizer", mode)
            if not self.regularizer.built:
                self.regularizer.build(backbone.output_shape)
        elif regularizer is not None:
            raise ValueError(f"Mode {mode!r} has no PCR term, so no regularizer: build the "
                             f"model with keras_mgr.wrap(). Received: regularizer={regularizer!r}")
        self.sampler = SyntheticSampler(self.latent_dim, self.num_classes, seed=seed)
        self.synthetic_pool_size = number("synthetic_pool_size", synthetic_pool_size, integer=True)
        self.meta_microbatches = checks.count_or_auto("meta_microbatches", terms.resolve_auto(
            mode, "meta_microbatches", meta_microbatches))  # "auto" for mgr: per batch
        pool = make_pool(self, self.generator, self.synthetic_pool_size, mode,
                         int(self.sampler.seed_state.numpy()[0]), self.num_classes,
                         self.latent_dim, self.image_shape) if self.synthetic_pool_size else None
        self.synthesis = None if term_class is None else Synthesis(
            lambda: self.generator, self.sampler, self.image_shape, self.compute_dtype,
            self.finder, latent_space, pool)
        self.objective = Objective(
            backbone, head, term_class, self.pcr_weight if term_class is terms.PCR
            else self.gda_weight, self.synthesis, self._ce, self.regularizer,
            lambda: self.optimizer, meta_gradient, self.lookahead_training,
            self.finite_difference_epsilon, self.sampler.seed_state, self.meta_microbatches)
        self.term = self.objective.term
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        if self.term is not None:
            self.synthetic_tracker = keras.metrics.Mean(name=self.term.name)
        if self.uses_finder:
            self.meta_tracker = schedule.MetaStepMean(name="meta_loss")
            # Finder diagnostics: meta-gradient norm (meta steps), mean ||F(z) - z||.
            self.meta_grad_norm_tracker = schedule.MetaStepMean(name="meta_grad_norm")
            self.latent_shift_tracker = keras.metrics.Mean(name="latent_shift")
            self.validation = ValidationBuffer(
                self.meta_batch_size, self.image_shape, self.meta_holdout_size,
                seed=None if seed is None else seed + 1, name="validation_buffer")
        self.nonfinite = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False,
            name="nonfinite", aggregation="only_first_replica")
        self.batch_check = BatchCheck.of(self)  # checks every batch in the step
        self.finder_optimizer = None
        self.build((None,) + self.image_shape)

    def build(self, input_shape):
        self.built = True

    @property
    def generator(self):
        """The frozen generator."""
        return self._generator if self.checkpoint_generator else self._generator_box.value

    @property
    def classifier_variables(self):
        """theta: the backbone's then the head's trainable variables."""
        return self.backbone.trainable_variables + self.head.trainable_variables

    def call(self, images, training=False):
        images = self.batch_check.sized(images)  # one image: a ValueError, not 8 predictions
        return self.head(self.backbone(images, training=training))

    def compile(self, optimizer="auto", loss="auto", metrics="auto", finder_optimizer="auto",
                **kwargs):
        """Configures training; `"auto"` picks the defaults below.

        Args:
            optimizer: `"auto"` is Adam(1e-3), for backbone, head, SimSiam heads.
            loss: `"auto"` is sparse categorical cross-entropy on logits, as is
                a cross-entropy given by name. A custom loss receives int class
                ids and logits; one built with `from_logits=False` is refused.
            metrics: `"auto"` is `["accuracy"]` (sparse categorical accuracy).
            finder_optimizer: `"auto"` is Adam with `finder_learning_rate` and
                `epsilon=1e-12`: meta-gradients are tiny (they scale with
                eta * lambda) and Adam's default epsilon would swamp them.
            **kwargs: passed to `keras.Model.compile` (`jit_compile`, ...).
        """
        optimizer, loss, metrics, self.finder_optimizer = checks.compile_arguments(
            self, optimizer, loss, metrics, finder_optimizer, kwargs.get("weighted_metrics"))
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        backend.check_compiled(self)
        # Each optimizer is built on exactly the variables it updates, so that
        # `.keras` saving and BackupAndRestore keep both states.
        self.optimizer.build(self.classifier_variables + self.objective.head_variables)
        if self.uses_finder:
            self.finder_optimizer.build(self.finder.trainable_variables)

    def get_compile_config(self):
        return saving.compile_config(super().get_compile_config(), self.finder_optimizer)

    def compile_from_config(self, config):
        self.compile(**saving.compile_arguments(config))

    def get_config(self):
        return saving.model_config(self, super().get_config())

    @classmethod
    def from_config(cls, config):
        return saving.model_from_config(cls, config)

    def train_step(self, *args):
        """`train_step(data)`; `train_step(state, data)` on JAX."""
        return self._step(args, meta_step=False)

    def meta_train_step(self, *args):
        """A training step together with the finder's meta update."""
        return self._step(args, meta_step=True)

    def _step(self, args, meta_step):
        return backend.run_step(self, args, lambda data: self._train_step(data, meta_step))

    def _train_step(self, data, meta_step):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, y, batch_ok = self.batch_check(x, y)  # a bad batch: no update, the host raises
        x = ops.cast(x, self.compute_dtype)
        result = step.gradients(self, x, y, sample_weight, meta_step)
        ok = step.apply(self, result, batch_ok)
        step.write_state(self, x, y, result.aux, ok)
        return multi_worker.step_logs(self, step.track(self, x, y, sample_weight, result))

    def test_step(self, *args):
        """`test_step(data)`; `test_step(state, data)` on JAX."""
        if not backend.is_jax():
            return self._test_step(*args)
        return jax_step.test_step(self, *args)

    def _test_step(self, data):
        return multi_worker.step_logs(self, step.evaluate(self, data))

    @property
    def non_trainable_variables(self):
        """Keras's, and on JAX what else the step writes (`jax_step.extra_state`)."""
        variables = super().non_trainable_variables
        return variables + jax_step.extra_state(self) if backend.is_jax() else variables

    def _symbolic_build(self, iterator=None, data_batch=None):
        # On JAX and PyTorch Keras builds the metrics on the first batch: give
        # them labels as the step does (class ids), not one-hot rows.
        if not backend.is_tensorflow():
            iterator, data_batch = None, build_batch(self, iterator, data_batch)
        return super()._symbolic_build(iterator=iterator, data_batch=data_batch)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under several workers Keras's own fails (keras_mgr.multi_worker).
        return super()._maybe_symbolic_build(*multi_worker.build_batch(
            self._distribute_strategy, iterator, data_batch))

    def _ce(self, y, logits, sample_weight=None):
        return self._compile_loss(y, full_precision(logits), sample_weight)

    def make_train_function(self, force=False):
        """Two compiled step functions, the meta step every `meta_every` steps
        (`schedule.alternate`); the host reads the batch and non-finite flags after each."""
        if self.train_function is not None and not force:
            return self.train_function
        self.nonfinite.assign(0)
        plain, meta, first_step, wrap = backend.step_functions(self)
        name = "synthetic" if self.term is None else self.term.name
        self.train_function = schedule.alternate(
            plain, meta, self.meta_every if self.uses_finder else 1, self.steps_per_execution,
            first_step, lambda step: self.batch_check.after_training(
                step, self.steps_per_execution, [self.nonfinite]) or numerics.raise_if_nonfinite(
                self.nonfinite, name, step, self.steps_per_execution), wrap)
        return self.train_function

    make_test_function = make_checked_test_function  # then the host reads each batch's check

    def fit(self, x=None, y=None, *args, **kwargs):
        x, y, kwargs = fit_arguments(self, x, y, args, kwargs)  # then each batch: BatchCheck
        if self.term is not None and not self.synthetic_batch_size:
            schedule.follow_fit_batch_size(self, x, kwargs.get("batch_size"))
        with out_of_memory_hint(self):
            history = super().fit(x, y, **dataset_fit_kwargs(x, kwargs))
        batchnorm.warn_if_unconverged(self.backbone, int(self.optimizer.iterations.numpy()))
        return history

    def evaluate(self, x=None, y=None, *args, **kwargs):
        x, y = evaluate_arguments(self, x, y, kwargs)  # then every batch: BatchCheck
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        return super().predict(predict_arguments(self, x), *args, **kwargs)


def _required(part, name, mode):
    if part is None:
        raise ValueError(f"MGRModel in mode {mode!r} needs its {name}: build the model with "
                         f"keras_mgr.wrap(), which makes one. Received: {name}=None")
    return part
