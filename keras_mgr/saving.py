"""Loading a wrapped model whose checkpoints left the generator out."""

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
