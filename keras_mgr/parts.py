"""Checks of the parts `wrap()` receives (backbone, generator, held-out data),
each failing with a message quoting what was received."""

import keras
import numpy as np

from keras_mgr import checks


def holdout(data, mode, num_classes, image_shape):
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


def check_features(backbone):
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
    return int(latent_dim), num_classes, getattr(generator, "output_range", None)


def check_generator_output(generator, latent_dim, num_classes, image_shape, resize):
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
