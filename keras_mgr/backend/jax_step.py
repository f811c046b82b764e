"""`MGRModel`'s steps on JAX: the same step code, made stateless.

Keras's JAX trainer passes a step its state (trainable, non-trainable,
optimizer and metric variables) and takes the new state back.
`stateless_step` and `test_step` run the model's own step inside a
`keras.StatelessScope` over that state, so its reads, `assign`s and optimizer
updates become values.
Two optimizers and the host-read flags (the finder optimizer, the batch
check) travel as extra non-trainable state (`MGRModel.non_trainable_variables`).

Gradients are `jax.value_and_grad` of the same pure loss functions the
TensorFlow step differentiates with tapes (`keras_mgr.objective`); the meta
step's second derivative is one `jax.vjp` of the regularizer's inner gradient
with respect to phi (`second_order`), the exact form `keras_mgr.meta` computes
with nested tapes.
"""

import jax
import keras
import numpy as np
from keras import ops

from keras_mgr import meta, numerics


def extra_state(model):
    """The variables a step writes that Keras's JAX state leaves out."""
    extra = [model.batch_check.state]
    if model.uses_finder and model.finder_optimizer is not None \
            and model.finder_optimizer.built:
        extra += list(model.finder_optimizer.variables)
    return extra


def _stateless(variable_lists, values, run):
    mapping = [(v, x) for vs, xs in zip(variable_lists, values) for v, x in zip(vs, xs)]
    with keras.StatelessScope(state_mapping=mapping) as scope:
        logs = run()
    return logs, tuple([scope.get_current_value(v) for v in vs] for vs in variable_lists)


def stateless_step(model, state, data, run):
    """`(logs, new_state)` of `run(data)`, a training step written with
    variables, over Keras's JAX training state."""
    variables = (model.trainable_variables, model.non_trainable_variables,
                 model.optimizer.variables, model.metrics_variables)
    return _stateless(variables, state, lambda: run(data))


def test_step(model, state, data):
    """`(logs, new_state)` of `model._test_step(data)`."""
    variables = (model.trainable_variables, model.non_trainable_variables,
                 model.metrics_variables)
    return _stateless(variables, state, lambda: model._test_step(data))


class substitute:
    """Within the block, `variables` read as `values`, every other variable as
    in the enclosing stateless scope (a function of `values` to differentiate)."""

    def __init__(self, variables, values):
        outer = keras.src.backend.common.stateless_scope.get_stateless_scope()
        self.scope = keras.StatelessScope()
        if outer is not None:
            self.scope.state_mapping.update(outer.state_mapping)
        for variable, value in zip(variables, values):
            self.scope.state_mapping[id(variable)] = value

    def __enter__(self):
        return self.scope.__enter__()

    def __exit__(self, *exc):
        self.scope.__exit__(*exc)


def value_and_grad(loss, variables, writes=()):
    """`(value, aux, grads)`: `loss() -> (value, aux)` differentiated with
    respect to `variables`, which it reads as variables; what it assigns to
    `writes` is assigned again outside the differentiated function."""
    variables, writes = list(variables), list(writes)

    def pure(values):
        with substitute(variables, values) as scope:
            value, aux = loss()
        return value, (aux, [scope.get_current_value(w) for w in writes])

    (value, (aux, written)), grads = jax.value_and_grad(pure, has_aux=True)(
        [v.value for v in variables])
    for variable, new in zip(writes, written):
        if new is not None:
            variable.assign(new)
    return value, aux, grads


def _sum_lists(a, b):
    return [x + y for x, y in zip(a, b)]


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
            r_grads = grads_i if r_grads is None else _sum_lists(r_grads, grads_i)
            weighted, part_list = weighted + weighted_i, part_list + [parts_i]
        parts = _mean_parts(part_list)
    grads = _sum_lists(real_grads, r_grads[:n]) + list(r_grads[n:])  # loss-scaled
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
        meta_grads = part if meta_grads is None else _sum_lists(meta_grads, part)
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


def _mean_parts(part_list):
    """The micro-batches' parts as one: R and the shift averaged, the last
    slice's BatchNorm state (as the TensorFlow loop carries it)."""
    k = len(part_list)
    return {"synthetic": sum(ops.cast(p["synthetic"], "float32") for p in part_list) / k,
            "latent_shift": sum(ops.cast(p["latent_shift"], "float32") for p in part_list) / k,
            "synthetic_state": part_list[-1]["synthetic_state"]}


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


def step_functions(model):
    """`backend.step_functions` on JAX."""
    plain = make_step_function(model, model.train_step)
    meta = make_step_function(model, model.meta_train_step) if model.uses_finder else plain
    return (plain, meta, lambda state, iterator: first_step(model, state),
            flag_reader(model, [model.nonfinite, model.batch_check.state]))


def make_step_function(model, step):
    """`step(state, data)`, jit-compiled unless the model runs eagerly, as
    Keras's iterator function `(state, iterator) -> (logs, state)`."""
    if not model.run_eagerly and model.jit_compile:
        step = jax.jit(step, donate_argnums=0)
    return model._make_function(step)


def flag_reader(model, flags):
    """Wraps a Keras JAX iterator function so that, after each call, the
    host-read `flags` (variables in the non-trainable state) hold the values
    the call returned; a failed host check writes that state, its flags
    cleared, back into the variables (Keras's `evaluate` would leave them
    emptied) before the error propagates."""
    index = [_index(model.non_trainable_variables, f) for f in flags]

    def wrap(function, check):
        def run(state, iterator):
            logs, state = function(state, iterator)
            non_trainable = list(state[1])
            for flag, i in zip(flags, index):
                flag.assign(non_trainable[i])
            try:
                check()
            except Exception:
                for i in index:
                    non_trainable[i] = ops.zeros_like(non_trainable[i])
                state = (state[0], non_trainable) + tuple(state[2:])
                model._jax_state = dict(zip(_STATE_NAMES[len(state)], state))
                model._jax_state_synced = False
                model.jax_state_sync()  # evaluate leaves the variables empty otherwise
                raise
            return logs, state
        return run
    return wrap


_STATE_NAMES = {
    4: ("trainable_variables", "non_trainable_variables", "optimizer_variables",
        "metrics_variables"),
    3: ("trainable_variables", "non_trainable_variables", "metrics_variables"),
}


def _index(variables, variable):
    return next(i for i, v in enumerate(variables) if v is variable)


def build_batch(model, iterator, data_batch):
    """The first batch as Keras's `_symbolic_build` takes it (fit and
    evaluate), its labels as the class ids the step turns them into; no
    labels: the step's ValueError (`BatchCheck`), before Keras fails on None."""
    if data_batch is None:
        for _, _, data in iterator:
            data_batch = data[0] if isinstance(data, (list, tuple)) else next(data)
            break
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data_batch)
    if y is None:
        model.batch_check(x, y)
    if len(y.shape) == 2:
        y = np.zeros(y.shape[:1], "int32")
    return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)


def first_step(model, state):
    """The optimizer's step count as the state holds it (the model's own
    variables are emptied while Keras's JAX `fit` runs)."""
    return int(state[2][_index(model.optimizer.variables, model.optimizer.iterations)])
