"""Layers that keras_mgr ships for backbones."""

from keras_mgr.layers.exact_batch_normalization import ExactBatchNormalization

__all__ = ["ExactBatchNormalization"]
