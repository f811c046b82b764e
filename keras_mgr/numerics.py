"""The numerics around a training step: loss scaling, replicas, non-finite terms.

Pure functions of the optimizer and tensors they are given, shared by
`MGRModel` and `ConditionalGAN`.
"""

from keras import ops

from keras_mgr import backend
from keras_mgr.backend import replica

# What `record_nonfinite` and `check_update` flag, in the order of their
# codes (1, 2, ...): the step's terms, its gradients, then the update itself.
NONFINITE_CHECKS = ("ce_loss", "synthetic", "meta_loss", "gradient", "update")


replicas = replica.count

def loss_scaled(optimizer):
    """Whether `optimizer` is a `LossScaleOptimizer` (mixed precision)."""
    return hasattr(optimizer, "dynamic_scale")


def loss_scale(optimizer):
    """What `optimizer.scale_loss` multiplies a loss by: a LossScaleOptimizer's
    dynamic scale, else the optimizer's `loss_scale_factor`; None without
    either. (Keras's `apply` divides the gradients by it again.)"""
    scale = getattr(optimizer, "dynamic_scale", None)
    return getattr(optimizer, "loss_scale_factor", None) if scale is None else scale


def unscale(optimizer, grads):
    """`grads / loss_scale` (a no-op without loss scaling)."""
    scale = loss_scale(optimizer)
    if scale is None:
        return grads
    return [None if g is None else g / ops.cast(scale, g.dtype) for g in grads]


def scale_like(optimizer, loss):
    """`loss * loss_scale`: the finder's loss scaled as the classifier's is."""
    scale = loss_scale(optimizer)
    return loss if scale is None else loss * ops.cast(scale, loss.dtype)


def unscale_factor(optimizer):
    """The factor undoing `scale_like` (1.0 without loss scaling)."""
    scale = loss_scale(optimizer)
    return 1.0 if scale is None else ops.cast(scale, "float32")


def replica_gradient(grads):
    """The gradient of this replica's own mean loss (undo the 1/R scaling).

    Under tf.distribute the lookahead is per replica: each replica forms
    theta' from its own batch's inner gradient, evaluates its own validation
    batch, and the finder optimizer averages the replicas' meta-gradients
    (its all-reduce). No collective sits inside the differentiated meta step:
    a differentiated all-reduce there was launched in a different order on
    each replica (a collective-ordering abort on 2 CPU replicas), and it would
    add a synchronisation to the most expensive part of the step.
    """
    n = replicas()
    return grads if n == 1 else [None if g is None else g * ops.cast(n, g.dtype)
                                 for g in grads]


def per_replica(value):
    """`value / R`: a loss that Keras will sum over the R replicas."""
    n = replicas()
    return value if n == 1 else value / n


def all_replicas(value):
    """`value * R`: undoes `per_replica` (for logging)."""
    n = replicas()
    return value if n == 1 else value * n


def all_finite(tensors):
    """True if every element of every (non-None) tensor is finite."""
    return ops.all(ops.stack([ops.all(ops.isfinite(t)) for t in tensors if t is not None]))


def run_if(ok, function, written):
    """Runs `function` (which assigns to `written`) only where `ok`: a `cond`
    on TensorFlow and PyTorch; on JAX, whose step is stateless, it runs and
    its results are kept only where `ok`."""
    if not backend.is_jax():
        ops.cond(ok, function, lambda: None)
        return
    before = [v.value for v in written]
    function()
    for variable, old in zip(written, before):
        variable.assign(ops.where(ok, variable.value, old))


def update_ok(optimizer, loss, grads):
    """Whether an update from `loss` and its `grads` may be applied: a finite
    loss and finite gradients, except under loss scaling, where an
    overflowing gradient is routine and the optimizer must see it (it skips
    that step and lowers its scale)."""
    finite = ops.all(ops.isfinite(loss))
    return finite if loss_scaled(optimizer) else ops.logical_and(finite, all_finite(grads))


def apply_if(ok, optimizer, grads, variables, flag=None):
    """`optimizer.apply` only where `ok`, then (given `flag`) `check_update`.

    On one device the update is skipped entirely (`cond`); on JAX, whose
    step is stateless, it is computed and its results kept only where `ok`. Under
    tf.distribute an optimizer cannot sit inside a `cond` (its all-reduce is
    a merge point), so the gradients are zeroed instead: no NaN reaches a
    weight, though momentum may still move the weights on that step.
    """
    if replicas() == 1:
        run_if(ok, lambda: _apply(optimizer, grads, variables),
               list(variables) + list(optimizer.variables))
    else:
        grads = [None if g is None else ops.where(ok, g, ops.zeros_like(g)) for g in grads]
        optimizer.apply(grads, variables)
    if flag is not None:
        check_update(flag, optimizer, variables)


def _apply(optimizer, grads, variables):
    """`optimizer.apply`: statelessly on JAX (`_stateless_apply`), outside
    autograd's recording on PyTorch (in-place updates of leaf parameters)."""
    if backend.is_jax():
        return _stateless_apply(optimizer, grads, variables)
    with backend.no_grad():
        return optimizer.apply(grads, variables)


