"""Host-side scheduling of `fit`: which compiled step runs, and batch sizes.

The host picks the meta step every `meta_every` steps, choosing between two
compiled functions: a `tf.cond` holding the meta step inside one
XLA-compiled function is far slower on CPU (docs/keras_notes.md).
"""

import keras
from keras import ops

from keras_mgr import backend, numerics
from keras_mgr.backend import tf


def alternate(plain, meta, meta_every, steps_per_execution, first_step, after, wrap=None):
    """A `train_function` running `meta` on steps `0, k, 2k, ...`, else `plain`.

    Args:
        plain, meta: compiled step functions (Keras's: `iterator -> logs`
            on TensorFlow, `(state, iterator) -> (logs, state)` on JAX).
        meta_every: k.
        steps_per_execution: steps per call (1 when `meta_every > 1`).
        first_step: `fn(*arguments) -> int`, read on the first call (a resumed
            run continues the schedule from the optimizer's step count).
        after: `fn(steps_done)`, called after each call (the non-finite check).
        wrap: None, or `fn(function, check) -> function` running `check`
            after `function` (JAX: the check reads flags from the new state).

    Example:

    >>> calls = []
    >>> f = alternate(lambda it: calls.append("plain"), lambda it: calls.append("meta"),
    ...               meta_every=2, steps_per_execution=1, first_step=lambda it: 0,
    ...               after=lambda step: None)
    >>> for _ in range(4): f(None)
    >>> calls
    ['meta', 'plain', 'meta', 'plain']
    """
    if meta_every > 1 and steps_per_execution > 1:
        raise ValueError(
            "meta_every > 1 is scheduled on the host, one step at a time: use "
            "steps_per_execution=1 with it. Received: meta_every="
            f"{meta_every}, steps_per_execution={steps_per_execution}")
    done = []

    def check():
        after(done[0])

    wrap = wrap or backend.call_then_check
    plain, meta = wrap(plain, check), wrap(meta, check)

    def train_function(*arguments):
        if not done:
            done.append(int(first_step(*arguments)))
        step = done[0]
        done[0] += steps_per_execution
        return (meta if step % meta_every == 0 else plain)(*arguments)

    return train_function


def fit_batch_size(x, batch_size):
    """The real batch size per replica that `fit(x, batch_size=...)` will use.

    The default synthetic batch is fixed to it: otherwise a smaller last batch
    (e.g. 2 of 98 images at batch 32) would also shrink the synthetic batch,
    PCR and the meta step then running on 2 images. None if unknown.
    """
    size = None
    if backend.is_tf_dataset(x):
        spec = tf.nest.flatten(x.element_spec)[0]
        size = spec.shape[0] if spec.shape.rank else None
        if size is None:
            size = int(tf.nest.flatten(next(iter(x.take(1))))[0].shape[0])
    elif hasattr(x, "shape") and len(x.shape):
        size = min(int(batch_size or 32), int(x.shape[0]))
    return max(1, int(size) // numerics.replicas()) if size else None


def follow_fit_batch_size(model, x, batch_size):
    """Sets `model._fit_batch_size` (the default synthetic batch) to what
    `fit(x, batch_size=...)` will use; a change retraces the step functions."""
    size = fit_batch_size(x, batch_size)
    if size != model._fit_batch_size:
        model._fit_batch_size, model.train_function = size, None


class MetaStepMean(keras.metrics.Mean):
    """Mean over the epoch's meta steps; in an epoch without one (meta_every
    larger than the epoch), the previous value rather than a misleading 0."""

    def __init__(self, name, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.last = self.add_variable(shape=(), initializer="zeros", name="last",
                                      dtype=self.dtype)

    def reset_state(self):
        if hasattr(self, "last"):
            self.last.assign(self.result())
        super().reset_state()

    def result(self):
        return ops.where(self.count.value > 0, super().result(), self.last.value)
