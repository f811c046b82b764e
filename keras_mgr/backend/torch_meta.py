"""The meta step's gradients on PyTorch, as `keras_mgr.meta` computes them with tapes.

The exact meta-gradient's second derivative is `torch.autograd.grad` of
`<grad_theta R, v>` with respect to phi, through R's inner gradient taken with
`create_graph=True` (`second_order`); the finite-difference variant takes two
first-order passes along v (`finite_difference`). Both scale their losses
under a loss-scaling optimizer as the TensorFlow versions do. Arguments and
results are those of `keras_mgr.backend.jax_meta`'s functions.
"""

import torch
from keras import ops

from keras_mgr import meta, microbatches, numerics
from keras_mgr.backend.torch_step import detach, value_and_grad


def _grad(output, inputs, **kwargs):
    """`torch.autograd.grad`; None for an input `output` does not depend on."""
    if not output.requires_grad:
        return [None] * len(inputs)
    return list(torch.autograd.grad(output, inputs, allow_unused=True, **kwargs))


def _leaves(values):
    """New leaf tensors holding `values`, to differentiate with respect to."""
    return [v.detach().requires_grad_() for v in values]


def _dot(grads, vectors):
    """`sum <g, v>` over the pairs where both exist (v held constant)."""
    terms = [ops.sum(g * ops.cast(v.detach(), g.dtype))
             for g, v in zip(grads, vectors) if g is not None and v is not None]
    return ops.sum(ops.stack(terms))


def second_order(theta_vars, head_vars, phi_vars, real_loss, regularizations, meta_loss,
                 optimizer, learning_rate):
    """The exact meta-gradient on PyTorch; arguments and result as
    `keras_mgr.backend.jax_meta.second_order`'s.

    With one micro-batch, R's forward and inner gradient are taken once, with
    their graph kept for the second-order pass; with k > 1 each slice is
    first taken first-order (the lookahead needs the whole inner gradient),
    then recomputed for its second-order pass, one at a time. Under loss
    scaling the returned inner gradient is loss-scaled, the meta-gradient is not.
    """
    n = len(theta_vars)
    theta = [v.value for v in theta_vars]
    head = [v.value for v in head_vars]
    phi = [v.value for v in phi_vars]
    real, aux = real_loss(theta)
    real_grads = _grad(optimizer.scale_loss(real), theta) + [None] * len(head)
    real, aux = detach((real, aux))
    real_state = aux["real_state"]

    def inner(regularization, create_graph):
        weighted, parts = _regularize(regularization, theta, real_state, phi, head_vars)
        grads = _grad(optimizer.scale_loss(weighted), theta + head, create_graph=create_graph)
        return grads, weighted, parts

    if len(regularizations) == 1:
        taped, weighted, parts = inner(regularizations[0], True)
        r_grads, weighted, parts = detach(taped), weighted.detach(), detach(parts)
    else:
        taped, r_grads, weighted, part_list = None, None, 0.0, []
        for regularization in regularizations:
            grads_i, weighted_i, parts_i = inner(regularization, False)
            r_grads = grads_i if r_grads is None else meta.add_gradients(r_grads, grads_i)
            weighted, part_list = weighted + weighted_i.detach(), part_list + [detach(parts_i)]
        parts = microbatches.mean_parts(part_list)
    grads = meta.add_gradients(real_grads, r_grads)  # loss-scaled
    theta_look = _leaves(meta.lookahead([t.detach() for t in theta],
                                        numerics.unscale(optimizer, grads[:n]), learning_rate))
    loss_val = meta_loss(theta_look, real_state)
    v = _grad(numerics.scale_like(optimizer, loss_val), theta_look)
    # <loss-scaled inner gradient, unscaled v>: the scale enters once, as in
    # TensorFlow's `<unscale(grad R), v>`, and `meta_scale` takes it out.
    v = numerics.unscale(optimizer, v)
    meta_grads = None
    for regularization in regularizations:
        inner_grads = taped if taped is not None else inner(regularization, True)[0]
        part = _grad(_dot(inner_grads[:n], v), phi)
        meta_grads = part if meta_grads is None else meta.add_gradients(meta_grads, part)
    meta_grads = [ops.zeros_like(p) if g is None else g for g, p in zip(meta_grads, phi)]
    meta_grads = [meta.meta_scale(optimizer, learning_rate, g.dtype) * g for g in meta_grads]
    aux.update(parts)
    return meta_grads, grads, loss_val.detach(), real + weighted, aux


class _TargetsNeeded(Exception):
    """Raised by an inner pass's first stop-gradient: its targets come first."""


def _regularize(regularization, theta, real_state, phi, head_vars):
    """`regularization(theta, real_state, phi, stop)` with a stop-gradient for
    the inner derivative only (SimSiam's targets), as
    `keras_mgr.meta.inner_stop` is on TensorFlow.

    A term that stops nothing runs once. One that does (SimSiam) is stopped
    at its first stop, and its targets are computed by a pass at theta and
    the heads held constant: functions of phi alone, which the inner pass
    then reads in the same order. The inner gradient sees constants, the
    outer derivative their dependence on phi.
    """
    def first(t):
        raise _TargetsNeeded

    try:
        return regularization(theta, real_state, phi, first)
    except _TargetsNeeded:
        recorded = []

    def record(t):
        recorded.append(t)
        return t.detach()

    with meta.substitute(head_vars, [v.value.detach() for v in head_vars]):
        regularization([t.detach() for t in theta], real_state, phi, record)
    replay = iter(recorded)
    return regularization(theta, real_state, phi, lambda t: next(replay))


def finite_difference(theta_vars, head_vars, phi_vars, train_loss, meta_loss, synthesize,
                      synthetic_loss, optimizer, learning_rate, epsilon, weight):
    """The DARTS meta-gradient on PyTorch; arguments and result as
    `keras_mgr.meta.finite_difference`'s."""
    n = len(theta_vars)
    phi = [v.value for v in phi_vars]

    def scaled_total():
        total, aux = train_loss([v.value for v in theta_vars], phi)
        return optimizer.scale_loss(total), (total, aux)

    _, (total, aux), grads = value_and_grad(  # loss-scaled
        scaled_total, list(theta_vars) + list(head_vars))
    total, aux = detach((total, aux))
    theta = [v.value.detach() for v in theta_vars]
    theta_look = _leaves(meta.lookahead(theta, numerics.unscale(optimizer, grads[:n]),
                                        learning_rate))
    loss_val = meta_loss(theta_look, aux["real_state"])
    v = [None if g is None else g.detach() for g in _grad(loss_val, theta_look)]
    step = meta.finite_difference_step(v, epsilon)
    # One perturbed loss at a time, differentiated with respect to the images,
    # then one pass back through a recomputed generator (peak memory of one PCR step).
    with torch.no_grad():
        images = synthesize(phi)

    def image_gradient(scale):
        leaf = images.detach().requires_grad_()
        loss = synthetic_loss(meta.perturb(theta, v, scale), aux["real_state"], leaf)
        return _grad(loss, [leaf])[0]

    cotangent = image_gradient(step) - image_gradient(-step)
    regenerated = synthesize(phi)
    d_phi = _grad(regenerated, phi, grad_outputs=ops.cast(cotangent, regenerated.dtype))
    factor = -ops.cast(learning_rate, "float32") * weight / (2.0 * step)
    meta_grads = [ops.cast(factor, g.dtype) * g for g in d_phi]
    return meta_grads, grads, loss_val.detach(), total, aux
