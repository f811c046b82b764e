"""Checks of options, `compile` arguments and callbacks that fail early with a
message quoting what was received (data: `keras_mgr.data_checks`)."""

import math
import numbers
import warnings

import keras
from keras import ops

from keras_mgr import terms

_CROSSENTROPY = ("sparse_categorical_crossentropy", "categorical_crossentropy")


def class_ids(labels, num_classes):
    """Int32 class ids from int ids `(n,)` / `(n, 1)` or one-hot `(n, num_classes)`.

    Decided from the static shape, so it costs nothing inside the step.
    """
    shape = tuple(labels.shape)
    if len(shape) == 2 and shape[-1] == num_classes and num_classes > 1:
        return ops.cast(ops.argmax(labels, axis=-1), "int32")
    if len(shape) == 2 and shape[-1] == 1:
        labels = ops.squeeze(labels, axis=-1)
    elif len(shape) != 1:
        raise ValueError(
            "Labels must be int class ids of shape (batch,) or (batch, 1), or "
            f"one-hot of shape (batch, {num_classes}) for num_classes={num_classes}. "
            f"Received: labels of shape {shape} and dtype {labels.dtype}"
        )
    return ops.cast(labels, "int32")


def __getattr__(name):
    """The data checks moved to `keras_mgr.data_checks`; importable from here."""
    if name in ("fit_data", "gan_data", "numpy_labels"):
        from keras_mgr import data_checks

        return getattr(data_checks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def logits_loss(loss):
    """The classification loss `compile` receives, made to work on logits.

    The head outputs logits and labels reach the loss as int class ids, so a
    cross-entropy given by name (or as Keras's function) becomes
    `SparseCategoricalCrossentropy(from_logits=True)`. A loss object built
    for probabilities (`from_logits=False`) would train on logits silently
    wrong: refused, as is any other loss name, a loss for one-hot labels
    (`CategoricalCrossentropy`, ...), and `None` or a dict / list of losses
    (the model has one output; Keras would fail at the first step).
    """
    if loss is None or not (isinstance(loss, str) or callable(loss)):
        raise ValueError(
            "loss must be \"auto\", a cross-entropy given by name, or one callable "
            "`loss(class_ids, logits)`: the model has one output, the head's logits. "
            f"Received: loss={loss!r}")
    if isinstance(loss, str) or loss in (keras.losses.sparse_categorical_crossentropy,
                                         keras.losses.categorical_crossentropy):
        name = loss if isinstance(loss, str) else loss.__name__
        if name not in _CROSSENTROPY:
            raise ValueError(
                f"loss given by name must be one of {_CROSSENTROPY} (computed on the "
                "head's logits); pass a callable `loss(class_ids, logits)` for anything "
                f"else. Received: loss={loss!r}")
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if _categorical(loss):
        raise ValueError(
            "Losses receive int class ids (one-hot labels are converted), so a loss for "
            "one-hot labels cannot work: use SparseCategoricalCrossentropy(from_logits=True) "
            "(or loss=\"categorical_crossentropy\" by name, read that way). Received: "
            f"loss={_name(loss)}")
    if getattr(loss, "from_logits", None) is False or (
            hasattr(loss, "get_config") and loss.get_config().get("from_logits") is False):
        raise ValueError(
            "The model's head outputs logits, but this loss expects probabilities "
            "(from_logits=False): it would train silently wrong. Use "
            "from_logits=True (or loss=\"auto\"). Received: "
            f"{type(loss).__name__} with from_logits=False")
    return loss


# Losses and metrics for one-hot labels (names without "_", lower case),
# with the form to use.
_ONE_HOT = {
    "categoricalaccuracy": "\"sparse_categorical_accuracy\" (or \"accuracy\")",
    "topkcategoricalaccuracy": "\"sparse_top_k_categorical_accuracy\"",
    "categoricalcrossentropy": "SparseCategoricalCrossentropy(from_logits=True)",
    "categoricalhinge": "none exists: compute it from predict()",
    "categoricalfocalcrossentropy": "none exists: compute it from predict()",
}
# Metric names that read probabilities (Keras builds them with from_logits=False).
_PROBABILITY_METRICS = ("auc", "crossentropy", "ce", "sparsecategoricalcrossentropy",
                        "binarycrossentropy", "bce", "binaryfocalcrossentropy")


def compile_arguments(model, optimizer, loss, metrics, finder_optimizer, weighted_metrics):
    """`compile`'s `(optimizer, loss, metrics, finder_optimizer)` with `"auto"`
    resolved (see `MGRModel.compile`), checked.

    The model has one output, logits, and labels reach the loss and the
    metrics as int class ids: a metric for one-hot labels or for
    probabilities would report wrong values without a word, so it is
    refused with the form to use; see also `logits_loss` and `learning_rate`.
    """
    if isinstance(optimizer, str) and optimizer == "auto":
        optimizer = keras.optimizers.Adam(1e-3)
    if optimizer is None:
        raise ValueError("optimizer must be \"auto\", an optimizer name or a "
                         "keras.optimizers.Optimizer. Received: optimizer=None")
    optimizer = learning_rate(keras.optimizers.get(optimizer))
    if isinstance(loss, str) and loss == "auto":
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if isinstance(metrics, str) and metrics == "auto":
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    auto_finder = isinstance(finder_optimizer, str) and finder_optimizer == "auto"
    if not model.uses_finder and not auto_finder and finder_optimizer is not None:
        warnings.warn(f"mode={model.mode!r} has no finder: finder_optimizer ignored. "
                      f"Received: {finder_optimizer!r}", stacklevel=3)
    if auto_finder:
        finder_optimizer = keras.optimizers.Adam(model.finder_learning_rate, epsilon=1e-12)
    finder_optimizer = keras.optimizers.get(finder_optimizer) if model.uses_finder else None
    if isinstance(finder_optimizer, keras.optimizers.LossScaleOptimizer) or getattr(
            finder_optimizer, "loss_scale_factor", None) is not None:
        raise ValueError(  # its apply() would divide the meta-gradient by the scale
            "The finder's meta-gradient is computed in float32 and never loss-scaled, so a "
            "finder optimizer that unscales gradients would shrink it by its scale: pass one "
            "without loss_scale_factor and not a LossScaleOptimizer. Received: "
            f"finder_optimizer={type(finder_optimizer).__name__}(loss_scale_factor="
            f"{finder_optimizer.loss_scale_factor!r})")
    for metric in _leaves(metrics) + _leaves(weighted_metrics):
        if _categorical(metric):
            raise ValueError(
                "Metrics receive int class ids (one-hot labels are converted) and logits, "
                "so this metric for one-hot labels would report wrong values: use "
                f"{_ONE_HOT[_key(metric)]}. Received: metric {_name(metric)}")
        if (metric.get_config().get("from_logits") is False if hasattr(metric, "get_config")
                else _key(metric) in _PROBABILITY_METRICS):  # an object, or a name / function
            raise ValueError(
                "Metrics receive logits (the head has no softmax), so this metric, which "
                "reads probabilities, would report wrong values: use from_logits=True "
                "(e.g. SparseCategoricalCrossentropy(from_logits=True)); an AUC also needs "
                "one-hot labels, which metrics do not receive here: compute it from "
                f"predict(). Received: metric {_name(metric)} (from_logits=False)")
    return optimizer, logits_loss(loss), metrics, finder_optimizer


def learning_rate(optimizer):
    """`optimizer`, refused if its learning rate is negative (it would also
    flip the sign of the lookahead's step eta in the meta-gradient) or zero
    (nothing would train); a schedule is checked at its first step and may
    start at 0 (warm-up)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    scheduled = isinstance(getattr(inner, "_learning_rate", None),
                           keras.optimizers.schedules.LearningRateSchedule)
    rate = float(ops.convert_to_numpy(inner.learning_rate))
    if not math.isfinite(rate) or rate < 0 or (rate == 0 and not scheduled):
        given = (f"a {type(inner._learning_rate).__name__} schedule starting at {rate:g}"
                 if scheduled else f"learning_rate={rate:g}")
        raise ValueError(
            f"The optimizer's learning rate must be {'>= 0' if scheduled else '> 0'}: a "
            "negative one ascends the loss and flips the sign of the lookahead's step in "
            f"the meta-gradient. Received: {type(inner).__name__} with {given}")
    return optimizer


def _leaves(metrics):
    """The metrics of a list, tuple or dict (per output), nested or not."""
    if isinstance(metrics, dict):
        return [m for v in metrics.values() for m in _leaves(v)]
    if isinstance(metrics, (list, tuple)):
        return [m for v in metrics for m in _leaves(v)]
    return [] if metrics is None else [metrics]


def _name(value):
    """How a loss or metric given as a name, a function or an object reads."""
    if isinstance(value, str):
        return repr(value)
    return getattr(value, "__name__", None) or type(value).__name__


def _key(value):
    """A loss or metric's name, function name or class name, lower case, no "_"."""
    name = value if isinstance(value, str) else _name(value)
    return name.lower().replace("_", "")


def _categorical(value):
    """Whether a loss or metric reads one-hot labels (`CategoricalAccuracy`, ...)."""
    return _key(value) in _ONE_HOT


def choice(name, value, choices):
    """Raises a ValueError quoting `value` unless it is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}. Received: {name}={value!r}")
    return value


def count_or_auto(name, value):
    """`"auto"`, or `value` as an integer >= 1 (ValueError quoting it)."""
    if isinstance(value, str) and value == "auto":
        return value
    if isinstance(value, str):
        raise ValueError(f"{name} must be an integer >= 1 or 'auto'. Received: {name}={value!r}")
    return number(name, value, 1, integer=True)


def number(name, value, low=0.0, strict=False, integer=False, allow_none=False):
    """`value` as a float (int if `integer`) >= `low` (> if `strict`), or
    ValueError quoting it. Refuses bools, NaN/inf, and 2.7 for an integer."""
    if value is None and allow_none:
        return None
    bound = f"{'>' if strict else '>='} {low:g}"
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(
        value) and (value > low if strict else value >= low) and (
        not integer or float(value) == int(value))
    if not ok:
        raise ValueError(f"{name} must be {kind} {bound}"
                         f"{' or None' if allow_none else ''}. Received: {name}={value!r}")
    return int(value) if integer else float(value)


# The wrap() options each part of the method reads (docs/method.md's modes).
_SYNTHETIC = ("synthetic_batch_size", "resize_synthetic", "synthetic_pool_size")
_PCR = ("consistency", "pcr_weight", "augmentation")
_GDA = ("gda_weight",)
_FINDER = ("meta_every", "meta_gradient", "finder_learning_rate", "finder_hidden_dim",
           "finder_num_layers",
           "finder_conditional", "finder_max_shift", "meta_batch_size",
           "lookahead_training", "finite_difference_epsilon", "latent_space",
           "meta_microbatches", "meta_accumulation")


def _used(mode):
    """The options `mode` reads, from its row of the mode table."""
    row = terms.mode(mode)
    return ((_SYNTHETIC if row.synthetic else ()) + (_PCR if row.uses_pcr else ())
            + (_GDA if row.uses_gda else ()) + (_FINDER if row.uses_finder else ()))


def warn_unused(mode, given, defaults):
    """Warns, naming them, about options set away from their default that
    `mode` never reads (nothing is silently ignored)."""
    if mode not in terms.MODE_TABLE:
        return []
    unused = [name for name in _SYNTHETIC + _PCR + _GDA + _FINDER
              if name not in _used(mode) and name in given
              and not _same(given[name], defaults[name])]
    if unused:
        received = ", ".join(f"{n}={given[n]!r}" for n in unused)
        warnings.warn(f"mode={mode!r} does not use {', '.join(unused)}: ignored. "
                      f"Received: {received}", stacklevel=3)
    return unused


def _same(value, default):
    try:
        return bool(value == default)
    except Exception:  # an array or a layer compared to a default
        return value is default


def checkpoint_callbacks(model, callbacks):
    """Before the first epoch: a `ModelCheckpoint` writing whole `.keras`
    files needs a serializable model (a `GeneratorAdapter` around a plain
    function is not); without this it fails only at the first epoch's end."""
    for callback in callbacks or []:
        path = str(getattr(callback, "filepath", ""))
        if not (isinstance(callback, keras.callbacks.ModelCheckpoint)
                and path.endswith(".keras") and not callback.save_weights_only):
            continue
        try:
            keras.saving.serialize_keras_object(model)
        except Exception as error:
            raise ValueError(
                f"ModelCheckpoint({path!r}) saves the whole model, which cannot be "
                "serialized here: checkpoint weights instead (a '.weights.h5' path, "
                "save_weights_only=True), or make the generator serializable. Received: "
                f"serializing raised {type(error).__name__}: {error}") from error
