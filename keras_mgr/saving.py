"""Saving and loading `MGRModel`: its config, its compile config, and
`load_model` for checkpoints that left the generator out."""

import keras

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


# MGRModel's configuration ---------------------------------------------------
PARTS = ("backbone", "head", "generator", "finder", "regularizer")
OPTIONS = ("num_classes", "mode", "pcr_weight", "gda_weight", "meta_every", "meta_gradient",
           "finder_learning_rate", "synthetic_batch_size", "meta_batch_size",
           "lookahead_training", "finite_difference_epsilon", "latent_dim", "image_shape",
           "latent_space", "synthetic_pool_size", "meta_holdout_size",
           "checkpoint_generator", "seed", "meta_microbatches", "fused_batchnorm")


def model_config(model, base_config):
    """`MGRModel.get_config()`: its parts serialized, then its options."""
    serialize = keras.saving.serialize_keras_object
    try:
        generator = serialize(model.generator)
    except (NotImplementedError, TypeError, AttributeError) as error:
        if not model.checkpoint_generator:
            generator = None  # supplied again by keras_mgr.load_model
        else:
            raise ValueError(
                f"The generator {model.generator.name!r} cannot be serialized (it has "
                f"no usable get_config: {type(error).__name__}), so the model cannot be "
                "saved to .keras. Either save weights only (model.save_weights("
                "'m.weights.h5') or ModelCheckpoint(save_weights_only=True)) and "
                "rebuild with wrap() before load_weights; or give the generator a "
                "get_config(); or wrap(..., checkpoint_generator=False) and load "
                "with keras_mgr.load_model(path, generator=generator)."
            ) from error
    parts = {name: getattr(model, name) for name in PARTS if name != "generator"}
    parts = {name: None if part is None else serialize(part) for name, part in parts.items()}
    return {**base_config, **parts, "generator": generator,
            **{name: getattr(model, name) for name in OPTIONS}}


def model_from_config(cls, config):
    """`MGRModel.from_config()`: the generator may come from `load_model`."""
    config = dict(config)
    # Saved before meta_microbatches existed: the whole-batch pass (1) it ran.
    config.setdefault("meta_microbatches", 1)
    for key in PARTS:
        if config[key] is not None:
            config[key] = keras.saving.deserialize_keras_object(config[key])
    if generator_override() is not None:
        config["generator"] = generator_override()
    if config["generator"] is None:
        raise ValueError(
            "This model was saved without its generator (checkpoint_generator="
            "False). Load it with keras_mgr.load_model(path, generator=generator).")
    config["generator"].trainable = False
    return cls(**config)


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
