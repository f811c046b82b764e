"""BatchNorm in small-data training, in one place.

`momentum`: set the moving statistics' momentum, warn when they are
unconverged after `fit`. `fused`: BatchNormalization's training pass as
TensorFlow's fused kernel (`wrap(fused_batchnorm=...)`).
"""

from keras_mgr.batchnorm.momentum import (
    UNCONVERGED,
    batchnorm_layers,
    check_momentum,
    restored_on_error,
    set_momentum,
    unconverged,
    warn_if_unconverged,
)

__all__ = ["UNCONVERGED", "batchnorm_layers", "check_momentum", "restored_on_error",
           "set_momentum", "unconverged", "warn_if_unconverged"]
