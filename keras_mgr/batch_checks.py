"""Checking each batch inside the compiled step; the host reads the verdict.

`fit` checks NumPy arrays in full and a dataset's first batch before it
trains (`keras_mgr.data_checks`); later batches of a `tf.data` dataset, and
every batch of a Python generator or a `keras.utils.PyDataset`, reach the
step unchecked. `BatchCheck` checks every batch in the step with a few
reductions over it (label integrality and range, one-hot rows, image values
and size) and keeps the first bad batch's problem and values in a variable
that the host reads after each call of the step function (as `numerics`
does for non-finite terms); a training step with a bad batch skips its
updates. A variable, not `tf.debugging` asserts: it works under XLA and
tf.distribute alike.
"""

import keras
import numpy as np
from keras import ops

from keras_mgr import backend, checks, numerics
from keras_mgr.backend import tf
from keras_mgr.data_checks import RANGE_SLACK

# What the code in `BatchCheck.state[0]` names (1, 2, ...).
PROBLEMS = ("label_integer", "label_range", "one_hot", "value_range", "shape")


class BatchCheck:
    """Checks of each `(images, labels)` batch against `num_classes`,
    `image_shape` and, unless None, the `value_range` images must lie in (5%
    slack, as up front).

    `state` holds `[code, values...]` of the first bad batch until the host
    reads it: a variable, but none of the model's weights, so `.keras` files
    and checkpoints keep the variables they had.
    """

    def __init__(self, num_classes, image_shape, value_range=None):
        self.num_classes, self.image_shape = int(num_classes), tuple(image_shape)
        self.value_range = None if value_range is None else tuple(map(float, value_range))
        self.width = 1 + max(4, len(self.image_shape))
        self.state = keras.Variable(np.zeros(self.width, "float32"), trainable=False,
                                    name="batch_check", aggregation="only_first_replica")
        self.batches, self.what = 0, "evaluate"

    @classmethod
    def of(cls, model):
        """The check of an `MGRModel`'s batches: images in the generator's
        value range in the modes that use synthetic images."""
        return cls(model.num_classes, model.image_shape,
                   None if model.term is None else model.value_range)

    def __call__(self, images, labels):
        """In the step: `(images, class_ids, ok)`; `ok` is False from the
        first bad batch on, until the host has read the state.

        A bad batch still runs through the step (its updates skipped), its
        out-of-range ids set to 0 and its images cropped or padded to
        `image_shape`, so that no kernel fails first with a bare "Graph
        execution error". A good batch's values are unchanged.
        """
        if labels is None:
            raise ValueError("Labels are needed: the data must yield (images, labels) or "
                             "(images, labels, sample_weight) batches. Received: batches of "
                             f"images of shape {tuple(images.shape)} alone")
        images, found = self.shape(images)
        ids = checks.class_ids(labels, self.num_classes)
        ids = ops.where(ops.logical_and(ids >= 0, ids < self.num_classes), ids, 0)
        found += self._labels(labels)
        if self.value_range is not None:
            found.append(self._values(images))
        old = self.state.value
        new = ops.where(old[0] > 0, old, _agree(self._first(found)))
        self.state.assign(new)
        return images, ids, ops.equal(new[0], 0)

    def static_shape(self, images):
        """Raises a ValueError when the images' size, as far as it is known
        where the step or `call` is traced, is not `image_shape`."""
        expected, shape = self.image_shape, images.shape
        rank = shape.rank if hasattr(shape, "rank") else len(shape)  # TensorShape: None
        static = None if rank is None else tuple(shape[1:])
        if static is not None and (len(static) != len(expected) or (
                None not in static and static != expected)):
            one = static[-len(expected):] == expected[1:] and len(static) < len(expected)
            raise ValueError(f"Images of shape {expected} were expected by the backbone"
                             f"{': for one image pass x[None]' if one else ''}. "
                             f"Received: images of shape {tuple(images.shape)}")
        return static

    def sized(self, images):
        """For `call` (`predict`): `static_shape`, then a size unknown when
        traced checked as it runs (an error, not predictions on other-sized
        images through the pooling)."""
        static = self.static_shape(images)
        if static is not None and None not in static:
            return images
        return tf.ensure_shape(images, (None,) + self.image_shape)

    def shape(self, images):
        """`(images, found)`: `static_shape`, then a size unknown at tracing
        checked in the step, the images cropped or padded to `image_shape`."""
        expected = self.image_shape
        static = self.static_shape(images)
        if static is not None and None not in static:
            return images, []
        images = tf.ensure_shape(images, (None,) * (len(expected) + 1))
        actual = tf.shape(images)[1:]
        images = images[(slice(None),) + tuple(slice(0, d) for d in expected)]
        cropped = tf.shape(images)
        images = tf.pad(images, [[0, 0]] + [[0, d - cropped[i + 1]] for i, d in enumerate(
            expected)])
        images = tf.ensure_shape(images, (None,) + expected)
        return images, [("shape", tf.reduce_any(actual != expected),
                         tf.unstack(tf.cast(actual, "float32")))]

    def _labels(self, labels):
        n = self.num_classes
        y = ops.cast(labels, "float32")
        if len(labels.shape) == 2 and labels.shape[-1] == n and n > 1:  # as class_ids
            sums = ops.sum(y, axis=1)
            rows = ops.logical_or(ops.any(ops.logical_and(y != 0, y != 1), axis=1), sums != 1)
            return [("one_hot", ops.any(rows), [
                ops.min(ops.where(rows[:, None], y, np.inf)),
                ops.max(ops.where(rows[:, None], y, -np.inf)),
                ops.min(ops.where(rows, sums, np.inf)), ops.max(ops.where(rows, sums, -np.inf))])]
        y = ops.reshape(y, (-1,))
        found = []
        if "int" not in str(labels.dtype) and "bool" not in str(labels.dtype):
            fraction = ops.not_equal(y, ops.floor(y))
            found.append(("label_integer", ops.any(fraction),
                          [ops.min(ops.where(fraction, y, np.inf))]))
        outside = ops.logical_or(y < 0, y >= n)
        return found + [("label_range", ops.any(outside), [ops.min(y), ops.max(y)])]

    def _values(self, images):
        low, high = self.value_range
        slack = RANGE_SLACK * (high - low)
        lowest = ops.cast(ops.min(images), "float32")
        highest = ops.cast(ops.max(images), "float32")
        return ("value_range", ops.logical_or(lowest < low - slack, highest > high + slack),
                [lowest, highest])

    def _first(self, found):
        """`[code, values...]` of the first problem found (code 0: none)."""
        bad = ops.stack([b for _, b, _ in found])
        index = ops.min(ops.where(bad, ops.arange(len(found)), len(found) - 1))
        codes = ops.convert_to_tensor([PROBLEMS.index(name) + 1 for name, _, _ in found])
        code = ops.where(ops.any(bad), ops.take(codes, index), 0)
        values = ops.stack([ops.concatenate([ops.stack(v), ops.zeros(self.width - 1 - len(v))])
                            for _, _, v in found])
        return ops.concatenate([ops.cast(code, "float32")[None], ops.take(values, index, axis=0)])

    def begin(self, what):
        """On the host, before `evaluate` (`what`: "evaluate", "validation")."""
        self.batches, self.what = 0, what

    def after_each(self, function, steps_per_execution, wrap=None):
        """Keras's test `function`, then the host check of the batches it ran;
        `wrap(function, check)` runs the check where a backend needs it (JAX)."""
        def check():
            self.batches += steps_per_execution()
            self.raise_if_bad(f"{self.what} stopped: its metrics would be meaningless",
                              f"{self.what} batch {_steps(self.batches, steps_per_execution())}")

        return (wrap or backend.call_then_check)(function, check)

    def after_training(self, step, steps_per_execution, flags=()):
        """On the host after training `step` (1-based, the last one run);
        `flags` (the non-finite flag) are cleared too when it raises."""
        self.raise_if_bad("Training stopped there, that step's update skipped: no weight "
                          "learned from this batch",
                          f"training step {_steps(step, steps_per_execution)}", flags)

    def raise_if_bad(self, consequence, where, flags=()):
        """Raises the ValueError the state holds (clearing it and `flags`), if any."""
        state = np.asarray(self.state.numpy())
        if not state[0]:
            return
        self.state.assign(np.zeros(self.width, "float32"))
        for flag in flags:
            flag.assign(ops.zeros_like(flag.value))
        raise ValueError(f"{self.rule(PROBLEMS[int(state[0]) - 1])}. {consequence}. "
                         f"Received: {self.received(PROBLEMS[int(state[0]) - 1], state[1:])} "
                         f"in {where}")

    def rule(self, problem):
        """What a batch must satisfy, and how to fix it."""
        n = self.num_classes
        return {
            "label_integer": "Labels must be integer class ids (a float label would be cut "
                             "to a class id)",
            "label_range": f"Labels must be class ids in [0, {n}) for num_classes={n}",
            "one_hot": f"Labels of shape (batch, {n}) must be one-hot: values in {{0, 1}}, one "
                       "1 per row (soft labels are not supported)",
            "value_range": "Images must lie in the generator's value range [{:g}, {:g}] (the "
                           "synthetic images do): rescale them, e.g. x / 127.5 - 1 for 0..255 "
                           "into [-1, 1]".format(*(self.value_range or (0, 0))),
            "shape": f"Images of shape {self.image_shape} were expected by the backbone",
        }[problem]

    def received(self, problem, v):
        """The offending values as the message quotes them."""
        if problem == "label_integer":
            return f"a non-integer label {v[0]:g}"
        if problem == "label_range":
            return f"labels in [{v[0]:g}, {v[1]:g}]"
        if problem == "one_hot":
            return f"rows with values in [{v[0]:g}, {v[1]:g}] summing to [{v[2]:g}, {v[3]:g}]"
        if problem == "value_range":
            return f"images with values in [{v[0]:g}, {v[1]:g}]"
        dims = ", ".join(str(int(d)) for d in v[:len(self.image_shape)])
        return f"images of shape (batch, {dims})"


