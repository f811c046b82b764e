"""The meta step's gradients on JAX, as `keras_mgr.meta` computes them with tapes.

The exact meta-gradient's second derivative is one `jax.vjp` of the
regularizer's inner gradient with respect to phi, pulled back along the
validation gradient v (`second_order`); the finite-difference variant takes
two first-order passes along v (`finite_difference`). Both scale their losses
under a `LossScaleOptimizer` as the TensorFlow versions do.
"""

import jax
from keras import ops

from keras_mgr import meta, microbatches, numerics
from keras_mgr.backend.jax_step import substitute, value_and_grad


def second_order(theta_vars, head_vars, phi_vars, real_loss, regularizations, meta_loss,
                 optimizer, learning_rate):
    """The exact meta-gradient on JAX; the result as `keras_mgr.meta.second_order`'s.

    `regularizations`: one `fn(theta, real_state, phi) -> (weighted, parts)`
    per micro-batch (they sum to `lambda * R`). With one, R's forward and
    inner gradient are taken once and differentiated with `jax.vjp`; with
    k > 1 each slice is recomputed for its second-order pass, one at a time.
    Under loss scaling the losses are scaled as on TensorFlow: the returned
    inner gradient is loss-scaled, the meta-gradient is not.
    """
    n = len(theta_vars)
    theta = [v.value for v in theta_vars]
    extra = [v.value for v in head_vars]
    phi = [v.value for v in phi_vars]

    def scaled_real(values):
        real, aux = real_loss(values)
        return optimizer.scale_loss(real), (real, aux)

    (_, (real, aux)), real_grads = jax.value_and_grad(scaled_real, has_aux=True)(theta)
    real_state = aux["real_state"]

    def inner(regularization):
        def gradient(phi_values):
            stop = _inner_stop(regularization, theta, real_state, phi_values, head_vars, extra)

            def scaled_r(values):
                with substitute(head_vars, values[n:]):
                    weighted, parts = regularization(values[:n], real_state, phi_values, stop)
                return optimizer.scale_loss(weighted), (weighted, parts)

            (_, (weighted, parts)), grads = jax.value_and_grad(scaled_r, has_aux=True)(
                theta + extra)
            return grads, (weighted, parts)
        return gradient

    if len(regularizations) == 1:
        r_grads, pullback, (weighted, parts) = jax.vjp(
            inner(regularizations[0]), phi, has_aux=True)
        pullbacks, part_list = [pullback], [parts]
    else:
        r_grads, weighted, part_list, pullbacks = None, 0.0, [], None
        for regularization in regularizations:
            grads_i, (weighted_i, parts_i) = inner(regularization)(phi)
            r_grads = grads_i if r_grads is None else meta.add_gradients(r_grads, grads_i)
            weighted, part_list = weighted + weighted_i, part_list + [parts_i]
        parts = microbatches.mean_parts(part_list)
    grads = meta.add_gradients(real_grads, r_grads[:n]) + list(r_grads[n:])  # loss-scaled
    theta_look = meta.lookahead(theta, numerics.unscale(optimizer, grads[:n]), learning_rate)

    def scaled_val(values):
        loss_val = meta_loss(values, real_state)
        return numerics.scale_like(optimizer, loss_val), loss_val

    (_, loss_val), v = jax.value_and_grad(scaled_val, has_aux=True)(theta_look)
    # The pullback of the loss-scaled inner gradient along the unscaled v: the
    # scale enters once, as TensorFlow's `<unscale(grad R), v>` has it, and
    # `meta_scale`'s -eta / scale takes it out.
    cotangent = ([jax.lax.stop_gradient(x) for x in numerics.unscale(optimizer, v)]
                 + [ops.zeros_like(e) for e in extra])
    if pullbacks is None:
        pullbacks = [jax.vjp(inner(r), phi, has_aux=True)[1] for r in regularizations]
    meta_grads = None
    for pullback in pullbacks:
        (part,) = pullback(cotangent)
        meta_grads = part if meta_grads is None else meta.add_gradients(meta_grads, part)
    meta_grads = [meta.meta_scale(optimizer, learning_rate, g.dtype) * g for g in meta_grads]
    aux.update(parts)
    return meta_grads, grads, loss_val, real + weighted, aux


def _inner_stop(regularization, theta, real_state, phi, head_vars, head):
    """A stop-gradient for the inner derivative only (SimSiam's targets), as
    `keras_mgr.meta.inner_stop` is on TensorFlow.

    The targets are first computed outside the inner derivative (a forward
    pass at the given theta, recording what each stop receives: functions of
    phi alone there); the inner pass then reads those in the same order. The
    inner gradient sees constants, the outer derivative sees their dependence
    on phi. Returns None (`ops.stop_gradient`) where R stops nothing; XLA
    drops the recording pass's unused work (all of it for those distances).
    """
    recorded = []

    def record(t):
        recorded.append(t)
        return ops.stop_gradient(t)

    with substitute(head_vars, head):
        regularization(theta, real_state, phi, record)
    if not recorded:
        return None
    replay = iter(recorded)
    return lambda t: next(replay)


def finite_difference(theta_vars, head_vars, phi_vars, train_loss, meta_loss, synthesize,
                      synthetic_loss, optimizer, learning_rate, epsilon, weight):
    """The DARTS meta-gradient on JAX; arguments and result as
    `keras_mgr.meta.finite_difference`'s."""
    n = len(theta_vars)
    theta = [v.value for v in theta_vars]
    phi = [v.value for v in phi_vars]
    variables = list(theta_vars) + list(head_vars)

    def scaled_total():
        total, aux = train_loss([v.value for v in theta_vars], phi)
        return optimizer.scale_loss(total), (total, aux)

    _, (total, aux), grads = value_and_grad(scaled_total, variables)  # loss-scaled
    theta_look = meta.lookahead(theta, numerics.unscale(optimizer, grads[:n]), learning_rate)
    loss_val, v = jax.value_and_grad(lambda t: meta_loss(t, aux["real_state"]))(theta_look)
    step = meta.finite_difference_step(v, epsilon)
    images, pullback = jax.vjp(synthesize, phi)
    images = jax.lax.stop_gradient(images)

    def image_gradient(scale):
        return jax.grad(lambda im: synthetic_loss(meta.perturb(theta, v, scale),
                                                  aux["real_state"], im))(images)

    cotangent = image_gradient(step) - image_gradient(-step)
    (d_phi,) = pullback(ops.cast(cotangent, images.dtype))
    factor = -ops.cast(learning_rate, "float32") * weight / (2.0 * step)
    meta_grads = [ops.cast(factor, g.dtype) * g for g in d_phi]
    return meta_grads, grads, loss_val, total, aux
