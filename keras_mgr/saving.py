"""Saving and loading `MGRModel`: its config, its compile config, whole-file
writes, and `load_model` for checkpoints that left the generator out."""

import keras

from keras_mgr import terms, wrap_checks
from keras_mgr.atomic_files import AtomicSaving

# Generators handed to `load_model`, innermost last (a stack: loads may nest).
_GENERATOR_OVERRIDE = []


def load_model(filepath, generator=None, **kwargs):
    """`keras.models.load_model`, optionally supplying the frozen generator.

    Needed for models wrapped with `checkpoint_generator=False`, whose
    checkpoints leave the (usually large, already saved) generator out.

    Example:

    ```python
    model = keras_mgr.wrap(backbone, generator, checkpoint_generator=False)
    model.save("m.keras")
    model = keras_mgr.load_model("m.keras", generator=generator)
    ```

    The generator is checked as `wrap()` checks it (latent size, classes,
    value range, output channels; another image size is resized, as with
    `resize_synthetic=True`) and its weights are never overwritten. Supplying
    one for a checkpoint that holds its generator is an error, since loading
    would overwrite the supplied generator's weights with the saved ones.
    """
    if generator is not None:
        _GENERATOR_OVERRIDE.append(generator)
    try:
        return keras.models.load_model(filepath, **kwargs)
    finally:
        if generator is not None:
            _GENERATOR_OVERRIDE.pop()


def generator_override():
    """The generator the innermost `load_model(..., generator=)` supplies, or None."""
    return _GENERATOR_OVERRIDE[-1] if _GENERATOR_OVERRIDE else None


class Checkpointing(AtomicSaving):
    """`MGRModel`'s saving behaviour: `save` / `save_weights` write files whole
    or not at all (`AtomicSaving`), and with `checkpoint_generator=False` no
    checkpoint holds the generator.

    Keras saves and loads every saveable it finds in `dir(model)`, properties
    included, so the `generator` property would re-expose the untracked
    generator: `dir()` leaves it out. Example: `"generator" not in dir(model)`.
    """

    def __dir__(self):
        names = super().__dir__()
        if getattr(self, "checkpoint_generator", True):
            return names
        return [name for name in names if name != "generator"]


# MGRModel's configuration ---------------------------------------------------
PARTS = ("backbone", "head", "generator", "finder", "regularizer")
OPTIONS = ("num_classes", "mode", "pcr_weight", "gda_weight", "meta_every", "meta_gradient",
           "finder_learning_rate", "synthetic_batch_size", "meta_batch_size",
           "lookahead_training", "finite_difference_epsilon", "latent_dim", "image_shape",
           "value_range", "latent_space", "synthetic_pool_size", "meta_holdout_size",
           "checkpoint_generator", "seed", "meta_microbatches", "fused_batchnorm",
           "meta_accumulation")


def model_config(model, base_config):
    """`MGRModel.get_config()`: its parts serialized, then its options."""
    serialize = keras.saving.serialize_keras_object
    generator = None  # checkpoint_generator=False: supplied again by keras_mgr.load_model
    if model.checkpoint_generator:
        try:
            generator = serialize(model.generator)
        except (NotImplementedError, TypeError, AttributeError) as error:
            raise ValueError(
                f"The generator {model.generator.name!r} cannot be serialized (it has "
                f"no usable get_config: {type(error).__name__}), so the model cannot be "
                "saved to .keras. Either save weights only (model.save_weights("
                "'m.weights.h5') or ModelCheckpoint(save_weights_only=True)) and "
                "rebuild with wrap() before load_weights; or give the generator a "
                "get_config(); or wrap(..., checkpoint_generator=False) and load "
                "with keras_mgr.load_model(path, generator=generator)."
            ) from error
    others = {name: getattr(model, name) for name in PARTS if name != "generator"}
    others = {name: None if part is None else serialize(part) for name, part in others.items()}
    return {**base_config, **others, "generator": generator,
            **{name: getattr(model, name) for name in OPTIONS}}


