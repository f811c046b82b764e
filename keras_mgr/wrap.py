"""`keras_mgr.wrap()`: the one-line entry point."""

import inspect

import keras
import numpy as np

from keras_mgr import batchnorm, checks
from keras_mgr.augment import check_differentiable
from keras_mgr.finder import Finder
from keras_mgr.mgr_model import MGRModel
from keras_mgr.regularizer import MGRRegularizer

# The "auto" finder settings, per mode: the best measured ones
# (benchmarks/ablation.py and the metagda trust-region runs; README
# "Ablation"). Modes without a finder ignore them.
FINDER_DEFAULTS = {
    "mgr": {"meta_every": 5, "finder_learning_rate": 1e-2, "finder_max_shift": None},
    "metagda": {"meta_every": 1, "finder_learning_rate": 1e-3, "finder_max_shift": 0.5},
}


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
    finder_conditional=True,
    finder_max_shift="auto",
    synthetic_batch_size=None,
    meta_batch_size=64,
    meta_validation_data=None,
    lookahead_training=True,
    finite_difference_epsilon=0.01,
    resize_synthetic=False,
    input_range=None,
    latent_space="z",
    synthetic_pool_size=0,
    checkpoint_generator=True,
    batchnorm_momentum=None,
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
        num_classes: int; defaults to `generator.num_classes`.
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
        finder_conditional: whether the finder sees the class label.
        finder_max_shift: largest `||F_phi(z) - z||` the finder may move a
            latent (a trust region; None: unbounded). `"auto"`: None for
            mgr (PCR is label-free), 0.5 for metagda (a labelled sample
            must keep its class). README has the measurements.
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
        seed: int or None; fixes the synthetic draws and views with the
            model's own seeded streams. Global random state (Python, NumPy,
            TensorFlow) is left alone: `keras.utils.set_random_seed` fixes
            initialisation and shuffling.
        name: model name.

    Returns:
        An `MGRModel`; `compile()` it with "auto" defaults and `fit()`.

    Example:

    ```python
    model = keras_mgr.wrap(backbone, generator, num_classes=10)
    model.compile(optimizer="adam")
    model.fit(x_train, y_train, epochs=30)
    ```
    """
    given = dict(locals())
    checks.warn_unused(mode, given, _DEFAULTS)
    auto = FINDER_DEFAULTS.get(mode, FINDER_DEFAULTS["mgr"])
    meta_every = auto["meta_every"] if meta_every == "auto" else meta_every
    if finder_learning_rate == "auto":
        finder_learning_rate = auto["finder_learning_rate"]
    finder_max_shift = auto["finder_max_shift"] if finder_max_shift == "auto" else (
        finder_max_shift)
    _check_backbone(backbone)
    if batchnorm_momentum is not None:
        batchnorm.set_momentum(backbone, batchnorm_momentum)
    latent_dim, generator_classes, output_range = _generator_info(generator)
    if num_classes is None:
        num_classes = generator_classes
    if num_classes is None:
        raise ValueError(
            "num_classes is needed: pass it to wrap() or set generator.num_classes. "
            f"Received: num_classes=None, generator={generator.name!r}"
        )
    if generator_classes is not None and int(generator_classes) != int(num_classes):
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
    input_range = input_range or getattr(backbone, "input_range", None)
    if input_range is not None and output_range is not None and (
        tuple(map(float, input_range)) != tuple(map(float, output_range))
    ):
        raise ValueError(
            f"The generator outputs values in {tuple(output_range)} but the backbone "
            f"expects {tuple(input_range)}. Rescale one of them. Received: "
            f"generator.output_range={tuple(output_range)}, input_range="
            f"{tuple(input_range)}"
        )
    _check_generator_output(generator, latent_dim, num_classes, image_shape,
                            resize_synthetic)

    # Under mixed precision the logits (a float16 softmax overflows) and the
    # small finder (its meta-gradient is tiny) compute in float32.
    mixed = keras.config.dtype_policy().compute_dtype in ("float16", "bfloat16")
    full = "float32" if mixed else None
    head = keras.layers.Dense(num_classes, name="head", dtype=full)
    head.build(backbone.output_shape)
    value_range = tuple(output_range or input_range or (-1.0, 1.0))
    if augmentation is not None:
        check_differentiable(augmentation, image_shape)
    regularizer = MGRRegularizer(  # SimSiam heads only where PCR runs
        consistency if mode in ("pcr", "mgr") else "l2", augmentation=augmentation,
        value_range=value_range,
        seed=seed, name="regularizer",
    )
    regularizer.build(backbone.output_shape)
    holdout = _holdout(meta_validation_data, mode, num_classes, image_shape)
    finder = None  # a mode builds only the parts it uses
    if mode in ("metagda", "mgr"):
        finder_dim = _finder_dim(generator, latent_dim, num_classes, latent_space)
        finder = Finder(finder_dim, num_classes, hidden_dim=finder_hidden_dim,
                        conditional=finder_conditional, max_shift=finder_max_shift,
                        name="finder", dtype=full)
    model = MGRModel(
        backbone, head, generator, num_classes, mode=mode, finder=finder,
        regularizer=regularizer, pcr_weight=pcr_weight, gda_weight=gda_weight,
        meta_every=meta_every, meta_gradient=meta_gradient,
        finder_learning_rate=finder_learning_rate,
        synthetic_batch_size=synthetic_batch_size, meta_batch_size=meta_batch_size,
        lookahead_training=lookahead_training,
        finite_difference_epsilon=finite_difference_epsilon,
        latent_dim=latent_dim, image_shape=image_shape, latent_space=latent_space,
        synthetic_pool_size=synthetic_pool_size,
        meta_holdout_size=0 if holdout is None else len(holdout[1]),
        checkpoint_generator=checkpoint_generator, seed=seed, name=name,
    )
    if holdout is not None:
        model.validation.holdout_images.assign(holdout[0])
        model.validation.holdout_labels.assign(holdout[1])
    return model


def _holdout(data, mode, num_classes, image_shape):
    """Checked `(images, int labels)` of `meta_validation_data`, or None."""
    if data is None:
        return None
    if mode not in ("metagda", "mgr"):
        raise ValueError(
            "meta_validation_data feeds the finder's meta step, which only modes "
            f"'metagda' and 'mgr' have. Received: mode={mode!r}")
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(
            "meta_validation_data must be a tuple (images, labels) of arrays. "
            f"Received: {type(data).__name__}"
            + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else ""))
    images = np.asarray(data[0], "float32")
    labels = np.asarray(data[1])
    if images.ndim == 0 or len(images) == 0:
        raise ValueError("meta_validation_data is empty. Received: images of shape "
                         f"{images.shape}")
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"meta_validation_data images must have shape (n,) + {tuple(image_shape)} "
            f"(the backbone input). Received: images of shape {images.shape}")
    if len(labels) != len(images):
        raise ValueError(
            f"meta_validation_data has {len(images)} images but {len(labels)} labels. "
            f"Received: images {images.shape}, labels {labels.shape}")
    if not np.all(np.isfinite(images)):
        raise ValueError("meta_validation_data images contain NaN or Inf values.")
    checks.numpy_labels(labels, num_classes)
    if labels.ndim == 2 and labels.shape[1] == num_classes and num_classes > 1:
        labels = labels.argmax(axis=1)
    return images, labels.reshape(-1).astype("int32")


def _finder_dim(generator, latent_dim, num_classes, latent_space):
    """Size of the space the finder works in."""
    if latent_space == "z":
        return latent_dim
    if latent_space != "w":
        raise ValueError(f"latent_space must be 'z' or 'w'. Received: {latent_space!r}")
    if not (hasattr(generator, "mapping") and hasattr(generator, "synthesis")):
        raise ValueError(
            "latent_space='w' needs a generator with `mapping([z, labels]) -> w` and "
            "`synthesis([w, labels]) -> images`. Received: a generator without "
            f"{'mapping' if not hasattr(generator, 'mapping') else 'synthesis'}"
        )
    w = generator.mapping([np.zeros((1, latent_dim), "float32"), np.zeros((1,), "int32")])
    if len(w.shape) != 2:
        raise ValueError(f"generator.mapping must return (batch, w_dim). Received: {w.shape}")
    return int(w.shape[-1])


def _check_backbone(backbone):
    if not isinstance(backbone, keras.Model) or not backbone.built:
        raise ValueError(
            "backbone must be a built keras.Model (images -> pooled features). "
            f"Received: {backbone!r}"
        )
    output_shape = backbone.output_shape
    if isinstance(output_shape, list) or len(output_shape) != 2:
        raise ValueError(
            "The backbone must return pooled feature vectors (batch, features). "
            "Use pooling='avg' (keras.applications) or end it with "
            "keras.layers.GlobalAveragePooling2D(). Received: backbone output shape "
            f"{output_shape}"
        )
    if any(d is None for d in backbone.input_shape[1:]):
        raise ValueError(
            "The backbone needs a fixed input size (the synthetic images are made at "
            "it): build it with input_shape=(height, width, channels). Received: "
            f"backbone input shape {backbone.input_shape}")
    _check_features(backbone)


def _check_features(backbone):
    """Refuses a backbone ending in a softmax: its "features" are class
    probabilities, and the head's logits on top would train silently badly."""
    last = backbone.layers[-1] if backbone.layers else None
    activation = getattr(last, "activation", None)
    if isinstance(last, keras.layers.Softmax) or activation is keras.activations.softmax or (
            getattr(activation, "__name__", "") == "softmax"):
        raise ValueError(
            "The backbone must return features, not probabilities: wrap() adds the "
            "classification head. Drop the softmax layer (keras.applications: "
            "include_top=False, pooling='avg'). Received: a backbone whose last layer "
            f"{last.name!r} ({type(last).__name__}) applies a softmax")


