"""keras_mgr: meta generative regularization (MGR) for Keras 3 classifiers.

    model = keras_mgr.wrap(backbone, generator, num_classes=10)
    model.compile(optimizer="adam")
    model.fit(x_train, y_train, epochs=30)

Reference: Yamaguchi et al., "Regularizing Neural Networks with Meta-Learning
Generative Models", NeurIPS 2023 (arXiv 2307.13899).
"""

# Before TensorFlow loads (through keras): TensorFlow reads oneDNN's switch then.
from keras_mgr import onednn  # noqa: F401

# isort: split
import keras  # noqa: E402

if keras.backend.backend() not in ("tensorflow", "jax", "torch"):
    raise ImportError(
        "keras_mgr runs on the TensorFlow, JAX and PyTorch backends of Keras: its meta "
        "step (a second derivative through the lookahead) is built for those three. Set "
        f"KERAS_BACKEND to one of them. Received: {keras.backend.backend()!r}"
    )

from keras_mgr import backbones, callbacks, datasets, generators, layers  # noqa: E402
from keras_mgr.augment import ViewAugmentation  # noqa: E402
from keras_mgr.finder import Finder  # noqa: E402
from keras_mgr.mgr_model import MODES, MGRModel  # noqa: E402
from keras_mgr.regularizer import MGRRegularizer  # noqa: E402
from keras_mgr.saving import load_model  # noqa: E402
from keras_mgr.synthetic import SyntheticSampler, synthetic_dataset  # noqa: E402
from keras_mgr.wrapping import FINDER_DEFAULTS, wrap  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "FINDER_DEFAULTS",
    "MODES",
    "Finder",
    "MGRModel",
    "MGRRegularizer",
    "SyntheticSampler",
    "ViewAugmentation",
    "backbones",
    "callbacks",
    "datasets",
    "generators",
    "layers",
    "load_model",
    "synthetic_dataset",
    "wrap",
]