def build_batch(model, iterator, data_batch):
    """The first batch as Keras's `_symbolic_build` takes it on JAX and
    PyTorch (fit and evaluate), its labels as the class ids the step turns
    them into (Keras would build the metrics on one-hot rows); no labels: the
    step's ValueError (`BatchCheck`), before Keras fails on None."""
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


def make_checked_test_function(model, force=False):
    """`keras.Model.make_test_function`, its function then followed by the
    host's read of `model.batch_check` (`evaluate`, `fit`'s validation and
    `test_on_batch` alike); `MGRModel.make_test_function` is this."""
    if model.test_function is None or force:
        keras.Model.make_test_function(model, force)
        wrap = None
        if backend.is_jax():
            from keras_mgr.backend import jax_step

            wrap = jax_step.flag_reader(model, [model.batch_check.state])
        model.test_function = model.batch_check.after_each(
            model.test_function, lambda: model.steps_per_execution, wrap)
    return model.test_function


def _steps(last, count):
    """`"last"`, or `"first..last"` for the `count` steps one call ran."""
    return str(last) if count <= 1 else f"{last - count + 1}..{last}"


def _agree(row):
    """Under tf.distribute, every replica's `row` becomes the first replica's
    that found a problem (its code > 0), else any one: all replicas then skip
    or apply the update alike. One small sum across replicas, in a
    `merge_call` as `numerics.record_nonfinite` does."""
    count = numerics.replicas()
    context = None if count == 1 else tf.distribute.get_replica_context()
    if context is None:
        return row
    mine = ops.equal(ops.arange(count), ops.cast(context.replica_id_in_sync_group, "int32"))
    table = ops.where(mine[:, None], row[None, :], 0.0)
    table = context.merge_call(lambda strategy, value: strategy.extended.reduce_to(
        tf.distribute.ReduceOp.SUM, value, value), args=(table,))
    first = ops.min(ops.where(table[:, 0] > 0, ops.arange(count), count - 1))
    return ops.take(table, first, axis=0)
