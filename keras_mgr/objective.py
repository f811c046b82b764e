"""The training objective as pure functions of theta, phi and the step's draws.

    total(theta, phi) = CE(theta; x, y) + weight * R(theta; synthesis(phi))
    meta(theta')      = CE(theta'; x_val, y_val)

`MGRModel` owns the variables and the Keras plumbing; `Objective` computes
losses from values (`stateless_call`), so the meta step (`keras_mgr.meta`) can
differentiate them with respect to theta and phi.
"""

import functools

import keras
from keras import ops

from keras_mgr import backend, meta, microbatches, numerics, terms
from keras_mgr.utils import full_precision


class Objective:
    """The losses of one step.

    Args:
        backbone, head: the classifier `h(g(x))`.
        term_class: the mode's term (`keras_mgr.terms`; None in mode base),
            built here on this objective's forward passes.
        weight: the term's weight.
        synthesis: a `keras_mgr.synthetic.Synthesis` (None in mode base).
        cross_entropy: `fn(labels, logits, sample_weight=None)`, the compiled loss.
        regularizer: the `MGRRegularizer` of the PCR modes (its SimSiam heads
            train with theta), else None.
        optimizer: `fn() -> optimizer`, the classifier's (loss scaling, eta).
        meta_gradient: `"second_order"`, `"finite_difference"` or `"random_drift"`.
        lookahead_training: validation pass in training mode.
        finite_difference_epsilon: DARTS step.
        seed_state: the sampler's seed variable (random-drift directions).
        meta_microbatches: k > 1 runs the second-order pass over k slices of
            the synthetic batch, one at a time (`keras_mgr.microbatches`);
            `"auto"` picks k from the synthetic batch (`terms.resolve_auto`).
    """

    def __init__(self, backbone, head, term_class, weight, synthesis, cross_entropy,
                 regularizer, optimizer, meta_gradient="second_order",
                 lookahead_training=True, finite_difference_epsilon=0.01, seed_state=None,
                 meta_microbatches=1):
        self.backbone, self.head = backbone, head
        self.term = None
        if term_class is terms.PCR:
            self.term = terms.PCR(weight, regularizer, self.features)
        elif term_class is not None:
            self.term = term_class(weight, self.logits, cross_entropy)
        self.synthesis, self.cross_entropy = synthesis, cross_entropy
        self.regularizer, self.optimizer = regularizer, optimizer
        # The meta step's gradients, computed as `meta_gradient` (the option) says.
        self.meta_step_gradients = {"second_order": self._second_order,
                                    "finite_difference": self._finite_difference,
                                    "random_drift": self._random_drift}[meta_gradient]
        self.lookahead_training = lookahead_training
        self.finite_difference_epsilon = finite_difference_epsilon
        self.seed_state = seed_state
        self.meta_microbatches = meta_microbatches

    # Draws and images ----------------------------------------------------
    def draw(self, batch_size):
        """The step's random draws: latents, labels, the term's own (views)."""
        draws = self.synthesis.draw(batch_size)
        template = ops.zeros((batch_size,) + self.synthesis.image_shape, self.synthesis.dtype)
        return {**draws, **self.term.draw(template)}

    @property
    def head_variables(self):
        """The regularizer's own trainable variables (SimSiam heads), trained
        with theta; none without PCR."""
        return [] if self.regularizer is None else self.regularizer.trainable_variables

    # Forward passes ----------------------------------------------------
    def forward(self, theta, state, images, training=True):
        """`(features, logits, new_state, losses)` of backbone + head at `theta`."""
        nb = len(self.backbone.trainable_variables)  # read when traced
        features, state, losses = self.backbone.stateless_call(
            theta[:nb], state, images, training=training, return_losses=True)
        logits, _ = self.head.stateless_call(theta[nb:], [], features)
        return features, logits, state, losses

    def logits(self, theta, state, images):
        _, logits, state, _ = self.forward(theta, state, images)
        return logits, state

    def features(self, theta, state, images):
        nb = len(self.backbone.trainable_variables)
        return self.backbone.stateless_call(theta[:nb], state, images, training=True)

    # Losses ----------------------------------------------------------
    def real_loss(self, theta, state, x, y, sample_weight=None):
        """`CE(theta; x, y)` plus the backbone's own losses; `(total, aux)`."""
        _, logits, real_state, losses = self.forward(theta, state, x)
        ce = self.cross_entropy(y, logits, sample_weight)
        total = ce + numerics.per_replica(ops.sum(losses)) if losses else ce
        return total, {"ce": ce, "logits": logits, "real_state": real_state,
                       "synthetic_state": real_state}

    def regularization(self, theta, state, phi, draws, stop_gradient=None):
        """`(weight * R(theta; phi), aux)`, the only term that depends on phi;
        `aux`: `synthetic` (R), `synthetic_state`, `latent_shift`."""
        images, shift = self.synthesis(phi, draws, return_shift=True)
        synthetic, synthetic_state = self.term(theta, state, images, draws, stop_gradient)
        aux = {"synthetic": synthetic, "synthetic_state": synthetic_state,
               "latent_shift": shift}
        return self.term.weight * synthetic, aux

    def train_loss(self, theta, state, phi, x, y, draws, sample_weight=None,
                   stop_gradient=None):
        """`CE + weight * R` and its parts, `(total, aux)`; replica scaled as
        Keras losses are under `tf.distribute`."""
        total, aux = self.real_loss(theta, state, x, y, sample_weight)
        if self.term is not None:
            weighted, parts = self.regularization(
                theta, aux["real_state"], phi, draws, stop_gradient=stop_gradient)
            aux.update(parts)
            total = total + weighted
        return total, aux

    def meta_loss(self, theta, state, x_val, y_val, weights):
        """Validation CE at `theta`, averaged over rows with weight 1."""
        _, logits, _, _ = self.forward(theta, state, x_val, training=self.lookahead_training)
        per_example = keras.losses.sparse_categorical_crossentropy(
            y_val, full_precision(logits), from_logits=True)
        weights = ops.cast(weights, per_example.dtype)
        loss = ops.sum(per_example * weights) / ops.maximum(ops.sum(weights), 1.0)
        return numerics.per_replica(loss)

    # The meta step ---------------------------------------------------------
    # meta_step_gradients(theta_vars, state, phi_vars, x, y, draws, x_val, y_val,
    # val_weights, sample_weight=None) -> (meta_grads, inner_grads, meta_loss,
    # total, aux): the finder's meta-gradient and the inner gradient over theta
    # then the regularizer, reused for the real update (loss-scaled under mixed
    # precision). The algorithm is chosen once, in __init__.
    def _second_order(self, theta_vars, state, phi_vars, x, y, draws, x_val, y_val,
                      val_weights, sample_weight=None):
        optimizer = self.optimizer()
        k = terms.resolve_auto(None, "meta_microbatches", self.meta_microbatches,
                               int(draws["labels"].shape[0]))
        if not backend.is_tensorflow():
            regularization = self._microbatch_regularization(draws, k)
            return backend.meta_gradients().second_order(
                theta_vars, self.head_variables, phi_vars,
                lambda theta: self.real_loss(theta, state, x, y, sample_weight),
                [functools.partial(regularization, i) for i in range(k)],
                lambda theta, real_state: self.meta_loss(theta, real_state, x_val, y_val,
                                                         val_weights),
                optimizer, ops.cast(optimizer.learning_rate, keras.config.floatx()))
        if k > 1:
            return microbatches.second_order(
                theta_vars, self.head_variables, phi_vars,
                lambda theta: self.real_loss(theta, state, x, y, sample_weight),
                self._microbatch_regularization(draws, k), k,
                lambda theta, real_state: self.meta_loss(theta, real_state, x_val, y_val,
                                                         val_weights),
                optimizer, ops.cast(optimizer.learning_rate, keras.config.floatx()))
        return meta.second_order(
            theta_vars, self.head_variables, phi_vars,
            lambda theta: self.real_loss(theta, state, x, y, sample_weight),
            lambda theta, real_state, phi, stop: self.regularization(
                theta, real_state, phi, draws, stop_gradient=stop),
            lambda theta, real_state: self.meta_loss(theta, real_state, x_val, y_val,
                                                     val_weights),
            optimizer, ops.cast(optimizer.learning_rate, keras.config.floatx()))

    def _finite_difference(self, theta_vars, state, phi_vars, x, y, draws, x_val, y_val,
                           val_weights, sample_weight=None):
        optimizer = self.optimizer()
        if not backend.is_tensorflow():
            return backend.meta_gradients().finite_difference(
                theta_vars, self.head_variables, phi_vars,
                lambda theta, phi: self.train_loss(theta, state, phi, x, y, draws,
                                                   sample_weight),
                lambda theta, real_state: self.meta_loss(theta, real_state, x_val, y_val,
                                                         val_weights),
                lambda phi: self.synthesis(phi, draws),
                lambda theta, real_state, images: self.term(theta, real_state, images,
                                                            draws)[0],
                optimizer, ops.cast(optimizer.learning_rate, keras.config.floatx()),
                self.finite_difference_epsilon, self.term.weight)
        return meta.finite_difference(
            theta_vars, self.head_variables, phi_vars,
            lambda theta, phi: self.train_loss(theta, state, phi, x, y, draws, sample_weight),
            lambda theta, real_state: self.meta_loss(theta, real_state, x_val, y_val,
                                                     val_weights),
            lambda phi: self.synthesis(phi, draws),
            lambda theta, real_state, images: self.term(theta, real_state, images, draws)[0],
            optimizer, ops.cast(optimizer.learning_rate, keras.config.floatx()),
            self.finite_difference_epsilon, self.term.weight)

    def _microbatch_regularization(self, draws, k):
        """`fn(i, theta, real_state, phi, stop) -> (weight * R / k, aux)` on the
        i-th of k consecutive slices of the draws (`i` may be a tensor)."""
        n = int(draws["labels"].shape[0])
        if k == 1:
            return lambda i, theta, real_state, phi, stop=None: self.regularization(
                theta, real_state, phi, draws, stop_gradient=stop)
        if n % k:
            raise ValueError(
                "meta_microbatches must divide the synthetic batch size. Received: "
                f"meta_microbatches={k}, synthetic batch size {n}")
        m = n // k

        def regularization(i, theta, real_state, phi, stop=None):
            part = keras.tree.map_structure(
                lambda t: None if t is None else ops.take(
                    ops.reshape(t, (k, m) + tuple(t.shape[1:])), i, axis=0), draws)
            weighted, aux = self.regularization(theta, real_state, phi, part,
                                                stop_gradient=stop)
            return weighted / k, aux

        return regularization

    def _random_drift(self, *args, **kwargs):
        """The control: the exact meta-gradient's norm, a random direction."""
        meta_grads, *rest = self._second_order(*args, **kwargs)
        return (meta.random_direction(meta_grads, self.seed_state), *rest)
