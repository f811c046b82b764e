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
step's gradients are in `keras_mgr.backend.jax_meta`.
"""

import jax
import keras
from keras import ops


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


def first_step(model, state):
    """The optimizer's step count as the state holds it (the model's own
    variables are emptied while Keras's JAX `fit` runs)."""
    return int(state[2][_index(model.optimizer.variables, model.optimizer.iterations)])
