"""The exact meta step over k micro-batches of the synthetic batch (less memory).

<grad R, v> is a sum over synthetic samples, so the second-order pass of
`keras_mgr.meta.second_order` can run over k slices one at a time: a
first-order pass over the slices gives the whole inner gradient (v needs it),
then k second-order passes, one alive at a time. Each pass is the body of a
`tf.while_loop` (`parallel_iterations=1`), so the graph holds one copy of it
whatever k: an unrolled loop grew the traced graph, the tracing time and the
process memory with k. With BatchNorm each slice's views use their own batch
statistics, so k > 1 then differs from k = 1; without it the sum is the same.

`"auto"` (mgr's default) takes 4 slices, or 2, when they hold at least 8
synthetic samples each, else the whole batch (`terms.resolve_auto`).
"""

from keras import ops

from keras_mgr import meta
from keras_mgr.backend import tf


def second_order(theta_vars, head_vars, phi_vars, real_loss, regularization, num_slices,
                 meta_loss, optimizer, learning_rate):
    """`meta.second_order` over `num_slices` (k) micro-batches.

    `regularization(i, theta, real_state, phi, stop_gradient)`: like
    `meta.second_order`'s, on micro-batch `i` (a scalar tensor) and divided by
    k, so that the k parts sum to R. Other arguments and the result as
    `meta.second_order`'s.
    """
    n, k = len(theta_vars), int(num_slices)
    variables = list(theta_vars) + list(head_vars)
    phi = [v.value for v in phi_vars]
    theta = [v.value for v in theta_vars]
    real, aux, grads = meta.real_gradients(theta, variables, real_loss, optimizer)
    # Each body records which gradients exist (None: not connected); the loop
    # carries zeros for those, dropped afterwards.
    connected = {}

    def first_order(i, acc, weighted, synthetic, shift, state):
        with tf.GradientTape() as tape:
            part_weighted, part = regularization(i, theta, aux["real_state"], phi, None)
            scaled_r = optimizer.scale_loss(part_weighted)
        r_grads = tape.gradient(scaled_r, variables)
        connected["inner"] = [g is not None for g in r_grads]
        return (i + 1, _accumulate(acc, r_grads), weighted + _f32(part_weighted),
                synthetic + _f32(part["synthetic"]), shift + _f32(part["latent_shift"]),
                list(part["synthetic_state"]))

    # The sum starts from the real batch's gradient (no extra zeros held).
    zero = tf.zeros((), "float32")
    start = [tf.zeros(v.shape, v.dtype) if g is None else g for g, v in zip(grads, variables)]
    _, summed, weighted, synthetic, shift, state = tf.while_loop(
        lambda i, *_: i < k, first_order,
        (tf.constant(0), start, zero, zero, zero, list(aux["real_state"])),
        parallel_iterations=1)
    grads = [s if g is not None or c else None
             for s, g, c in zip(summed, grads, connected["inner"])]
    loss_val, v = meta.validation_gradient(theta, grads, n, meta_loss, aux["real_state"],
                                           optimizer, learning_rate)

    def second_order_part(i, acc):
        taped = meta.second_order_pass(
            theta, (), phi,
            lambda t, p, stop: regularization(i, t, aux["real_state"], p, stop), optimizer,
            lambda _: (v, None))
        connected["meta"] = [g is not None for g in taped.phi_gradients]
        return i + 1, _accumulate(acc, taped.phi_gradients)

    _, meta_grads = tf.while_loop(lambda i, *_: i < k, second_order_part,
                                  (tf.constant(0), _zeros_like(phi_vars)),
                                  parallel_iterations=1)
    meta_grads = [meta.meta_scale(optimizer, learning_rate, g.dtype) * g if c else None
                  for g, c in zip(meta_grads, connected["meta"])]
    aux.update({"synthetic": synthetic / k, "synthetic_state": state,
                "latent_shift": shift / k})
    return meta_grads, grads, loss_val, real + ops.cast(weighted, real.dtype), aux


def _zeros_like(variables):
    return [tf.zeros(v.shape, v.dtype) for v in variables]


def _accumulate(acc, grads):  # a None gradient leaves its (zero) slot unchanged
    return [a if g is None else a + ops.cast(g, a.dtype) for a, g in zip(acc, grads)]


def _f32(x):
    return ops.cast(x, "float32")


def mean_parts(part_list):
    """Micro-batches' `parts` as one: R and the latent shift averaged, the
    last slice's BatchNorm state (as the loop above carries it), on
    backends whose micro-batches are a Python loop (JAX, PyTorch)."""
    k = len(part_list)
    return {"synthetic": sum(_f32(p["synthetic"]) for p in part_list) / k,
            "latent_shift": sum(_f32(p["latent_shift"]) for p in part_list) / k,
            "synthetic_state": part_list[-1]["synthetic_state"]}
