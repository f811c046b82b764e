"""What each backend runs, and what it refuses with the reason (README "Backends")."""

import keras
import pytest
import tiny

import keras_mgr

JAX = keras.backend.backend() == "jax"
TENSORFLOW = keras.backend.backend() == "tensorflow"
TORCH = keras.backend.backend() == "torch"


@pytest.mark.parametrize("meta_gradient", [
    "second_order", pytest.param("random_drift", marks=pytest.mark.slow)])
def test_simsiam_in_the_exact_meta_step_runs_on_every_backend(meta_gradient):
    """Its meta-gradient agrees across backends: test_backend_parity."""
    x, y = tiny.data(8)
    model = tiny.wrapped("mgr", consistency="simsiam", meta_gradient=meta_gradient,
                         meta_every=1)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)


def test_simsiam_with_finite_differences_and_pcr_run_on_every_backend():
    x, y = tiny.data(8)
    for options in ({"mode": "mgr", "meta_gradient": "finite_difference", "meta_every": 1},
                    {"mode": "pcr"}):
        model = tiny.wrapped(consistency="simsiam", **options)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)


def _meta_step(model, x, y, x_val, y_val):
    """(finder meta-gradient, inner gradient, meta loss, total) of one meta
    step, as NumPy."""
    import numpy as np

    draws = model.objective.draw(8)
    meta, inner, meta_loss, total, _ = model.objective.meta_step_gradients(
        model.classifier_variables, [v.value for v in model.backbone.non_trainable_variables],
        model.finder.trainable_variables, x, y, draws, x_val, y_val, np.ones(8, "float32"))
    def flat(grads):
        return np.concatenate([np.ravel(np.asarray(g)) for g in grads if g is not None])
    return flat(meta), flat(inner), float(meta_loss), float(total)


# The two ways a Keras optimizer scales the loss: a LossScaleOptimizer's
# dynamic scale (mixed precision), and any optimizer's `loss_scale_factor`.
SCALED_OPTIMIZERS = {
    "dynamic": lambda: keras.optimizers.LossScaleOptimizer(
        keras.optimizers.Adam(1e-3), initial_scale=2.0 ** 10),
    "factor": lambda: keras.optimizers.Adam(1e-3, loss_scale_factor=2.0 ** 10),
}


@pytest.mark.parametrize("meta_gradient, microbatches, scaling", [
    ("second_order", 1, "dynamic"), ("finite_difference", 1, "dynamic"),
    ("second_order", 1, "factor"), ("finite_difference", 1, "factor"),
    # On JAX and PyTorch k > 1 runs the same scaled inner gradient per slice as
    # k = 1 (`inner` in jax_meta and torch_meta); TensorFlow's micro-batches are their own loop.
    pytest.param("second_order", 2, "dynamic",
                 marks=[] if TENSORFLOW else [pytest.mark.slow])])
