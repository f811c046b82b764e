"""Checks of the parts `wrap()` receives (backbone, generator, held-out data),
each failing with a message quoting what was received."""

import keras
import numpy as np

from keras_mgr import checks, option_checks, terms


def holdout(data, mode, num_classes, image_shape, value_range=None):
    """Checked `(images, int labels)` of `meta_validation_data`, or None.

    The images must lie in `value_range` (5% slack), as real training images
    must: the lookahead scores the finder on them."""
    if data is None:
        return None
    if not terms.mode(mode).uses_finder:
        raise ValueError(
            "meta_validation_data feeds the finder's meta step, which only modes "
            f"{' and '.join(map(repr, terms.FINDER_MODES))} have. Received: mode={mode!r}")
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
    seen = None if value_range is None else option_checks.outside(images, value_range)
    if seen:
        raise ValueError(
            "meta_validation_data images must lie in the synthetic images' value range "
            f"[{value_range[0]:g}, {value_range[1]:g}] (5% slack), as the training images "
            "must: rescale them as those (e.g. x / 127.5 - 1 for 0..255 into [-1, 1]). "
            f"Received: meta_validation_data images with values in [{seen[0]:g}, {seen[1]:g}]")
    checks.numpy_labels(labels, num_classes)
    if labels.ndim == 2 and labels.shape[1] == num_classes and num_classes > 1:
        labels = labels.argmax(axis=1)
    return images, labels.reshape(-1).astype("int32")


def finder_dim(generator, latent_dim, num_classes, latent_space):
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


def check_backbone(backbone):
    if not isinstance(backbone, keras.Model) or not backbone.built:
        raise ValueError(
            "backbone must be a built keras.Model (images -> pooled features). "
            f"Received: {backbone!r}"
        )
    inputs = getattr(backbone, "inputs", None) or []
    if len(inputs) > 1 or isinstance(backbone.input_shape, list):
        raise ValueError(
            "The backbone must take one input, a batch of images (the synthetic images "
            "are fed to it alone): give other inputs as constants or layers inside it. "
            f"Received: a backbone with {len(inputs)} inputs of shapes "
            f"{[tuple(i.shape) for i in inputs]}")
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
    check_features(backbone)


