"""How many replicas share a training step, and which one this is.

Under `tf.distribute` each replica runs the step on its own part of the global
batch and Keras sums their losses; under JAX a `keras.distribution` shards one
global step (SPMD), so the step sees one replica.

Example:

>>> count()
1
>>> replica_id() is None
True
"""

from keras_mgr import backend


def count():
    """Replicas of the current `tf.distribute` strategy; 1 without one, and on JAX."""
    if not backend.is_tensorflow():
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def replica_id():
    """This replica's id (a tensor) inside a step with several replicas, else None."""
    if count() == 1:
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return None if context is None else context.replica_id_in_sync_group