def test_loss_scaling_scales_the_inner_gradient_and_not_the_meta_gradient(
        meta_gradient, microbatches, scaling):
    """In float32, where scaling changes no rounding that matters: with a
    loss scale of 2^10 (a LossScaleOptimizer's, or `loss_scale_factor`) the
    inner gradient (which the optimizer unscales) is 2^10 times the plain
    one, and the finder's meta-gradient and the logged losses are the plain
    ones, on every backend (float16's underflow: test_mixed_precision)."""
    import numpy as np

    x, y = tiny.data(8)
    x_val, y_val = tiny.data(8, seed=1)
    options = dict(meta_gradient=meta_gradient, meta_microbatches=microbatches)
    plain = tiny.wrapped("mgr", **options)
    scaled = tiny.wrapped("mgr", optimizer=SCALED_OPTIMIZERS[scaling], **options)
    rng = np.random.default_rng(0)
    for a, b in zip(scaled.weights, plain.weights):
        if "finder" in b.path:  # a finder that moves the latents, so phi matters
            b.assign(b.numpy() + 0.3 * rng.standard_normal(b.shape).astype(b.dtype))
        a.assign(b.numpy())
    meta_plain, inner_plain, *losses_plain = _meta_step(plain, x, y, x_val, y_val)
    meta_scaled, inner_scaled, *losses_scaled = _meta_step(scaled, x, y, x_val, y_val)
    assert np.linalg.norm(meta_plain) > 0
    np.testing.assert_allclose(inner_scaled, 2.0 ** 10 * inner_plain, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(meta_scaled, meta_plain, rtol=2e-3,
                               atol=2e-3 * np.abs(meta_plain).max())
    np.testing.assert_allclose(losses_scaled, losses_plain, rtol=1e-5)


@pytest.mark.skipif(not TORCH, reason="what PyTorch refuses (other backends run both)")
@pytest.mark.parametrize("option, message", [
    ({"jit_compile": True}, r"runs eagerly on the PyTorch backend.*torch.compile.*"
                            r"Received: jit_compile=True"),
    ({"steps_per_execution": 2}, r"steps_per_execution must be 1 on the PyTorch backend.*"
                                 r"Received: steps_per_execution=2")])
def test_pytorch_refuses_what_its_eager_step_cannot_run(option, message):
    """Not silently run some other way: `jit_compile=True` would hand the test
    step to torch.compile, and a step function given two batches would
    train on one."""
    model = keras_mgr.wrap(tiny.backbone(), tiny.generator(), num_classes=3, seed=0,
                           meta_batch_size=8, finder_hidden_dim=8)
    with pytest.raises(ValueError, match=message):
        model.compile(**option)
    model.compile(jit_compile="auto")  # eager on PyTorch
    assert model.jit_compile is False


@pytest.mark.tensorflow_only("one run: the child picks its own backend")
def test_an_unsupported_backend_is_refused_on_import_with_its_name():
    import os
    import subprocess
    import sys

    env = dict(os.environ, KERAS_BACKEND="numpy")
    done = subprocess.run([sys.executable, "-c", "import keras_mgr"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert ("runs on the TensorFlow, JAX and PyTorch backends of Keras" in done.stderr
            and "Received: 'numpy'" in done.stderr), done.stderr[-2000:]


def test_an_update_names_the_variables_its_optimizer_was_built_on():
    """On JAX an update is `stateless_apply`, which pairs values by position:
    variables in another order than the optimizer's are refused, not permuted."""
    import numpy as np

    from keras_mgr import numerics

    a, b = keras.Variable(np.ones(2, "float32"), name="a"), keras.Variable(
        np.ones(3, "float32"), name="b")
    optimizer = keras.optimizers.SGD(0.5)
    optimizer.build([a, b])
    with pytest.raises(ValueError, match="built on other variables.*Received"):
        numerics._stateless_apply(optimizer, [np.ones(3, "float32"), np.ones(2, "float32")],
                                  [b, a])
    if JAX:  # (TensorFlow has no stateless_apply: its updates are `apply` in a `cond`)
        numerics._stateless_apply(optimizer, [np.ones(2, "float32"), np.ones(3, "float32")],
                                  [a, b])
        np.testing.assert_allclose(np.asarray(a.numpy()), 0.5)  # 1 - 0.5 * 1


def test_fused_batchnorm_is_tensorflows_kernel():
    """"auto" (the default) fuses on TensorFlow only, silently; True on
    another backend warns and keeps Keras's pass; the saved option stays "auto"."""
    import warnings

    from keras_mgr.batchnorm.fused import is_fused

    backbone = tiny.backbone(norm="keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the default asks for nothing it cannot have
        model = keras_mgr.wrap(backbone, tiny.generator(), num_classes=3, mode="base")
    assert is_fused(backbone.layers[2]) is TENSORFLOW
    assert model.get_config()["fused_batchnorm"] == "auto"
    backbone = tiny.backbone(norm="keras")
    if not TENSORFLOW:
        with pytest.warns(UserWarning, match=f"fused_batchnorm=True.*{keras.backend.backend()} "
                                             "backend does not"):
            keras_mgr.wrap(backbone, tiny.generator(), num_classes=3, mode="base",
                           fused_batchnorm=True)
    else:
        keras_mgr.wrap(backbone, tiny.generator(), num_classes=3, mode="base",
                       fused_batchnorm=True)
    assert is_fused(backbone.layers[2]) is TENSORFLOW
    with pytest.raises(ValueError, match="fused_batchnorm must be True or False.*'yes'"):
        keras_mgr.wrap(tiny.backbone(), tiny.generator(), num_classes=3, fused_batchnorm="yes")


def test_seed_streams_are_the_same_on_every_backend():
    """The first draws of a fixed seed, recorded from TensorFlow: every backend
    draws them (PyTorch computes the 32-bit words in int64)."""
    import numpy as np
    from keras import ops

    from keras_mgr import random

    seed = ops.convert_to_tensor(np.array([3, 5], "uint32"))
    np.testing.assert_allclose(np.asarray(random.uniform((4,), seed)),
                               [0.03392419, 0.24528888, 0.49029872, 0.3282151], rtol=1e-7)
    np.testing.assert_allclose(np.asarray(random.normal((4,), seed)),
                               [0.98808193, 1.6742924, -0.16128564, -0.5182467], rtol=1e-6)


NO_TENSORFLOW = '''
import os, sys
sys.modules["tensorflow"] = None  # as if not installed: imports fail, find_spec gives None
import numpy as np
import keras_mgr, tiny
x, y = tiny.data(16)
grid = keras_mgr.callbacks.SampleGrid(directory=sys.argv[1], every=1, samples_per_class=2)
model = tiny.wrapped("mgr", meta_every=1)
model.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_data=(x, y), callbacks=[grid])
model.evaluate(x, y, verbose=0)
model.save(os.path.join(sys.argv[1], "m.keras"))
np.save(os.path.join(sys.argv[1], "predictions.npy"), model.predict(x, verbose=0))
loaded = keras_mgr.load_model(os.path.join(sys.argv[1], "m.keras"))
np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
assert len(grid.paths) == 2 and sys.modules["tensorflow"] is None
try:
    keras_mgr.datasets.load("digits").as_dataset()
except ImportError as error:
    print("REFUSED:", error)
'''


@pytest.mark.tensorflow_only("one run: the child has TensorFlow blocked")
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_trains_saves_and_writes_grids_without_tensorflow(tmp_path, backend):
    """The GPU machine has JAX and PyTorch and no TensorFlow: keras_mgr
    imports, trains (fit, validation, evaluate, predict), saves, loads and
    writes sample grids there; what needs TensorFlow says so when used. The
    file it saved loads here, on TensorFlow, with the same predictions."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.getcwd()]))
    done = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "needs TensorFlow, which is not installed here" in done.stdout, done.stdout
    import numpy as np

    x, _ = tiny.data(16)
    loaded = keras_mgr.load_model(str(tmp_path / "m.keras"))
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               np.load(tmp_path / "predictions.npy"), rtol=1e-5, atol=1e-6)