def _generator_info(generator):
    if hasattr(generator, "ema_generator") and hasattr(generator, "discriminator"):
        raise ValueError(
            "wrap() takes the generator, not the whole GAN: pass `gan.generator` (its "
            f"frozen EMA generator). Received: {type(generator).__name__} {generator.name!r}")
    latent_dim = getattr(generator, "latent_dim", None)
    num_classes = getattr(generator, "num_classes", None)
    if latent_dim is None:
        inputs = getattr(generator, "inputs", None)
        if inputs and len(inputs) == 2 and len(inputs[0].shape) == 2:
            latent_dim = inputs[0].shape[-1]
    if latent_dim is None:
        raise ValueError(
            "Cannot tell the generator's latent size: give it a `latent_dim` "
            "attribute or make it a keras.Model with inputs [z, labels]. "
            f"Received: generator={generator!r}"
        )
    return int(latent_dim), num_classes, getattr(generator, "output_range", None)


def _check_generator_output(generator, latent_dim, num_classes, image_shape, resize):
    batch = min(2, num_classes)
    try:
        images = generator(
            [np.zeros((batch, latent_dim), "float32"), np.arange(batch, dtype="int32")],
            training=False,
        )
    except Exception as error:
        raise ValueError(
            "The generator must be callable as generator([z, labels], training=False) "
            "with z of shape (batch, latent_dim) and int labels of shape (batch,) "
            "(keras_mgr.generators.GeneratorAdapter wraps other signatures). Received: "
            f"calling {generator.name!r} that way raised {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}") from error
    shape = tuple(images.shape[1:])
    if shape == image_shape:
        return
    if resize and len(shape) == 3 and shape[-1] == image_shape[-1]:
        return
    hint = "pass resize_synthetic=True to resize it" if shape[-1:] == image_shape[-1:] else (
        "the channel counts differ")
    raise ValueError(
        f"The generator output shape {shape} does not match the backbone input "
        f"{image_shape} ({hint}). Received: generator output {shape}, backbone "
        f"input {image_shape}"
    )


# `keras_mgr.wrap` is this function (it hides the module of the same name), so
# the defaults it cites are reachable from it, and as keras_mgr.FINDER_DEFAULTS.
wrap.FINDER_DEFAULTS = FINDER_DEFAULTS
_DEFAULTS = {name: p.default for name, p in inspect.signature(wrap).parameters.items()}
