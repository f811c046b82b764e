"""`fit`'s out-of-memory error, re-raised with what lowers the step's peak."""

import contextlib

from keras_mgr import backend, terms


@contextlib.contextmanager
def hint(model):
    """Re-raises `fit`'s out-of-memory error (same type) with what lowers the
    step's peak memory, quoting the model's settings: TensorFlow's
    `ResourceExhaustedError`, XLA's `RESOURCE_EXHAUSTED` runtime error on JAX,
    `torch.OutOfMemoryError` on PyTorch."""
    try:
        yield
    except Exception as error:
        if backend.is_tensorflow():
            if not isinstance(error, backend.tf.errors.ResourceExhaustedError):
                raise
            raise type(error)(error.node_def, error.op,
                              f"{message(model)}\n{error.message}") from error
        if backend.name() == "torch":
            import torch

            if not isinstance(error, torch.OutOfMemoryError):
                raise
        elif "RESOURCE_EXHAUSTED" not in str(error):
            raise
        raise type(error)(f"{message(model)}\n{error}") from error


def message(model):
    """What to change when `model`'s training step runs out of memory."""
    if model.term is None:
        return f"Out of memory in mode={model.mode!r}'s step: lower the batch_size."
    synthetic = model.synthetic_batch_size or model._fit_batch_size
    if model.uses_finder and model.meta_gradient != "finite_difference":  # random_drift too
        k = terms.resolve_auto(None, "meta_microbatches", model.meta_microbatches,
                               synthetic or 1)
        slices = ("wrap(meta_microbatches=4) runs it over 4 slices, one at a time (less "
                  "memory, a little more time: docs/benchmarks.md)" if k == 1 else
                  "a larger meta_microbatches (a divisor of the synthetic batch) cuts it further")
        return (
            f"Out of memory in mode={model.mode!r}'s step. Its exact meta step "
            "differentiates the regularizer twice over the synthetic batch, several times "
            f"a base step's peak memory over the whole batch; {slices}. Also "
            "lower: meta_gradient='finite_difference', a smaller "
            f"synthetic_batch_size. Received: meta_gradient={model.meta_gradient!r}, "
            f"meta_microbatches={model.meta_microbatches!r} ({k} slice(s)), "
            f"synthetic batch {synthetic} per replica")
    return (f"Out of memory in mode={model.mode!r}'s step: lower the batch_size or the "
            f"synthetic_batch_size. Received: synthetic batch {synthetic} per replica")
