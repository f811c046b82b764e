"""Meta-gradient accumulation: the finder steps on the mean of k meta-gradients.

One meta-gradient is mostly the noise of its batches (two from independent
batches point in nearly unrelated directions); the mean of k of them keeps
the direction they share (benchmarks/signal_curve.py measures how much).
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mgr")
class MetaAccumulator(keras.layers.Layer):
    """Sums the meta-gradients of `steps` meta steps, then hands out their mean.

    Its sums and count are weights, so a resumed run continues the window.

    Args:
        steps: k, meta steps per finder update (1: every meta step).
        shapes: the finder variables' shapes.

    Example:

    >>> acc = MetaAccumulator(2, [(2,)])
    >>> mean, due = acc.add([keras.ops.array([1.0, 2.0])], True)
    >>> bool(due)
    False
    >>> mean, due = acc.add([keras.ops.array([3.0, 0.0])], True)
    >>> bool(due), [float(v) for v in mean[0]]
    (True, [2.0, 1.0])
    """

    def __init__(self, steps, shapes, **kwargs):
        super().__init__(**kwargs)
        self.steps, self.shapes = int(steps), [tuple(s) for s in shapes]
        self.sums = [self.add_weight(shape=s, initializer="zeros", trainable=False,
                                     name=f"sum_{i}") for i, s in enumerate(self.shapes)]
        self.count = self.add_weight(shape=(), initializer="zeros", dtype="int32",
                                     trainable=False, name="count")
        self.built = True

    def add(self, grads, ok):
        """Adds `grads` where `ok`; `(mean, due)`: `due` when this was the k-th
        (the sums then restart), `mean` their mean."""
        count = ops.where(ok, self.count.value + 1, self.count.value)
        sums = [ops.where(ok, s.value + ops.cast(g, s.dtype), s.value)
                for s, g in zip(self.sums, grads)]
        due = ops.logical_and(ok, count >= self.steps)
        mean = [ops.cast(s / self.steps, g.dtype) for s, g in zip(sums, grads)]
        self.count.assign(ops.where(due, 0, count))
        for variable, s in zip(self.sums, sums):
            variable.assign(ops.where(due, ops.zeros_like(s), s))
        return mean, due

    def get_config(self):
        return {**super().get_config(), "steps": self.steps,
                "shapes": [list(s) for s in self.shapes]}
