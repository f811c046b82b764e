"""BatchNorm moving statistics on small data: set the momentum, warn when unconverged.

A BatchNormalization layer's moving statistics keep `momentum ** steps` of
their initial values (mean 0, variance 1) after `steps` training steps. With
Keras's default momentum 0.99 and a few hundred steps (a small dataset),
0.99^240 = 9% of the initial values remain: `predict` and `evaluate`, which
use the moving statistics, can then score chance while training accuracy is
99%. A momentum of about 0.9 converges in a few dozen steps (0.9^44 = 1%).
"""

import contextlib
import math
import warnings

import keras

from keras_mgr import checks

# Above this share of the initial statistics left, `fit` warns.
UNCONVERGED = 0.01


def batchnorm_layers(model):
    """Every BatchNormalization layer in `model`, nested models included."""
    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)]


def set_momentum(model, momentum):
    """Sets `momentum` on every BatchNormalization layer of `model`.

    Returns the number of layers changed.

    Example:

    >>> backbone = keras.applications.MobileNetV2(
    ...     include_top=False, pooling="avg", weights=None, input_shape=(32, 32, 3))
    >>> set_momentum(backbone, 0.9)   # keras.applications uses 0.999
    52
    """
    momentum = check_momentum(momentum)
    layers = batchnorm_layers(model)
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def check_momentum(momentum):
    """`momentum` as a float in [0, 1), or ValueError quoting it (bools and
    strings such as `"0.9"` are refused, not converted)."""
    try:
        checks.number("batchnorm_momentum", momentum)
        ok = momentum < 1.0
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"batchnorm_momentum must be a number in [0, 1). Received: {momentum!r}")
    return float(momentum)


@contextlib.contextmanager
def restored_on_error(model):
    """Undoes, if the block raises, what it changed on `model`'s
    BatchNormalization layers (momentum, the fused training pass of
    `keras_mgr.batchnorm.fused`, an attribute of the layer instance): a
    failed `wrap()` leaves the user's backbone as it was."""
    before = [(layer, layer.momentum, vars(layer).get("call"))
              for layer in batchnorm_layers(model)]
    try:
        yield
    except BaseException:
        for layer, momentum, call in before:
            layer.momentum = momentum
            if call is not None:
                layer.call = call
            elif "call" in vars(layer):
                del layer.call
        raise


def unconverged(model, steps, threshold=UNCONVERGED):
    """`[(layer name, momentum, momentum ** steps)]` for the layers of `model`
    whose moving statistics still hold more than `threshold` of their start."""
    return [(layer.name, layer.momentum, layer.momentum ** steps)
            for layer in batchnorm_layers(model) if layer.momentum ** steps > threshold]


def warn_if_unconverged(model, steps):
    """Warns (once per call) when `unconverged(model, steps)` is not empty."""
    stale = unconverged(model, steps)
    if not stale:
        return
    names = ", ".join(f"{name} (momentum {m}, {100 * left:.0f}% left)"
                      for name, m, left in stale[:5])
    more = f" and {len(stale) - 5} more" if len(stale) > 5 else ""
    needed = max(1, min(int(1.0 / (1.0 - m)) for _, m, _ in stale))
    # The largest momentum (2 decimals) whose statistics converge in `steps`.
    suggested = math.floor(100 * UNCONVERGED ** (1.0 / max(steps, 1))) / 100
    warnings.warn(
        f"After {steps} training steps, {len(stale)} BatchNormalization layer(s) still "
        f"hold more than {UNCONVERGED:.0%} of their initial moving statistics: "
        f"{names}{more}. predict() and evaluate() use those statistics and can score "
        f"far below training accuracy. Fix: wrap(..., batchnorm_momentum={suggested:g}) "
        f"({suggested:g}^{steps} < {UNCONVERGED:.0%}), or train for many more steps "
        f"(each momentum m needs about 4.6 / (1 - m) steps, e.g. {int(4.6 * needed)} "
        "here).",
        stacklevel=3,
    )
