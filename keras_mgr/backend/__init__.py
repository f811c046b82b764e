"""What differs between Keras backends, in one place.

`replica`: how many replicas share a step and which one this is. `jax_step`
(JAX only): the stateless training and test steps of `MGRModel`; `jax_meta`
(JAX only): their meta-gradient. `torch_step` and `torch_meta` (PyTorch
only): the same with `torch.autograd`, on the torch trainer's stateful
variables. The TensorFlow step is written with `tf.GradientTape` in
`keras_mgr.meta` and `keras_mgr.microbatches`. `tf`: TensorFlow, imported
when first used, so that keras_mgr imports and trains on JAX or PyTorch on a
machine without TensorFlow.
"""

import contextlib
import sys

import keras


class _TensorFlow:
    """The `tensorflow` module, imported on first attribute access.

    Example:

    >>> tf.constant(1.0).dtype.name  # imports TensorFlow here
    'float32'
    """

    def __getattr__(self, attribute):
        try:
            import tensorflow
        except ImportError as error:
            raise ImportError(
                f"`tf.{attribute}` needs TensorFlow, which is not installed here. On the JAX "
                "backend keras_mgr trains on NumPy arrays and Python generators without it; "
                "tf.data pipelines, TFDS and image folders, tf.distribute and the fused "
                "BatchNorm kernel need it (`pip install tensorflow`)."
            ) from error
        return getattr(tensorflow, attribute)


tf = _TensorFlow()


def is_tf_dataset(x):
    """Whether `x` is a `tf.data.Dataset`; False, and TensorFlow not imported,
    where TensorFlow has not been imported (nothing can be one then)."""
    module = sys.modules.get("tensorflow")
    return module is not None and isinstance(x, module.data.Dataset)


def name():
    """The Keras backend in use: `"tensorflow"`, `"jax"` or `"torch"` (others
    are refused when keras_mgr is imported)."""
    return keras.backend.backend()


def is_tensorflow():
    return name() == "tensorflow"


def is_jax():
    """Whether steps run statelessly over Keras's JAX state (`jax_step`)."""
    return name() == "jax"


def _steps():
    """The step module of a backend without tapes: `jax_step` or `torch_step`."""
    if is_jax():
        from keras_mgr.backend import jax_step

        return jax_step
    from keras_mgr.backend import torch_step

    return torch_step


def meta_gradients():
    """The meta step's gradients of a backend without tapes: `jax_meta` or
    `torch_meta` (`second_order` over a list of micro-batches, `finite_difference`)."""
    if is_jax():
        from keras_mgr.backend import jax_meta

        return jax_meta
    from keras_mgr.backend import torch_meta

    return torch_meta


def no_grad():
    """A block whose operations are not recorded for differentiation: what
    an optimizer's in-place update needs on PyTorch; nothing elsewhere."""
    if name() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def value_and_grad(loss, variables, writes=()):
    """`(value, aux, grads)` of `loss() -> (value, aux)`, which reads
    `variables` as variables, differentiated with respect to them. What
    `loss` assigns to the variables in `writes` (BatchNorm statistics, seed
    streams) is kept on every backend.

    Example:

    >>> w = keras.Variable(3.0)
    >>> value, aux, (grad,) = value_and_grad(lambda: (w.value ** 2, None), [w])
    >>> float(value), float(grad)
    (9.0, 6.0)
    """
    if is_tensorflow():
        with tf.GradientTape() as tape:
            value, aux = loss()
        return value, aux, tape.gradient(value, list(variables))
    return _steps().value_and_grad(loss, variables, writes)


def ordered_after(first, tensors):
    """`tensors`, computed after `first` on TensorFlow (two independent
    all-reduces may otherwise run in a different order per replica); as they
    are on JAX, whose steps are one program, and on PyTorch, which runs eagerly."""
    if not is_tensorflow():
        return tensors
    with tf.control_dependencies([first]):
        return [tf.identity(t) for t in tensors]


def call_then_check(function, check):
    """`function`, then `check()` on the host after each call: how a step's
    host-read flags are checked where the variables already hold the step's
    results (TensorFlow; JAX's `jax_step.flag_reader` reads them from the state)."""
    def run(*arguments):
        result = function(*arguments)
        check()
        return result
    return run


def check_compiled(model):
    """Refuses what `compile` set that this backend's step cannot run
    (PyTorch: `jit_compile=True`, `steps_per_execution > 1`: `torch_step.check_compiled`)."""
    if name() == "torch":
        from keras_mgr.backend import torch_step

        torch_step.check_compiled(model)


def run_step(model, arguments, step):
    """`step(data)`, a step written with variables, as this backend's trainer
    calls it: `(data)` on TensorFlow and PyTorch; `(state, data)` on JAX, run
    statelessly over that state (`jax_step.stateless_step`)."""
    if not is_jax():
        return step(*arguments)
    from keras_mgr.backend import jax_step

    return jax_step.stateless_step(model, *arguments, step)


def step_functions(model):
    """`(plain, meta, first_step, wrap)` for `schedule.alternate`: `model`'s
    compiled training step without and with the meta update, how to read the
    optimizer's step count on the first call, and how the host check runs."""
    if is_tensorflow():
        plain = model._make_function(model.train_step)
        meta = model._make_function(model.meta_train_step) if model.uses_finder else plain
        return plain, meta, lambda *arguments: model.optimizer.iterations.numpy(), None
    return _steps().step_functions(model)
