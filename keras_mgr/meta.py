"""Pure functions of the meta step (MPS): lookahead and finite differences.

The finder phi is meta-learned through a one-step lookahead of the classifier
weights theta (Yamaguchi et al., NeurIPS 2023, Eq. (5)-(6)):

    theta'(phi) = theta - eta * grad_theta [CE(theta; x, y) + lambda * R(theta; phi)]
    phi        <- phi - beta * grad_phi CE(theta'(phi); x_val, y_val)

Only R (PCR, or the synthetic cross-entropy of metagda) depends on phi, so

    grad_phi CE_val(theta') = -eta * lambda * (d^2 R / d phi d theta)^T v,
    v = grad_theta' CE_val(theta').

"second_order" differentiates through the inner gradient with nested tapes
(`MGRModel`); "finite_difference" replaces the mixed second derivative by a
central difference along v (DARTS, Liu et al. 2019, Eq. (8)):

    (d^2 R / d phi d theta)^T v
        ~ [grad_phi R(theta + eps v) - grad_phi R(theta - eps v)] / (2 eps).

A first-order approximation that drops the second derivative gives the finder a
zero gradient, so it is not offered.
"""

from keras import ops


def lookahead(weights, gradients, learning_rate):
    """One plain SGD step `w - eta * g`, formed functionally (no `assign`).

    Whatever the user's optimizer, the lookahead is plain SGD: an `assign`
    would silently cut the meta-gradient, and `stateless_apply` is unavailable
    on the TensorFlow backend.

    Example:

    >>> [float(w) for w in lookahead([1.0, 2.0], [0.5, -1.0], 0.1)]
    [0.95, 2.1]
    """
    return [
        w if g is None else w - ops.cast(learning_rate, g.dtype) * g
        for w, g in zip(weights, gradients)
    ]


def global_norm(tensors):
    """`sqrt(sum ||t||^2)` over the non-None tensors, in float32."""
    squares = [ops.sum(ops.square(ops.cast(t, "float32"))) for t in tensors if t is not None]
    return ops.sqrt(ops.sum(ops.stack(squares))) if squares else ops.zeros(())


def perturb(weights, direction, scale):
    """`w + scale * d` for each weight (None directions leave w unchanged)."""
    return [
        w if d is None else w + ops.cast(scale, d.dtype) * d
        for w, d in zip(weights, direction)
    ]


def finite_difference_epsilon(direction, epsilon):
    """DARTS step size: `epsilon / ||direction||` (0.01 / ||v|| in the paper)."""
    return epsilon / (global_norm(direction) + 1e-12)
