"""Backbones that ship with keras_mgr (images -> pooled features)."""

from keras_mgr.backbones.resnet import resnet, resnet18
from keras_mgr.backbones.small_cnn import small_cnn

__all__ = ["resnet", "resnet18", "small_cnn"]
