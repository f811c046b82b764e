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

from keras_mgr import numerics


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


# mode: (term class, meta-learned finder)
MODE_TABLE = {
    "base": (None, False),
    "gda": (SyntheticCE, False),
    "metagda": (SyntheticCE, True),
    "pcr": (PCR, False),
    "mgr": (PCR, True),
}
MODES = tuple(MODE_TABLE)

# The "auto" finder settings, per finder mode: the best measured ones
# (benchmarks/ablation.py and the metagda trust-region runs; docs/benchmarks.md).
FINDER_DEFAULTS = {
    "mgr": {"meta_every": 5, "finder_learning_rate": 1e-2, "finder_max_shift": None,
            "meta_microbatches": "auto"},  # per synthetic batch: microbatches.resolve
    "metagda": {"meta_every": 1, "finder_learning_rate": 1e-3, "finder_max_shift": 0.5,
                "meta_microbatches": 1},
}


def resolve_auto(mode, name, value):
    """`value`, or the mode's measured default when it is `"auto"` (modes
    without a finder take mgr's, which they never use)."""
    if isinstance(value, str) and value == "auto":
        return FINDER_DEFAULTS.get(mode, FINDER_DEFAULTS["mgr"])[name]
    return value