def model_from_config(cls, config):
    """`MGRModel.from_config()`: the generator may come from `load_model`."""
    config = dict(config)
    # Saved before meta_microbatches existed: the whole-batch pass (1) it ran.
    config.setdefault("meta_microbatches", 1)
    config.setdefault("meta_accumulation", 1)
    _move_value_range(config)
    supplied = generator_override()
    if config.get("checkpoint_generator", True):
        if supplied is not None:
            raise ValueError(
                "This model was saved with its generator (checkpoint_generator=True): "
                "load it without generator=, since loading would overwrite the weights "
                "of the generator given with the saved ones. Received: generator="
                f"{getattr(supplied, 'name', supplied)!r}")
    elif supplied is None:
        raise ValueError(
            "This model was saved without its generator (checkpoint_generator="
            "False). Load it with keras_mgr.load_model(path, generator=generator).")
    else:
        config["generator"] = None  # a file saved before the generator was left out
    for key in PARTS:
        if config[key] is not None:
            config[key] = keras.saving.deserialize_keras_object(config[key])
    if supplied is not None:
        check_supplied_generator(supplied, config)
        config["generator"] = supplied
    config["generator"].trainable = False
    return cls(**config)


def _move_value_range(config):
    """Files saved while every mode built the PCR regularizer: the generator's
    value range came from it, and modes without PCR saved one too."""
    regularizer = config.get("regularizer") or {}
    if "value_range" not in config:  # MGRRegularizer's default where it saved none
        config["value_range"] = regularizer.get("config", {}).get("value_range", (-1.0, 1.0))
    mode = terms.MODE_TABLE.get(config.get("mode"))  # an unknown mode: MGRModel says so
    if mode is not None and not mode.uses_pcr:
        config["regularizer"] = None


def check_supplied_generator(generator, config):
    """Checks a generator given to `load_model` against the saved model's
    config (deserialized parts) as `wrap()` checks one against the backbone."""
    latent_dim, classes, output_range = wrap_checks.generator_info(generator)
    name = getattr(generator, "name", type(generator).__name__)
    if latent_dim != int(config["latent_dim"]):
        raise ValueError(
            f"The generator given to load_model takes latents of size {latent_dim}, "
            f"but the model was saved with latent_dim={config['latent_dim']}. "
            f"Received: generator {name!r} with latent_dim={latent_dim}")
    if classes is not None and int(classes) != int(config["num_classes"]):
        raise ValueError(
            f"The generator given to load_model has {classes} classes, but the model "
            f"was saved with num_classes={config['num_classes']}. Received: generator "
            f"{name!r} with num_classes={classes}")
    value_range = tuple(map(float, config["value_range"]))
    if output_range is not None and tuple(map(float, output_range)) != value_range:
        raise ValueError(
            f"The generator given to load_model outputs values in {tuple(output_range)}, "
            f"but the model was saved for images in {value_range}. Received: generator "
            f"{name!r} with output_range={tuple(output_range)}")
    if generator.trainable and generator.trainable_weights:
        raise ValueError(
            "The generator must be frozen: MGR never trains it. Set `generator."
            "trainable = False` before load_model. Received: a generator with "
            f"{len(generator.trainable_weights)} trainable weights.")
    wrap_checks.check_generator_output(generator, latent_dim, int(config["num_classes"]),
                                 tuple(config["image_shape"]), resize=True,
                                 value_range=value_range, range_source="saved")


def compile_config(base_config, finder_optimizer):
    """The compile config, with the finder's optimizer when there is one."""
    config = base_config or {}
    if finder_optimizer is not None:
        config["finder_optimizer"] = keras.saving.serialize_keras_object(finder_optimizer)
    return config


def compile_arguments(config):
    """`compile()` keyword arguments from a config `compile_config` wrote."""
    config = dict(config)
    finder_optimizer = config.pop("finder_optimizer", "auto")
    config = keras.saving.deserialize_keras_object(config)
    if isinstance(finder_optimizer, dict):
        finder_optimizer = keras.saving.deserialize_keras_object(finder_optimizer)
    return {"finder_optimizer": finder_optimizer, **config}
