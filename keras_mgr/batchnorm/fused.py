"""BatchNormalization's training pass as one fused TensorFlow kernel.

Keras 3 computes `BatchNormalization` in training from separate ops (a mean,
a variance around `stop_gradient(mean)`, normalise, scale and shift): a
dozen kernels forward and more backward, each a pass over the activations.
TensorFlow's `FusedBatchNormV3` (oneDNN on CPU, cuDNN on GPU, XLA-compilable)
computes the same function in one kernel each way, as tf.keras (Keras 2) did
by default: fewer passes over the activations, a faster step where oneDNN
runs it (docs/benchmarks.md, "Speed on a CPU without AVX-512").

Same function: outputs and first derivatives equal Keras's to float32
round-off, and the moving statistics get the same (biased) batch variance.
Second derivatives (MGR's meta step) are exact: TensorFlow differentiates
the fused gradient with the full formula, where Keras's variance around
`stop_gradient(mean)` misses a term (`ExactBatchNormalization` fixes that in
the unfused layer). As in Keras 2, epsilon is raised to 1.001e-5 where it is
smaller than that (cuDNN's minimum); a layer with epsilon below 1e-5 keeps
Keras's pass.

`fuse(model)` gives every eligible BatchNormalization layer of `model` the
fused training pass, as an attribute of that layer instance: its class, its
config and saved files are unchanged, and its inference pass is Keras's.
At call time the fused pass runs only for the case it covers (training,
trainable, no mask, features on the last axis, float32 computation, the
TensorFlow backend); anything else runs the layer's own `call`.

Where a pass is differentiated twice (the meta step's taped regularizer),
`keras_mgr.meta` runs it `unfused()`: TensorFlow differentiates the fused
gradient by recomputing it from separate ops, slower and larger than
Keras's pass (docs/benchmarks.md, "Cost"), so the second-order pass keeps
the layer's own `call` (and its derivatives, exact with
`ExactBatchNormalization`).

Example:

>>> inputs = keras.Input((8, 8, 3))
>>> model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
>>> fuse(model)
1
"""

import functools
import threading
import warnings

import keras
from keras import ops

from keras_mgr.backend import tf
from keras_mgr.batchnorm.momentum import batchnorm_layers
from keras_mgr.layers import ExactBatchNormalization

# cuDNN's smallest epsilon (TensorFlow raises smaller ones to this, as Keras 2 did).
MIN_EPSILON = 1.001e-5


def _default_moments(layer):
    """Whether `layer` computes Keras's batch moments (or their exact form)."""
    base = keras.layers.BatchNormalization
    return (type(layer).call is base.call
            and type(layer)._moments in (base._moments, ExactBatchNormalization._moments))


def eligible(layer):
    """Whether `fuse` can give `layer` the fused training pass."""
    return keras.backend.backend() == "tensorflow" and _fusable(layer)


def _fusable(layer):
    """Whether the fused kernel computes `layer`'s training pass."""
    return (isinstance(layer, keras.layers.BatchNormalization)
            and _default_moments(layer) and not layer.synchronized and not layer.renorm
            and layer.epsilon >= 1e-5)


_STATE = threading.local()  # MirroredStrategy traces each replica in its own thread


class unfused:
    """Within the block (while tracing, in this thread), fused layers run
    their own `call`."""

    def __enter__(self):
        _STATE.depth = _unfused_depth() + 1

    def __exit__(self, *exc):
        _STATE.depth -= 1


def _unfused_depth():
    return getattr(_STATE, "depth", 0)


def fuse(model):
    """Installs the fused training pass on every eligible BatchNormalization
    layer of `model` (nested models included). Returns how many have it
    (none, with a warning, on a backend other than TensorFlow)."""
    if keras.backend.backend() != "tensorflow":
        if any(_fusable(layer) for layer in batchnorm_layers(model)):
            warnings.warn("fused_batchnorm=True asks for TensorFlow's fused BatchNorm kernel, "
                          f"which the {keras.backend.backend()} backend does not have: "
                          "Keras's own BatchNormalization pass runs. "
                          "Pass fused_batchnorm=False to silence this.", stacklevel=3)
        return 0
    count = 0
    for layer in batchnorm_layers(model):
        if eligible(layer):
            if not is_fused(layer):
                layer.call = functools.partial(_call, layer, type(layer).call.__get__(layer))
            count += 1
    return count


def is_fused(layer):
    """Whether `layer` has the fused training pass."""
    call = layer.__dict__.get("call")
    return isinstance(call, functools.partial) and call.func is _call


def _call(layer, keras_call, inputs, training=None, mask=None):
    rank = len(inputs.shape)
    if (_unfused_depth() or not (training and layer.trainable) or mask is not None or rank < 2
            or layer.axis not in (-1, rank - 1)
            or keras.backend.result_type(inputs.dtype, "float32") != "float32"):
        return keras_call(inputs, training=training, mask=mask)
    channels = inputs.shape[-1]
    x = ops.cast(inputs, "float32")
    shape = tf.shape(x)
    if rank != 4:  # the statistics are over every axis but the last
        x = tf.reshape(x, [-1, 1, 1, channels])
    one = ops.ones((channels,), "float32")
    gamma = ops.cast(layer.gamma, "float32") if layer.scale else one
    beta = ops.cast(layer.beta, "float32") if layer.center else ops.zeros_like(one)
    y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=gamma, offset=beta, mean=tf.constant([], "float32"),
        variance=tf.constant([], "float32"),
        epsilon=max(float(layer.epsilon), MIN_EPSILON), exponential_avg_factor=1.0,
        data_format="NHWC", is_training=True)
    # The kernel returns the unbiased variance; Keras keeps the biased one.
    n = ops.cast(ops.size(x) // channels, "float32")
    variance = variance * (n - 1.0) / ops.maximum(n, 1.0)
    momentum = layer.momentum
    layer.moving_mean.assign(ops.cast(layer.moving_mean, "float32") * momentum
                             + mean * (1.0 - momentum))
    layer.moving_variance.assign(ops.cast(layer.moving_variance, "float32") * momentum
                                 + variance * (1.0 - momentum))
    if rank != 4:
        y = tf.reshape(y, shape)
    return ops.cast(y, layer.compute_dtype)