# Layers that keep a probability vector one (rearranged, averaged, or noise
# and dropout, which act in training only): check_features looks through them.
_KEEP_PROBABILITIES = tuple(getattr(keras.layers, name) for name in (
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "AlphaDropout",
    "GaussianDropout", "GaussianNoise", "ActivityRegularization", "Identity", "Flatten",
    "Reshape", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D"))


def check_features(backbone):
    """Refuses a backbone whose output is a softmax: its "features" are class
    probabilities, and the head's logits on top would train silently badly.

    From the output back, layers that keep probabilities probabilities
    (`_KEEP_PROBABILITIES`, `Activation("linear")`) are looked through, and
    nested models entered; the first other layer is checked (a `Softmax`
    layer, or a softmax activation). Subclassed models: their last layer."""
    layer, after = _softmax_source(backbone)
    if layer is None:
        return
    where = f"last layer {layer.name!r} ({type(layer).__name__}) applies a softmax"
    if after:
        where = (f"layer {layer.name!r} ({type(layer).__name__}) applies a softmax, followed "
                 "only by layers that keep probabilities: " + ", ".join(
                     f"{a.name!r} ({type(a).__name__})" for a in reversed(after)))
    raise ValueError(
        "The backbone must return features, not probabilities: wrap() adds the "
        "classification head. Drop the softmax layer (keras.applications: "
        f"include_top=False, pooling='avg'). Received: a backbone whose {where}")


def _softmax_source(model):
    """`(layer, looked through)`: the layer whose softmax `model` outputs and
    the layers after it (output first), or `(None, ...)`."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if not outputs or len(outputs) != 1:  # subclassed: only the last layer is known
        last = model.layers[-1] if model.layers else None
        return (last if last is not None and _softmax(last) else None), []
    tensor, after = outputs[0], []
    while getattr(tensor, "_keras_history", None) is not None:
        layer, node = tensor._keras_history.operation, tensor._keras_history.node_index
        if isinstance(layer, keras.Model):
            inner, inner_after = _softmax_source(layer)
            return inner, after + inner_after
        if _softmax(layer):
            return layer, after
        linear = isinstance(layer, keras.layers.Activation) and (
            layer.activation is keras.activations.linear)
        inputs = layer._inbound_nodes[node].input_tensors
        if not (isinstance(layer, _KEEP_PROBABILITIES) or linear) or len(inputs) != 1:
            break
        after.append(layer)
        tensor = inputs[0]
    return None, after


def _softmax(layer):
    activation = getattr(layer, "activation", None)
    return isinstance(layer, keras.layers.Softmax) or activation is keras.activations.softmax or (
        getattr(activation, "__name__", "") == "softmax")


def generator_info(generator):
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
    latent_dim = checks.number("generator.latent_dim", latent_dim, 1, integer=True)
    num_classes = checks.number("generator.num_classes", num_classes, 2, integer=True,
                                allow_none=True)
    output_range = option_checks.value_range("generator.output_range",
                                             getattr(generator, "output_range", None))
    return latent_dim, num_classes, output_range


def check_generator_output(generator, latent_dim, num_classes, image_shape, resize,
                           value_range=None, range_source=None):
    """Calls the generator once, on 8 standard-normal latents (fixed seed; labels
    0, 1, ... cycling over the classes: zeros could hide a range problem), and
    checks what it returns: the backbone's image shape (or, with `resize`, its
    channels), finite values and, given `value_range`, values inside it with
    5% slack (real images in `fit` are held to it). `range_source`: the
    declaration `value_range` comes from (`"generator.output_range"`,
    `"input_range"`, `"saved"`: a loaded model's), None if wrap() assumed it."""
    z = np.random.default_rng(0).standard_normal((8, latent_dim)).astype("float32")
    try:
        images = generator([z, np.arange(8, dtype="int32") % num_classes], training=False)
    except Exception as error:
        raise ValueError(
            "The generator must be callable as generator([z, labels], training=False) "
            "with z of shape (batch, latent_dim) and int labels of shape (batch,) "
            "(keras_mgr.generators.GeneratorAdapter wraps other signatures). Received: "
            f"calling {generator.name!r} that way raised {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}") from error
    shape = tuple(images.shape[1:])
    if shape != image_shape and not (resize and len(shape) == 3
                                     and shape[-1] == image_shape[-1]):
        hint = ("pass resize_synthetic=True to resize it" if shape[-1:] == image_shape[-1:]
                else "the channel counts differ")
        raise ValueError(
            f"The generator output shape {shape} does not match the backbone input "
            f"{image_shape} ({hint}). Received: generator output {shape}, backbone "
            f"input {image_shape}")
    images = np.asarray(keras.ops.convert_to_numpy(images), "float32")
    bad = int(np.size(images) - np.count_nonzero(np.isfinite(images)))
    if bad:
        raise ValueError(
            "The generator returned NaN or Inf on standard-normal latents: every "
            "synthetic term would be non-finite. Check its weights and its input "
            f"scaling. Received: generator output with {bad} non-finite of "
            f"{np.size(images)} values")
    if value_range is not None:
        _check_generator_range(images, value_range, range_source)


def _check_generator_range(images, value_range, range_source):
    seen = option_checks.outside(images, value_range)
    if not seen:
        return
    bounds = f"[{value_range[0]:g}, {value_range[1]:g}]"
    rule, fix = {
        "generator.output_range": (f"its declared output_range {bounds}",
                                   "Correct generator.output_range, or rescale its output"),
        "input_range": (
            f"the backbone's input_range {bounds} (the generator declares no "
            "output_range)", "Rescale the generator's output into it, or declare the "
            "range it produces as generator.output_range and make input_range equal"),
        "saved": (f"the saved model's value range {bounds}", "Give load_model the "
                  "generator the model was trained with, or rescale its output"),
    }.get(range_source, (
        f"{bounds}, the range wrap() assumes when neither generator.output_range nor "
        "input_range is declared", "Declare the range it produces (generator.output_range "
        "= (low, high), and the backbone's input_range to match) or rescale its output "
        f"into {bounds}"))
    raise ValueError(
        f"The generator's images must lie in {rule} (5% slack): real images are checked "
        f"against that range and the views' brightness is scaled to it. {fix}. Received: "
        "generator output (8 standard-normal latents) with values in "
        f"[{seen[0]:g}, {seen[1]:g}]")
