"""BatchNormalization whose batch moments are exactly twice differentiable."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mgr")
class ExactBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with exactly differentiable moments.

    Keras computes the batch variance around `stop_gradient(mean)`; first
    derivatives are unaffected, but the second derivatives that MGR's meta step
    takes miss a term (docs/guide.md, "Backends"). This layer computes
    `variance = mean((x - mean)^2)` with the mean left differentiable. Use it in
    backbones where the meta-gradient should be exact; it is otherwise identical
    (same arguments, same moving statistics).

    Example:

    >>> bn = ExactBatchNormalization(momentum=0.9)
    >>> bn(keras.ops.ones((4, 3)), training=True).shape
    TensorShape([4, 3])
    """

    def _moments(self, inputs, mask):
        if mask is not None or self.synchronized:
            return super()._moments(inputs, mask)
        mean = ops.mean(inputs, axis=self._reduction_axes, keepdims=True)
        variance = ops.mean(ops.square(inputs - mean), axis=self._reduction_axes)
        return ops.squeeze(mean, axis=self._reduction_axes), variance
