"""What each backend runs, and what it refuses with the reason (README "Backends")."""

import keras
import pytest
import tiny

import keras_mgr

JAX = keras.backend.backend() == "jax"


@pytest.mark.parametrize("meta_gradient", ["second_order", "random_drift"])
def test_simsiam_in_the_exact_meta_step_runs_on_tensorflow_only(meta_gradient):
    x, y = tiny.data(8)
    if JAX:
        with pytest.raises(ValueError, match="consistency 'l2' and 'cosine'.*Received: "
                                             "consistency='simsiam'"):
            tiny.wrapped("mgr", consistency="simsiam", meta_gradient=meta_gradient)
        return
    model = tiny.wrapped("mgr", consistency="simsiam", meta_gradient=meta_gradient,
                         meta_every=1)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)


def test_simsiam_with_finite_differences_and_pcr_run_on_every_backend():
    x, y = tiny.data(8)
    for options in ({"mode": "mgr", "meta_gradient": "finite_difference", "meta_every": 1},
                    {"mode": "pcr"}):
        model = tiny.wrapped(consistency="simsiam", **options)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)


def test_fused_batchnorm_is_tensorflows_kernel():
    from keras_mgr.fused_batchnorm import is_fused

    backbone = tiny.backbone(norm="keras")
    if JAX:
        with pytest.warns(UserWarning, match="fused_batchnorm=True.*jax backend does not"):
            keras_mgr.wrap(backbone, tiny.generator(), num_classes=3, mode="base")
    else:
        keras_mgr.wrap(backbone, tiny.generator(), num_classes=3, mode="base")
    assert is_fused(backbone.layers[2]) is not JAX
    keras_mgr.wrap(tiny.backbone(norm="keras"), tiny.generator(), num_classes=3, mode="base",
                   fused_batchnorm=False)  # no warning asked for, none given


def test_seed_streams_are_the_same_on_every_backend():
    """The first draws of a fixed seed, recorded from TensorFlow: JAX draws them too."""
    import numpy as np
    from keras import ops

    from keras_mgr import random

    seed = ops.convert_to_tensor(np.array([3, 5], "uint32"))
    np.testing.assert_allclose(np.asarray(random.uniform((4,), seed)),
                               [0.03392419, 0.24528888, 0.49029872, 0.3282151], rtol=1e-7)
    np.testing.assert_allclose(np.asarray(random.normal((4,), seed)),
                               [0.98808193, 1.6742924, -0.16128564, -0.5182467], rtol=1e-6)
