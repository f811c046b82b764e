"""Pure functions of the meta step (MPS): lookahead and finite differences.

The finder phi is meta-learned through a one-step lookahead of the classifier
weights theta (Yamaguchi et al., NeurIPS 2023, Eq. (5)-(6)):

    theta'(phi) = theta - eta * grad_theta [CE(theta; x, y) + lambda * R(theta; phi)]
    phi        <- phi - beta * grad_phi CE(theta'(phi); x_val, y_val)

Only R (PCR, or the synthetic cross-entropy of metagda) depends on phi, so

    grad_phi CE_val(theta') = -eta * lambda * (d^2 R / d phi d theta)^T v,
    v = grad_theta' CE_val(theta').

"second_order" differentiates through the inner gradient with nested tapes;
"finite_difference" takes a central difference along v (DARTS, Eq. (8)):

    (d^2 R / d phi d theta)^T v
        ~ [grad_phi R(theta + eps v) - grad_phi R(theta - eps v)] / (2 eps).

A first-order approximation that drops the second derivative gives the finder a
zero gradient, so it is not offered.
"""

from typing import NamedTuple

import keras
from keras import ops

from keras_mgr import numerics, random
from keras_mgr.backend import tf
from keras_mgr.batchnorm.fused import unfused


def lookahead(weights, gradients, learning_rate):
    """One plain SGD step `w - eta * g`, formed functionally (no `assign`).

    Whatever the user's optimizer, the lookahead is plain SGD: an `assign`
    would silently cut the meta-gradient, and `stateless_apply` is unavailable
    on the TensorFlow backend.

    Example:

    >>> w, g = keras.ops.array([1.0, 2.0]), keras.ops.array([0.5, -1.0])
    >>> [float(x) for x in lookahead(w, g, 0.5)]
    [0.75, 2.5]
    """
    return perturb(weights, gradients, -ops.convert_to_tensor(learning_rate))


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


def finite_difference_step(direction, epsilon):
    """DARTS step size: `epsilon / ||direction||` (0.01 / ||v|| in the paper)."""
    return epsilon / (global_norm(direction) + 1e-12)


def real_gradients(theta, variables, real_loss, optimizer):
    """`(real, aux, grads)`: the real batch's loss, loss-scaled gradient."""
    with tf.GradientTape() as tape:
        real, aux = real_loss(theta)
        scaled = optimizer.scale_loss(real)
    return real, aux, tape.gradient(scaled, variables)


def validation_gradient(theta, grads, n, meta_loss, real_state, optimizer, learning_rate):
    """`(loss_val, v)` at theta' = lookahead(theta, grads); v loss-scaled."""
    theta_look = lookahead(theta, numerics.replica_gradient(
        numerics.unscale(optimizer, grads[:n])), learning_rate)
    with tf.GradientTape(watch_accessed_variables=False) as tape_v:
        tape_v.watch(theta_look)
        loss_val = meta_loss(theta_look, real_state)
        scaled_val = numerics.scale_like(optimizer, loss_val)
    return loss_val, tape_v.gradient(scaled_val, theta_look)


def add_gradients(grads, more):
    """The sum of two gradient lists whose entries may be None (None + None is None)."""
    return [a if b is None else (b if a is None else a + b) for a, b in zip(grads, more)]



def inner_stop(tape):
    """A stop-gradient for `tape` only: an outer tape still sees through it
    (how the SimSiam target depends on phi)."""
    def stop(t):
        with tape.stop_recording():
            return tf.identity(t)
    return stop


def inner_product(grads, vectors):
    """`sum <g, stop_gradient(v)>` over the pairs where both exist."""
    return ops.sum(ops.stack([ops.sum(g * ops.cast(tf.stop_gradient(w), g.dtype))
                              for g, w in zip(grads, vectors)
                              if g is not None and w is not None]))


def meta_scale(optimizer, learning_rate, dtype):
    """`-eta / loss_scale` in `dtype`: turns `d <grad R, v> / d phi` (v
    loss-scaled) into the meta-gradient."""
    return -ops.cast(learning_rate, dtype) / ops.cast(numerics.unscale_factor(optimizer), dtype)


