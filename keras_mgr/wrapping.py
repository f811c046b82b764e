"""`keras_mgr.wrap()`: the one-line entry point."""

import inspect

import keras

from keras_mgr import batchnorm, checks, onednn, option_checks, terms, wrap_checks
from keras_mgr.augment import check_differentiable
from keras_mgr.finder import Finder
from keras_mgr.mgr_model import MGRModel
from keras_mgr.regularizer import MGRRegularizer


def wrap(
    backbone,
    generator,
    num_classes=None,
    mode="mgr",
    *,
    consistency="l2",
    pcr_weight=1.0,
    gda_weight=1.0,
    augmentation=None,
    meta_every="auto",
    meta_gradient="second_order",
    finder_learning_rate="auto",
    finder_hidden_dim=256,
    finder_num_layers=2,
    finder_conditional=True,
    finder_max_shift="auto",
    synthetic_batch_size=None,
    meta_batch_size=64,
    meta_validation_data=None,
    lookahead_training=True,
    finite_difference_epsilon=0.01,
    meta_microbatches="auto",
    meta_accumulation=1,
    resize_synthetic=False,
    input_range=None,
    latent_space="z",
    synthetic_pool_size=0,
    checkpoint_generator=True,
    batchnorm_momentum=None,
    fused_batchnorm="auto",
    seed=None,
    name="mgr_model",
):
    """Wraps a backbone and a frozen conditional generator into an `MGRModel`.

    Args:
        backbone: a built `keras.Model` mapping images `(H, W, C)` to pooled
            features `(d,)` (e.g. `keras.applications.*(include_top=False,
            pooling="avg")`). A linear head with `num_classes` logits is added.
        generator: a frozen (`trainable = False`) `keras.Model` taking
            `[z, labels]` (`z`: `(batch, latent_dim)`, labels: `(batch,)` int)
            and returning images; it carries `latent_dim`, `num_classes` and
            optionally `output_range` attributes.
        num_classes: int >= 2 (one class leaves nothing to classify);
            defaults to `generator.num_classes`.
        mode: `"mgr"` (default), `"pcr"`, `"metagda"`, `"gda"` or `"base"`
            (docs/method.md's comparison table; all share one code path).
        consistency: PCR distance, `"l2"`, `"cosine"` or `"simsiam"`.
        pcr_weight: lambda, weight of PCR (pcr, mgr).
        gda_weight: weight of the synthetic cross-entropy (gda, metagda).
        augmentation: layer making one random view for PCR; must be
            differentiable w.r.t. the images (checked here). Defaults to
            `ViewAugmentation` (flip, translate, brightness, contrast).
        meta_every: the finder's meta step runs every `meta_every` steps.
            `"auto"`: the best measured setting of the mode (`FINDER_DEFAULTS`:
            5 for mgr, 1 for metagda).
        meta_gradient: `"second_order"` (exact, nested tapes) or
            `"finite_difference"` (DARTS approximation). `"random_drift"` is a
            control for experiments, not a method: the finder steps along a
            random direction with the exact meta-gradient's norm, so it moves
            its latents as far as mgr's finder does, without the signal.
        finder_learning_rate: Adam learning rate of the finder. `"auto"`:
            1e-2 for mgr, 1e-3 for metagda.
        finder_hidden_dim: width of the finder's residual MLP.
        finder_num_layers: number of hidden layers of that MLP (>= 1).
        finder_conditional: whether the finder sees the class label.
        finder_max_shift: largest `||F_phi(z) - z||` the finder may move a
            latent (a trust region; None: unbounded). `"auto"`: None for
            mgr (PCR is label-free), 0.5 for metagda (a labelled sample
            must keep its class). docs/benchmarks.md has the measurements.
        synthetic_batch_size: synthetic images per step; default: the real
            batch size passed to `fit` (per replica), also on a smaller last
            batch.
        meta_batch_size: size of the lookahead's validation batch: by
            default the most recent real training examples before the
            current batch.
        meta_validation_data: optional `(images, labels)` of held-out real
            examples (metagda, mgr): each meta step then draws its
            validation batch (`meta_batch_size` of them, without
            replacement; all if fewer) from these instead. They are saved
            with the model's weights.
        lookahead_training: run the lookahead's validation pass in training
            mode (batch statistics), the same mode as the inner step.
        finite_difference_epsilon: DARTS step, divided by `||v||`.
        meta_microbatches: k > 1 splits the synthetic batch into k slices for
            the exact meta step's second-order pass, one slice at a time in a
            `tf.while_loop`: less peak memory (docs/benchmarks.md "Cost"), one more
            first-order pass over the views. The meta-gradient is the same
            sum; with BatchNorm in the backbone each slice's views use their
            own batch statistics, so it then differs from k = 1 (no accuracy
            difference measured). Must divide the synthetic batch size.
            `"auto"`: for mgr 4 slices (else 2) of at least 8 synthetic
            images per replica, else 1 (e.g. 4 at 32, 2 at 16, 1 at 8); 1
            for metagda. 1 is the whole-batch pass as published.
        meta_accumulation: k; the finder steps every k meta steps, on the
            mean of their k meta-gradients (1: on each one, as published).
            One meta-gradient is mostly batch noise; a mean keeps what they
            share.
        resize_synthetic: resize generator output to the backbone input size
            (otherwise differing sizes are an error).
        input_range: `(low, high)` the backbone expects; defaults to
            `backbone.input_range` if set. Must equal the generator's
            `output_range` when both are declared.
        latent_space: `"z"` (the finder maps generator inputs) or `"w"` (the
            finder maps `generator.mapping([z, y])`, fed to
            `generator.synthesis([w, y])`: a mapping network's intermediate
            space, as with StyleGAN2).
        synthetic_pool_size: gda / pcr only: if > 0, generate this many images
            once and draw synthetic batches from that pool instead of running
            the generator every step (see benchmarks/speed.py for the gain).
        checkpoint_generator: False leaves the frozen generator's weights out
            of every checkpoint (`save`, `save_weights`, BackupAndRestore);
            load with `keras_mgr.load_model(path, generator=generator)`.
        batchnorm_momentum: float or None; if set, the momentum of every
            BatchNormalization layer of the backbone (None: left as built).
            With a few hundred training steps use about 0.9: Keras's 0.99
            (0.999 in keras.applications) leaves the moving statistics
            unconverged, and `fit` warns when that is the case.
        fused_batchnorm: give the backbone's BatchNormalization layers
            TensorFlow's fused training kernel (`keras_mgr.batchnorm.fused`:
            the same function, a faster step, exact second derivatives).
            False keeps Keras's own pass. A TensorFlow kernel: `"auto"` is
            True on TensorFlow, False on JAX, where True warns and Keras's
            pass runs.
        seed: int in [0, 2**63 - 2] or None; fixes the synthetic draws and
            views with the model's own seeded streams. Global random state
            (Python, NumPy, TensorFlow) is left alone:
            `keras.utils.set_random_seed` fixes initialisation and shuffling.
        name: model name.

    Returns:
        An `MGRModel`; `compile()` it with "auto" defaults and `fit()`.

    Raises:
        ValueError, quoting what was received, before the backbone is changed
        or anything built (`keras_mgr.option_checks`): an option of the wrong
        type (flags take only bools, counts only integers) or out of range; a
        size whose buffers or weights alone exceed the machine's memory; a
        generator whose output on a few standard-normal latents is not finite
        or leaves its value range (declared, or the [-1, 1] assumed).

    Example:

    ```python
    model = keras_mgr.wrap(backbone, generator, num_classes=10)
    model.compile(optimizer="adam")
    model.fit(x_train, y_train, epochs=30)
    ```
    """
    given = dict(locals())
    checks.warn_unused(mode, given, _DEFAULTS)
    onednn.warn_if_one_thread()
    # Everything is checked before the backbone is changed (BatchNorm momentum,
    # fused pass): a failed wrap() leaves the user's model as it was.
    checked = option_checks.options(given)
    seed, finder_max_shift = checked["seed"], checked["finder_max_shift"]
    wrap_checks.check_backbone(backbone)
    latent_dim, generator_classes, output_range = wrap_checks.generator_info(generator)
    num_classes = checked["num_classes"] or generator_classes
    if num_classes is None:
        raise ValueError(
            "num_classes is needed: pass it to wrap() or set generator.num_classes. "
            f"Received: num_classes=None, generator={generator.name!r}"
        )
    if generator_classes is not None and generator_classes != num_classes:
        raise ValueError(
            f"num_classes={num_classes} passed to wrap() does not match the "
            f"generator's num_classes={generator_classes}."
        )
    if generator.trainable and generator.trainable_weights:
        raise ValueError(
            "The generator must be frozen: MGR never trains it. Set "
            "`generator.trainable = False` before wrap(). Received: a generator "
            f"with {len(generator.trainable_weights)} trainable weights."
        )
    image_shape = tuple(backbone.input_shape[1:])
    declared = given["input_range"] or getattr(backbone, "input_range", None)
    input_range = checked["input_range"] or option_checks.value_range(
        "backbone.input_range", declared)
    if input_range is not None and output_range is not None and input_range != output_range:
        raise ValueError(
            f"The generator outputs values in {output_range} but the backbone "
            f"expects {tuple(declared)}. Rescale one of them. Received: "
            f"generator.output_range={output_range}, input_range={tuple(declared)}"
        )
    value_range = output_range or input_range or (-1.0, 1.0)
    wrap_checks.check_generator_output(
        generator, latent_dim, num_classes, image_shape, checked["resize_synthetic"],
        value_range, "generator.output_range" if output_range else (
            "input_range" if input_range else None))

    # Under mixed precision the logits (a float16 softmax overflows) and the
    # small finder (its meta-gradient is tiny) compute in float32.
    mixed = keras.config.dtype_policy().compute_dtype in ("float16", "bfloat16")
    full = "float32" if mixed else None
    if augmentation is not None:
        check_differentiable(augmentation, image_shape)
    holdout = wrap_checks.holdout(meta_validation_data, mode, num_classes, image_shape, value_range)
    finder_dim = None
    if terms.mode(mode).uses_finder:
        finder_dim = wrap_checks.finder_dim(generator, latent_dim, num_classes, latent_space)
    option_checks.memory(mode, image_shape, 2 if full else 4, finder_dim, num_classes, checked)
    head = keras.layers.Dense(num_classes, name="head", dtype=full)
    head.build(backbone.output_shape)
    regularizer = None  # a mode builds only the parts it uses
    if terms.mode(mode).uses_pcr:
        regularizer = MGRRegularizer(consistency, augmentation=augmentation,
                                     value_range=value_range, seed=seed, name="regularizer")
        regularizer.build(backbone.output_shape)
    finder = None
    if finder_dim is not None:
        finder = Finder(finder_dim, num_classes, hidden_dim=checked["finder_hidden_dim"],
                        num_layers=checked["finder_num_layers"],
                        conditional=checked["finder_conditional"], max_shift=finder_max_shift,
                        name="finder", dtype=full)
    with batchnorm.restored_on_error(backbone):  # in case MGRModel fails after all
        if batchnorm_momentum is not None:
            batchnorm.set_momentum(backbone, batchnorm_momentum)
        model = MGRModel(
            backbone, head, generator, num_classes, mode=mode, finder=finder,
            regularizer=regularizer, pcr_weight=pcr_weight, gda_weight=gda_weight,
            meta_every=meta_every, meta_gradient=meta_gradient,
            finder_learning_rate=finder_learning_rate,
            synthetic_batch_size=synthetic_batch_size, meta_batch_size=meta_batch_size,
            lookahead_training=checked["lookahead_training"],
            finite_difference_epsilon=finite_difference_epsilon,
            meta_microbatches=meta_microbatches,
            meta_accumulation=checked["meta_accumulation"],
            latent_dim=latent_dim, image_shape=image_shape, value_range=value_range,
            latent_space=latent_space,
            synthetic_pool_size=synthetic_pool_size,
            meta_holdout_size=0 if holdout is None else len(holdout[1]),
            checkpoint_generator=checked["checkpoint_generator"], seed=seed, name=name,
            fused_batchnorm=checked["fused_batchnorm"],
        )
        if holdout is not None:
            model.validation.holdout_images.assign(holdout[0])
            model.validation.holdout_labels.assign(holdout[1])
    return model


# The defaults wrap() cites, reachable from it (`keras_mgr.wrap.FINDER_DEFAULTS`)
# and as keras_mgr.FINDER_DEFAULTS.
FINDER_DEFAULTS = terms.FINDER_DEFAULTS
wrap.FINDER_DEFAULTS = FINDER_DEFAULTS
_DEFAULTS = {name: p.default for name, p in inspect.signature(wrap).parameters.items()}