def _stateless_apply(optimizer, grads, variables):
    """`optimizer.apply` as Keras's JAX trainer runs it: `stateless_apply`
    over the values the enclosing stateless step holds, assigned back. (A
    LossScaleOptimizer's own `apply` assigns inside a `cond`, which leaks
    tracers under `jax.jit`.)"""
    built_on = getattr(optimizer, "_trainable_variables", None)
    if built_on is not None and [id(v) for v in built_on] != [id(v) for v in variables]:
        raise ValueError(  # stateless_apply pairs values by position: never permute them
            f"{type(optimizer).__name__} {optimizer.name!r} was built on other variables "
            "(or in another order) than the update names. Received "
            f"{[v.path for v in variables]}, built on {[v.path for v in built_on]}")
    weights, slots = optimizer.stateless_apply(
        [v.value for v in optimizer.variables], grads, [v.value for v in variables])
    for variable, value in zip(list(variables) + list(optimizer.variables),
                               list(weights) + list(slots)):
        variable.assign(value)


def check_update(flag, optimizer, variables):
    """Flags `"update"` in `flag` when the weights or the optimizer's state
    are non-finite after an update.

    Finite losses and gradients can still produce them: Adam's second moment
    overflows to inf from gradients near 1e20 in float32, and the next
    update turns inf - inf into NaN weights. Checked after the update, so
    the host can stop at the step that broke them and say so.
    """
    state = [v.value for v in list(variables) + list(optimizer.variables)
             if "float" in str(v.dtype)]
    code = ops.where(all_finite(state), 0, NONFINITE_CHECKS.index("update") + 1)
    flag.assign(ops.where(flag.value > 0, flag.value, ops.cast(code, flag.dtype)))


def record_nonfinite(flag, optimizer, terms, meta_loss, grads, meta_grads):
    """Stores in `flag` which term (if any) is non-finite; returns True if all are.

    `terms`: `(ce, synthetic)` (synthetic may be None). The code stored is 0
    if all are finite, else 1 + the index in `NONFINITE_CHECKS` of the first bad one.
    The flag is sticky until the host reads it (`raise_if_nonfinite`), so
    with `steps_per_execution > 1` a bad step is not hidden by later ones.
    """
    scaled = loss_scaled(optimizer)
    bad = [ops.zeros(()) if t is None else ops.cast(ops.logical_not(
        ops.all(ops.isfinite(t))), "float32") for t in terms]
    if meta_loss is None:
        bad.append(ops.zeros(()))
    elif scaled:
        # An overflowing loss-scaled inner gradient makes theta' infinite:
        # the LossScaleOptimizer skips the step, the finder skips it too.
        bad.append(ops.cast(ops.logical_and(
            ops.logical_not(ops.all(ops.isfinite(meta_loss))), all_finite(grads)), "float32"))
    else:
        bad.append(ops.cast(ops.logical_not(ops.all(ops.isfinite(meta_loss))), "float32"))
    # With loss scaling an overflowing gradient is routine: the optimizer skips it.
    bad.append(ops.zeros(()) if scaled else ops.cast(
        ops.logical_not(all_finite(grads + meta_grads)), "float32"))
    bad = ops.stack(bad)
    if replica.replica_id() is not None:
        # Reduced in a merge_call: collectives launched from the replica
        # threads were ordered differently per replica (an abort).
        import tensorflow as tf

        bad = tf.distribute.get_replica_context().merge_call(
            lambda strategy, value: strategy.extended.reduce_to(
                tf.distribute.ReduceOp.SUM, value, value),
            args=(bad,))
    code = ops.where(ops.any(bad > 0), ops.cast(ops.argmax(bad > 0), "int32") + 1, 0)
    code = ops.where(flag.value > 0, flag.value, code)
    flag.assign(code)
    return ops.equal(code, 0)


def raise_if_nonfinite(flag, synthetic_name, step, steps_per_execution=1):
    """On the host: raises `FloatingPointError` naming the term `flag` holds
    (and resets it); `step` is the 1-based index of the last step run."""
    code = int(flag.numpy())
    if not code:
        return
    term = NONFINITE_CHECKS[code - 1] if code != 2 else synthetic_name
    if steps_per_execution > 1:
        step = f"{step - steps_per_execution + 1}..{step}"
    flag.assign(0)
    if term == "update":
        raise FloatingPointError(
            f"Non-finite weights or optimizer state after the update of training step "
            f"{step}, from finite losses and gradients (e.g. Adam's second moment "
            "overflowing on gradients near 1e20): training stopped at that step and "
            "the model's weights are no longer usable. Reload the last checkpoint "
            "(keras_mgr.callbacks.AtomicBackup resumes from it) and lower the "
            "learning rate or pcr_weight, or check the data.")
    hint = " An out-of-range label gives a NaN ce_loss on GPU." if term == "ce_loss" else ""
    raise FloatingPointError(
        f"Non-finite {term} at training step {step}: training stopped and "
        f"this step's updates were skipped, so no weight took a NaN "
        f"(under tf.distribute: zeroed, momentum may still move weights).{hint} "
        "Lower the learning rate or pcr_weight, or check the data."
    )
