"""`MGRModel`'s steps on PyTorch: the same step code, run eagerly.

Keras's torch trainer calls `train_step(data)` on stateful variables (each a
`torch.nn.Parameter`), as TensorFlow's trainer does on its variables, so the
step runs unchanged; its gradients are `torch.autograd.grad` of the same pure
loss functions the TensorFlow step differentiates with tapes
(`keras_mgr.objective`). The meta step's gradients are in
`keras_mgr.backend.torch_meta`.
"""

import keras
import torch


def value_and_grad(loss, variables, writes=()):
    """`(value, aux, grads)`: `loss() -> (value, aux)` differentiated with
    respect to `variables`, which it reads as variables (None where the loss
    does not depend on one, as a tape gives). What `loss` assigns is kept:
    the step is stateful here, so `writes` needs nothing."""
    value, aux = loss()
    parameters = [v.value for v in variables]
    wanted = [i for i, p in enumerate(parameters) if p.requires_grad]
    grads = [None] * len(parameters)
    if wanted and value.requires_grad:
        found = torch.autograd.grad(value, [parameters[i] for i in wanted], allow_unused=True)
        for i, grad in zip(wanted, found):
            grads[i] = grad
    return value, aux, grads


def step_functions(model):
    """`backend.step_functions` on PyTorch: Keras's torch trainer calls a
    step function on a list of `steps_per_execution` (= 1) batches."""
    plain = _step_function(model, model.train_step)
    meta = _step_function(model, model.meta_train_step) if model.uses_finder else plain
    return plain, meta, lambda data: int(model.optimizer.iterations.numpy()), None


def check_compiled(model):
    """`compile(jit_compile=True)` refused: keras_mgr's torch step runs
    eagerly, and Keras would hand its evaluation to `torch.compile`; so is
    `steps_per_execution > 1`, which Keras's torch trainer does not run."""
    if model.steps_per_execution > 1:
        raise ValueError(
            "steps_per_execution must be 1 on the PyTorch backend (Keras's torch trainer "
            f"runs one step per call). Received: steps_per_execution={model.steps_per_execution}")
    if model.jit_compile:
        raise ValueError(
            "keras_mgr runs eagerly on the PyTorch backend: its meta step takes a second "
            "derivative with torch.autograd.grad(create_graph=True), which is not built for "
            "torch.compile. Compile with jit_compile=False or 'auto' (eager on PyTorch). "
            f"Received: jit_compile={model.jit_compile!r}")


def _step_function(model, step):
    def one_step_on_data(data):
        return step(data[0])

    return one_step_on_data


def detach(tensors):
    """`tensors` (a structure; None kept) cut from the graph: constants for
    what is differentiated next, as a primal value is on JAX."""
    return keras.tree.map_structure(
        lambda t: t.detach() if isinstance(t, torch.Tensor) else t, tensors)