def random_direction(grads, seed_state):
    """A random direction with the global norm of `grads` (the random-drift
    control), seeded from `seed_state` without advancing it (mgr's draws)."""
    seed = random.to_uint32(seed_state.value + ops.convert_to_tensor([104729, 0],
                                                                      seed_state.dtype))
    noise = [random.normal(ops.shape(g), seed + i, g.dtype) for i, g in enumerate(grads)]
    scale = global_norm(grads) / (global_norm(noise) + 1e-30)
    return [n * ops.cast(scale, n.dtype) for n in noise]


class SecondOrderPass(NamedTuple):
    """One pass of R taped twice (`second_order_pass`)."""

    phi_gradients: list  # d <grad_theta R, v> / d phi, before the factor meta_scale gives
    inner_gradients: list  # grad R over theta, then the regularizer's heads; loss-scaled
    weighted: object  # lambda * R
    parts: dict  # R's auxiliaries (synthetic loss, BatchNorm state, latent shift)
    direction: object  # what `direction` returned beside v


def second_order_pass(theta, head_vars, phi, regularization, optimizer, direction):
    """`d <grad_theta R(theta; phi), v> / d phi` with nested tapes: the one place
    the second derivative of the meta step is taken.

    Args:
        theta: classifier weights (tensors).
        head_vars: the regularizer's own variables (SimSiam heads; may be
            empty), read as watched tensors so that the inner gradient covers them.
        phi: finder weights (tensors).
        regularization: `fn(theta, phi, stop_gradient) -> (weighted, parts)`,
            `lambda * R`; `stop_gradient` stops the inner derivative only.
        optimizer: the classifier optimizer (loss scaling).
        direction: `fn(inner_gradients) -> (v, out)`, run outside the outer
            tape's recording; v is loss-scaled, over theta.

    Returns:
        A `SecondOrderPass`.
    """
    n = len(theta)
    with tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(phi)
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            theta = [tf.identity(t) for t in theta]
            head = [tf.identity(v.value) for v in head_vars]
            inner.watch(theta + head)
            with substitute(head_vars, head), unfused():
                weighted, parts = regularization(theta, phi, inner_stop(inner))
            scaled = optimizer.scale_loss(weighted)
        inner_grads = inner.gradient(scaled, theta + head)  # loss-scaled
        with outer.stop_recording():
            v, out = direction(inner_grads)
        dot = inner_product(numerics.replica_gradient(
            numerics.unscale(optimizer, inner_grads[:n])), v)
    return SecondOrderPass(outer.gradient(dot, phi), inner_grads, weighted, parts, out)


def second_order(theta_vars, head_vars, phi_vars, real_loss, regularization, meta_loss,
                 optimizer, learning_rate):
    """The exact meta-gradient; its inner gradient, which the real update reuses.

    Args:
        theta_vars: classifier variables (backbone, head).
        head_vars: the regularizer's own variables (SimSiam heads; may be
            empty), updated by the real step too.
        phi_vars: finder variables.
        real_loss: `fn(theta) -> (loss, aux)`, the real batch's CE; `aux`
            holds `"real_state"` (BatchNorm statistics after the real batch).
        regularization: `fn(theta, real_state, phi, stop_gradient) ->
            (weighted, parts)`, `lambda * R(theta; phi)`; `stop_gradient`
            stops the inner derivative only.
        meta_loss: `fn(theta, real_state) -> loss`, CE on the validation batch.
        optimizer: the classifier optimizer (loss scaling).
        learning_rate: eta of the lookahead.

    Returns:
        `(meta_grads, inner_grads, meta_loss, total, aux)`; `inner_grads` is
        loss-scaled (over theta_vars then head_vars).
    """
    n = len(theta_vars)
    # grad_phi CE_val(theta'(phi)) = -eta * d/dphi <grad_theta R(theta; phi), v>,
    # v = grad CE_val(theta') held constant: only R depends on phi, so only R's
    # forward and inner backward are taped for the second-order pass; the real
    # batch and the validation pass are first order.
    phi = [v.value for v in phi_vars]
    theta = [v.value for v in theta_vars]
    real, aux, real_grads = real_gradients(theta, list(theta_vars) + list(head_vars),
                                           real_loss, optimizer)

    def direction(r_grads):  # v at the lookahead along the whole inner gradient
        grads = add_gradients(real_grads, r_grads)
        loss_val, v = validation_gradient(theta, grads, n, meta_loss, aux["real_state"],
                                          optimizer, learning_rate)
        return v, (grads, loss_val)

    taped = second_order_pass(
        theta, head_vars, phi,
        lambda t, p, stop: regularization(t, aux["real_state"], p, stop), optimizer, direction)
    grads, loss_val = taped.direction
    meta_grads = [meta_scale(optimizer, learning_rate, g.dtype) * g
                  for g in taped.phi_gradients]
    aux.update(taped.parts)
    return meta_grads, grads, loss_val, real + taped.weighted, aux


