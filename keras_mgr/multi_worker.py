"""`fit` and `evaluate` under several workers: what MGRModel does for Keras.

Keras 3.15's TensorFlow trainer fails under a `MultiWorkerMirroredStrategy`
with more than one worker, for any model (keras-team/keras#20585):

1. `_maybe_symbolic_build` `strategy.reduce`s the whole first batch, a
   tuple, which the collective strategy cannot map over: "Attempt to
   convert a value (PerReplica:...) with an unsupported type" before the
   first step. That batch only gives the build its shapes.
2. Each step's logs are reduced across workers with
   `strategy.reduce("MEAN", v, axis=0)`, which fails on scalars: "Invalid
   reduction dimension 0 for input with 0 dimensions".

MGRModel avoids both for itself, without patching Keras: its symbolic build
takes the local replica's batch (`local_batch`), and under several workers
its steps return their logs with shape (1,) (`step_logs`): their mean over
axis 0 across replicas is the scalar mean over replicas that Keras means
(`reduction="mean"`, as on one worker). Elsewhere nothing changes.

Example:

>>> active(tf.distribute.get_strategy())
False
"""

import keras
from keras import ops

from keras_mgr import backend
from keras_mgr.backend import tf


def active(strategy):
    """Whether `strategy` spans several workers (where Keras's `fit` fails)."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def step_logs(model, logs):
    """A step's logs as Keras can reduce them under `model`'s strategy:
    unchanged, or each of shape (1,) under several workers."""
    if not backend.is_tensorflow() or not active(model.distribute_strategy):
        return logs
    return keras.tree.map_structure(lambda v: ops.reshape(v, (1,)), logs)


def build_batch(strategy, iterator, data_batch):
    """`(iterator, data_batch)` for Keras's `_maybe_symbolic_build`: under
    several workers, no iterator and the local replica's first batch."""
    if iterator is None or not active(strategy):
        return iterator, data_batch
    for _, _, batches in iterator:
        return None, local_batch(strategy, next(batches))
    return None, data_batch


def local_batch(strategy, batch):
    """`batch` with each distributed value replaced by its first local replica's."""
    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return tf.nest.map_structure(local, batch)
