"""Checks of `wrap()`'s options, made before `wrap()` builds or changes anything.

Each failure is a ValueError that states the rule and ends with what was
received: without these, `int(2.5)` would silently train a width-2 finder, a
truthy `"false"` would switch an option on, and a size that cannot fit would
fail deep inside TensorFlow, naming neither the option nor the memory.
"""

import math
import numbers
import os

import numpy as np

from keras_mgr import batchnorm, checks, terms

# Slack around a value range, the same as for real images in `fit`.
RANGE_SLACK = 0.05
# Bound on the memory one option may ask for where the machine's cannot be read.
FALLBACK_MEMORY = 2**40
FLAGS = ("finder_conditional", "lookahead_training", "resize_synthetic",
         "checkpoint_generator", "fused_batchnorm")
# The seed streams are int64 and wrap() also uses `seed + 1`.
MAX_SEED = 2**63 - 2


def flag(name, value):
    """`value` as a bool; only `True`, `False` and NumPy bools pass (a string
    such as `"false"` is truthy, `0`/`1` hide a mistyped option)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{name} must be True or False. Received: {name}={value!r}")


def seed(value, name="seed"):
    """`value` as an int in [0, MAX_SEED], or None. Floats, bools and strings
    are refused: a seed names a random stream, it is not a quantity."""
    if value is None:
        return None
    if (isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
            and 0 <= value <= MAX_SEED):
        return int(value)
    raise ValueError(f"{name} must be an integer in [0, 2**63 - 2] or None. "
                     f"Received: {name}={value!r}")


def max_shift(name, value):
    """The finder's trust region: a finite number > 0, or None (unbounded)."""
    if value is None:
        return None
    if (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value) and value > 0):
        return float(value)
    raise ValueError(f"{name} must be > 0 and finite, or None (unbounded). "
                     f"Received: {name}={value!r}")


def value_range(name, value):
    """`(low, high)` as floats, finite with low < high, or None."""
    if value is None:
        return None
    try:
        low, high = value
        ok = all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
                 and math.isfinite(v) for v in (low, high)) and low < high
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a pair (low, high) of finite numbers with low < "
                         f"high, or None. Received: {name}={value!r}")
    return float(low), float(high)


def augmentation(value):
    """None (the default views) or a callable making one view of a batch."""
    if value is None or callable(value):
        return value
    raise ValueError(
        "augmentation must be a layer or function mapping a batch of images to one "
        "random view of it (e.g. keras_mgr.ViewAugmentation(flip=False)), or None for "
        f"the default views. Received: augmentation={value!r}")


def outside(values, bounds):
    """`(min, max)` of `values` if they leave `bounds` by more than the
    slack (5% of its width), else None."""
    low, high = bounds
    slack = RANGE_SLACK * (high - low)
    lowest, highest = float(np.min(values)), float(np.max(values))
    if lowest < low - slack or highest > high + slack:
        return lowest, highest
    return None


