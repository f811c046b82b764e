"""Backbones that ship with keras_mgr (images -> pooled features)."""

from keras_mgr.backbones.small_cnn import small_cnn

__all__ = ["small_cnn"]
