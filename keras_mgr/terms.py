"""The synthetic regularization terms R, and the five modes as a table.

Every mode trains `CE(theta; x, y) + term.weight * term(theta, G(F_phi(z), y_s))`;
a mode is the term it adds (None for base) and whether a finder chooses the
latents by meta-learning:

| mode    | term          | finder |
|---------|---------------|--------|
| base    | -             | no     |
| gda     | `SyntheticCE` | no     |
| metagda | `SyntheticCE` | yes    |
| pcr     | `PCR`         | no     |
| mgr     | `PCR`         | yes    |

A term owns its logged name, its weight, its random draws and its replica
scaling; it is a pure function of theta (and the images) otherwise.
"""

from typing import NamedTuple

from keras_mgr import backend, numerics


class SyntheticCE:
    """gda / metagda: the cross-entropy of the synthetic images' labels.

    Args:
        weight: its weight (`gda_weight`).
        logits: `fn(theta, state, images) -> (logits, new_state)`.
        cross_entropy: `fn(labels, logits) -> loss` (the compiled loss, which
            is already scaled per replica).
    """

    name = "gda_loss"

    def __init__(self, weight, logits, cross_entropy):
        self.weight = float(weight)
        self.logits = logits
        self.cross_entropy = cross_entropy

    def draw(self, template):
        return {}

    def __call__(self, theta, state, images, draws, stop_gradient=None):
        """`(loss, new_state)`; BatchNorm state is not written back."""
        logits, state = self.logits(theta, state, images)
        return self.cross_entropy(draws["labels"], logits), state


class PCR:
    """pcr / mgr: pseudo consistency regularization, label-free.

    `D(g(T1(x_s)), g(T2(x_s)))` on the backbone's features only: no synthetic
    image enters the cross-entropy and the head gets no gradient from it.

    Args:
        weight: lambda (`pcr_weight`).
        regularizer: the `MGRRegularizer` (views and distance D).
        features: `fn(theta, state, images) -> (features, new_state)`.
    """

    name = "pcr_loss"

    def __init__(self, weight, regularizer, features):
        self.weight = float(weight)
        self.regularizer = regularizer
        self.features = features

    def draw(self, template):
        """Both views' random transformations, drawn ahead of the step."""
        return {"views": self.regularizer.draw_views(template)}

    def __call__(self, theta, state, images, draws, stop_gradient=None):
        """`(loss, new_state)`, the loss divided by the replica count."""
        views = self.regularizer.views(images, draws.get("views"))
        features, state = self.features(theta, state, views)
        loss = self.regularizer(features, stop_gradient=stop_gradient)
        return numerics.per_replica(loss), state


class Mode(NamedTuple):
    """One row of the mode table: every question about a mode is answered here.

    Example:

    >>> mode("mgr").uses_pcr, mode("mgr").uses_finder, mode("base").synthetic
    (True, True, False)
    """

    term: type | None  # the synthetic term; None: no synthetic images
    uses_finder: bool  # a meta-learned finder picks the latents

    @property
    def synthetic(self):
        """Synthetic images are generated."""
        return self.term is not None

    @property
    def uses_pcr(self):
        """PCR's consistency between two views (and its SimSiam heads)."""
        return self.term is PCR

    @property
    def uses_gda(self):
        """Synthetic images in the cross-entropy, with their labels."""
        return self.term is SyntheticCE

    @property
    def pool(self):
        """A fixed pool of synthetic images can stand in for the generator:
        synthetic images and no finder (which generates inside the step)."""
        return self.synthetic and not self.uses_finder


MODE_TABLE = {
    "base": Mode(None, False),
    "gda": Mode(SyntheticCE, False),
    "metagda": Mode(SyntheticCE, True),
    "pcr": Mode(PCR, False),
    "mgr": Mode(PCR, True),
}
MODES = tuple(MODE_TABLE)
FINDER_MODES = tuple(m for m in MODES if MODE_TABLE[m].uses_finder)
POOL_MODES = tuple(m for m in MODES if MODE_TABLE[m].pool)


def mode(name):
    """The `Mode` row of mode `name` (checked by the caller)."""
    return MODE_TABLE[name]

# The "auto" finder settings, per finder mode: the best measured ones
# (benchmarks/ablation.py and the metagda trust-region runs; docs/benchmarks.md).
FINDER_DEFAULTS = {
    "mgr": {"meta_every": 5, "finder_learning_rate": 1e-2, "finder_max_shift": None,
            "meta_microbatches": "auto"},  # per synthetic batch: resolve_auto
    "metagda": {"meta_every": 1, "finder_learning_rate": 1e-3, "finder_max_shift": 0.5,
                "meta_microbatches": 1},
}


# "auto" micro-batches hold at least this many synthetic images each.
MIN_SLICE = 8


def resolve_auto(mode, name, value, synthetic_batch_size=None):
    """`value`, or what `"auto"` means for wrap() option `name`: the one
    place every "auto" option is resolved.

    - The finder settings: the mode's best measured value
      (`FINDER_DEFAULTS`; modes without a finder take mgr's, which they never
      use). `mode=None`: the mode's default was applied already.
    - `meta_microbatches`, once the synthetic batch per replica is known: 4
      slices, else 2, of at least `MIN_SLICE` images; else 1 (the whole batch).
    - `fused_batchnorm`: True on TensorFlow, whose kernel it is.

    Example:

    >>> resolve_auto("mgr", "meta_every", "auto"), resolve_auto("mgr", "meta_every", 3)
    (5, 3)
    >>> [resolve_auto("mgr", "meta_microbatches", "auto", n) for n in (8, 16, 32, 64)]
    [1, 2, 4, 4]
    """
    if not _is_auto(value):
        return value
    if name == "fused_batchnorm":
        return backend.is_tensorflow()
    if mode is not None:
        value = FINDER_DEFAULTS.get(mode, FINDER_DEFAULTS["mgr"])[name]
    if name == "meta_microbatches" and _is_auto(value) and synthetic_batch_size is not None:
        n = int(synthetic_batch_size)
        return next((k for k in (4, 2) if n % k == 0 and n // k >= MIN_SLICE), 1)
    return value


def _is_auto(value):
    return isinstance(value, str) and value == "auto"