def options(given):
    """wrap()'s arguments (`given`, by name) checked for type and range, with
    the values wrap() passes on: `"auto"` stays where MGRModel resolves it,
    `finder_max_shift` is resolved for the mode."""
    mode = checks.choice("mode", given["mode"], terms.MODES)
    number = checks.number
    checked = {name: flag(name, terms.resolve_auto(mode, name, given[name])) for name in FLAGS}
    # "auto" is passed on as "auto": a saved model resolves it where it is loaded.
    checked["fused_batchnorm"] = given["fused_batchnorm"]
    checked["seed"] = seed(given["seed"])
    checked["num_classes"] = number("num_classes", given["num_classes"], 2, integer=True,
                                    allow_none=True)
    from keras_mgr.mgr_model import META_GRADIENTS  # mgr_model imports the finder

    checks.choice("meta_gradient", given["meta_gradient"], META_GRADIENTS)
    for name in ("pcr_weight", "gda_weight"):
        number(name, given[name])
    number("meta_every", terms.resolve_auto(mode, "meta_every", given["meta_every"]), 1,
           integer=True)
    number("finder_learning_rate", terms.resolve_auto(
        mode, "finder_learning_rate", given["finder_learning_rate"]), strict=True)
    number("finite_difference_epsilon", given["finite_difference_epsilon"], strict=True)
    checks.count_or_auto("meta_microbatches", terms.resolve_auto(
        mode, "meta_microbatches", given["meta_microbatches"]))
    checked["finder_max_shift"] = max_shift("finder_max_shift", terms.resolve_auto(
        mode, "finder_max_shift", given["finder_max_shift"]))
    for name in ("finder_hidden_dim", "finder_num_layers", "meta_batch_size",
                 "meta_accumulation"):
        checked[name] = number(name, given[name], 1, integer=True)
    checked["synthetic_batch_size"] = number(
        "synthetic_batch_size", given["synthetic_batch_size"], 1, integer=True, allow_none=True)
    pool = checked["synthetic_pool_size"] = number(
        "synthetic_pool_size", given["synthetic_pool_size"], integer=True)
    if pool and not terms.mode(mode).pool:
        raise ValueError(
            "synthetic_pool_size needs a mode with synthetic images and no finder "
            f"({', '.join(terms.POOL_MODES)}): the finder must generate inside the step. Received: "
            f"mode={mode!r}, synthetic_pool_size={pool}")
    if given["batchnorm_momentum"] is not None:
        batchnorm.check_momentum(given["batchnorm_momentum"])
    checked["augmentation"] = augmentation(given["augmentation"])
    checked["input_range"] = value_range("input_range", given["input_range"])
    return checked


def physical_memory():
    """Bytes of physical memory of this machine (a container's limit may be
    lower; FALLBACK_MEMORY where unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return FALLBACK_MEMORY


def memory(mode, image_shape, compute_bytes, finder_dim, num_classes, checked):
    """Refuses an option whose own buffers or weights alone are larger than
    the machine's physical memory (`physical_memory()`): nothing could hold
    them, and TensorFlow would fail (or the system kill the process) without
    naming the option. Counts lower bounds: float32 images (the synthetic
    batch: `compute_bytes` per value, with PCR's two views), finder weights
    without their optimizer state."""
    pixels = math.prod(int(d) for d in image_shape)
    shape = tuple(int(d) for d in image_shape)
    asks = []  # (option, what it asks for, bytes, received)
    if terms.mode(mode).uses_finder:
        n = checked["meta_batch_size"]
        asks.append(("meta_batch_size", f"a validation buffer of {_count(n)} images of shape "
                     f"{shape}", n * (4 * pixels + 4), f"meta_batch_size={n}"))
        width, layers = checked["finder_hidden_dim"], checked["finder_num_layers"]
        inputs = finder_dim + (num_classes if checked["finder_conditional"] else 0)
        weights = (inputs + 1) * width + (layers - 1) * (width + 1) * width + (
            width + 1) * finder_dim
        asks.append(("finder_hidden_dim with finder_num_layers",
                     f"a finder of {_count(weights)} weights", 4 * weights,
                     f"finder_hidden_dim={width}, finder_num_layers={layers}"))
    n = checked["synthetic_batch_size"]
    if n and terms.mode(mode).synthetic:
        views = 3 if terms.mode(mode).uses_pcr else 1
        asks.append(("synthetic_batch_size", f"{_count(n)} synthetic images of shape {shape}"
                     + (" and their two views" if views > 1 else ""),
                     n * views * pixels * compute_bytes, f"synthetic_batch_size={n}"))
    n = checked["synthetic_pool_size"]
    if n:
        asks.append(("synthetic_pool_size", f"a pool of {_count(n)} images of shape {shape}",
                     n * (4 * pixels + 4), f"synthetic_pool_size={n}"))
    limit = physical_memory()
    for option, what, needed, received in asks:
        if needed > limit:
            raise ValueError(
                f"{option} asks for {what}: at least {_gib(needed)} GiB, more than this "
                f"machine's {_gib(limit)} GiB of memory. Lower it. Received: {received}")


def _count(n):
    return f"{n:,}" if n < 10**15 else f"about 10**{len(str(n)) - 1}"


def _gib(size):
    """`size` bytes in GiB, readable however large."""
    gib = size / 2**30 if size < 2**1000 else math.inf
    return f"{gib:,.1f}" if gib < 1e6 else (
        f"{gib:.2e}" if math.isfinite(gib) else f"about 10**{len(str(size // 2**30)) - 1}")