def finite_difference(theta_vars, head_vars, phi_vars, train_loss, meta_loss, synthesize,
                      synthetic_loss, optimizer, learning_rate, epsilon, weight):
    """The DARTS meta-gradient: a central difference along v, first order only.

    Args:
        theta_vars, head_vars, phi_vars, meta_loss, optimizer, learning_rate:
            as in `second_order`.
        train_loss: `fn(theta, phi) -> (total, aux)`, the step's whole loss.
        synthesize: `fn(phi) -> images` (the generator behind the finder).
        synthetic_loss: `fn(theta, real_state, images) -> loss`, R of fixed
            images (unweighted; replica-scaled where the step scales it).
        epsilon: DARTS step `epsilon / ||v||`.
        weight: lambda, R's weight.

    Returns:
        As `second_order`.
    """
    n = len(theta_vars)
    phi = [v.value for v in phi_vars]
    with tf.GradientTape() as tape:
        total, aux = train_loss([v.value for v in theta_vars], phi)
        scaled = optimizer.scale_loss(total)
    grads = tape.gradient(scaled, list(theta_vars) + list(head_vars))  # loss-scaled
    theta = [tf.identity(v.value) for v in theta_vars]
    theta_look = lookahead(
        theta, numerics.replica_gradient(numerics.unscale(optimizer, grads[:n])),
        learning_rate)
    with tf.GradientTape(watch_accessed_variables=False) as tape_v:
        tape_v.watch(theta_look)
        loss_val = meta_loss(theta_look, aux["real_state"])
    v = numerics.replica_gradient(tape_v.gradient(loss_val, theta_look))
    step = finite_difference_step(v, epsilon)
    # One perturbed loss at a time, differentiated w.r.t. the images, then one
    # pass back through a recomputed generator: the peak memory is that of a
    # single PCR step, not of both perturbed passes at once.
    images = tf.stop_gradient(synthesize(phi))

    def image_gradient(scale):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(images)
            loss = synthetic_loss(perturb(theta, v, scale), aux["real_state"], images)
        return tape.gradient(loss, images)

    # Control dependencies order the passes (a graph may otherwise run
    # independent branches at the same time).
    plus = image_gradient(step)
    with tf.control_dependencies([plus]):
        cotangent = plus - image_gradient(-step)
    with tf.control_dependencies([cotangent]), tf.GradientTape(
            watch_accessed_variables=False) as tape_phi:
        tape_phi.watch(phi)
        regenerated = synthesize(phi)
    d_phi = tape_phi.gradient(regenerated, phi,
                              output_gradients=ops.cast(cotangent, regenerated.dtype))
    factor = -ops.cast(learning_rate, "float32") * weight / (2.0 * step)
    meta_grads = [ops.cast(factor, g.dtype) * g for g in d_phi]
    return meta_grads, grads, loss_val, total, aux


class substitute:
    """Within the block, reads of `variables` return `values`: the SimSiam
    heads, read as tensors to differentiate (the inner gradient, reused by
    the real update, covers them)."""

    def __init__(self, variables, values):
        self.scope = keras.StatelessScope(
            state_mapping=list(zip(variables, values))) if variables else None

    def __enter__(self):
        if self.scope is not None:
            self.scope.__enter__()

    def __exit__(self, *exc):
        if self.scope is not None:
            self.scope.__exit__(*exc)
