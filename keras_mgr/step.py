"""One training step of `MGRModel`, in the order it runs: `gradients`,
`apply`, `write_state`, `track`; and one test step, `evaluate`.

The same code runs on every backend: gradients come from
`keras_mgr.backend.value_and_grad` and the meta step from
`Objective.meta_step_gradients`; on JAX the step runs inside a stateless scope
(`keras_mgr.backend.jax_step`), so its `assign`s become the new state.
"""

from typing import NamedTuple

import keras
from keras import ops

from keras_mgr import backend, meta, numerics, random


class Gradients(NamedTuple):
    """What a step's losses give the updates.

    `grads`: over the classifier then the regularizer's heads, loss-scaled
    under mixed precision. `meta_grads` (the finder's) and `meta_loss` are None
    on a step without the meta update. `total`: the step's loss. `aux`: the
    losses' parts (`ce`, `synthetic`, `logits`, `real_state`, ...).
    """

    meta_grads: list
    grads: list
    meta_loss: object
    total: object
    aux: dict


def gradients(model, x, y, sample_weight, meta_step):
    """The step's `Gradients`: the meta step's on `meta_step` (finder
    modes), else the gradient of `CE + weight * R`."""
    theta_vars = model.classifier_variables
    state = [v.value for v in model.backbone.non_trainable_variables]
    phi_vars = model.finder.trainable_variables if model.uses_finder else []
    draws = None if model.term is None else model.objective.draw(
        model.synthetic_batch_size or model._fit_batch_size or ops.shape(x)[0])
    if meta_step and model.uses_finder:
        x_val, y_val, val_weights = model.validation.batch()
        return Gradients(*model.objective.meta_step_gradients(
            theta_vars, state, phi_vars, x, y, draws, ops.cast(x_val, x.dtype), y_val,
            val_weights, sample_weight))

    def loss():
        total, aux = model.objective.train_loss(
            [v.value for v in theta_vars], state, [v.value for v in phi_vars], x, y, draws,
            sample_weight)
        return model.optimizer.scale_loss(total), (total, aux)

    _, (total, aux), grads = backend.value_and_grad(
        loss, theta_vars + model.objective.head_variables)
    return Gradients(None, grads, None, total, aux)


def apply(model, result, batch_ok):
    """Applies the updates where every term is finite and the batch passed its
    checks; returns that condition (a non-finite term stops `fit` on the host)."""
    aux = result.aux
    ok = numerics.record_nonfinite(model.nonfinite, model.optimizer,
                                   (aux["ce"], aux.get("synthetic")), result.meta_loss,
                                   result.grads, result.meta_grads or [])
    ok = ops.logical_and(ok, batch_ok)
    numerics.apply_if(ok, model.optimizer, result.grads,
                      model.classifier_variables + model.objective.head_variables,
                      model.nonfinite)
    if result.meta_grads is not None:
        meta_grads = backend.ordered_after(model.optimizer.iterations.value, result.meta_grads)
        # Skipped, not failed: a loss-scale overflow, or a validation buffer
        # not yet full (its zero rows would enter BatchNorm statistics).
        meta_ok = ops.logical_and(ok, ops.logical_and(
            numerics.all_finite(meta_grads), model.validation.ready()))
        if model.meta_accumulator is not None:  # the mean of the last k, every k
            meta_grads, meta_ok = model.meta_accumulator.add(meta_grads, meta_ok)
        numerics.apply_if(meta_ok, model.finder_optimizer, meta_grads,
                          model.finder.trainable_variables, model.nonfinite)
    return ok


def write_state(model, x, y, aux, ok):
    """BatchNorm statistics from the real batch (kept where the step was
    skipped); random streams as the synthetic passes left them; the batch
    into the validation buffer."""
    seeds = random.seed_states(model.backbone)
    for var, real, synthetic in zip(model.backbone.non_trainable_variables,
                                    aux["real_state"], aux["synthetic_state"]):
        var.assign(synthetic if id(var) in seeds else ops.where(ok, real, var.value))
    if model.uses_finder:
        model.validation.remember(x, y, ok)


def track(model, x, y, sample_weight, result):
    """Updates the step's metrics; returns the logs."""
    aux, batch = result.aux, ops.shape(x)[0]
    model._loss_tracker.update_state(numerics.all_replicas(result.total), sample_weight=batch)
    model.ce_tracker.update_state(numerics.all_replicas(aux["ce"]), sample_weight=batch)
    if model.term is not None:
        model.synthetic_tracker.update_state(numerics.all_replicas(aux["synthetic"]))
    if model.uses_finder:
        model.latent_shift_tracker.update_state(aux["latent_shift"])
        if result.meta_grads is not None:
            model.meta_tracker.update_state(numerics.all_replicas(result.meta_loss))
            model.meta_grad_norm_tracker.update_state(meta.global_norm(result.meta_grads))
    return model.compute_metrics(x, y, aux["logits"], sample_weight)


def evaluate(model, data):
    """The test step: cross-entropy and the compiled metrics; returns the logs."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x, y, _ = model.batch_check(x, y)  # the host raises after the batch
    logits = model(x, training=False)
    loss = model._ce(y, logits, sample_weight)
    model._loss_tracker.update_state(numerics.all_replicas(loss), sample_weight=ops.shape(x)[0])
    model._compile_metrics.update_state(y, logits, sample_weight)
    # Only what evaluation measures: the training-only terms would read 0.
    return {"loss": model._loss_tracker.result(), **model._compile_metrics.result()}
