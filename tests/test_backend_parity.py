"""TensorFlow, JAX and PyTorch train alike: the same initial weights and
random draws give the same losses, weights and meta-gradients on each backend.

The models use `ExactBatchNormalization`: Keras's own BatchNormalization takes
its variance around `stop_gradient(mean)` on TensorFlow and exactly on JAX and
PyTorch, so the meta step's second derivatives differ by that term with it
(first derivatives do not): `test_keras_batchnorm_differs_by_the_known_term`.

Tolerances (float32 on every backend; the TensorFlow float64 meta-gradient is
the reference the finite-difference tests check):
- logs of the exact modes: relative 1e-5; weights: 1e-4 of max(|w|, 1e-3);
- DARTS finite differences divide a float32 difference by 2 eps: 1e-2.
"""

import os
import subprocess
import sys
from typing import NamedTuple

import keras
import numpy as np
import parity_worker
import pytest
import tiny

HERE = os.path.dirname(os.path.abspath(__file__))


class Backends(NamedTuple):
    tensorflow: dict  # parity_worker.run_all's outputs (meta-gradients in float64)
    jax: dict  # the same from a JAX child started from the same weights
    torch: dict  # the same from a PyTorch child
    init_path: object  # those weights (.npz)


OTHERS = ["jax", "torch"]  # each compared with TensorFlow


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    """`Backends`: `parity_worker.run_all`'s outputs on TensorFlow (the
    meta-gradients in float64) and in a JAX and a PyTorch child started from
    the same initial weights (cast to float32)."""
    folder = tmp_path_factory.mktemp("parity")
    first, out = parity_worker.run()
    initial = {f"train/{k}": v for k, v in first.items()}
    tensorflow = {f"train/{k}": v for k, v in out.items()}
    previous = keras.config.floatx()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        for name, norm in (("meta", parity_worker.NORM), ("meta_keras", "keras")):
            saved, parity_worker.NORM = parity_worker.NORM, norm
            try:
                first, out = parity_worker.meta_gradients(
                    cases=parity_worker.META_CASES if name == "meta" else ("mgr",))
            finally:
                parity_worker.NORM = saved
            initial.update({f"{name}/{k}": v.astype("float32") if v.dtype == np.float64 else v
                            for k, v in first.items()})
            tensorflow.update({f"{name}/{k}": v for k, v in out.items()})
    finally:
        keras.config.set_floatx(previous)
        keras.config.set_dtype_policy(previous)
    init_path = folder / "init.npz"
    np.savez(init_path, **initial)
    return Backends(tensorflow, on_backend("jax", init_path, folder / "jax.npz"),
                    on_backend("torch", init_path, folder / "torch.npz"), init_path)


def on_backend(backend, init_path, out_path, **env):
    """`parity_worker.run_all` from `init_path` in a KERAS_BACKEND=`backend` child."""
    subprocess.run([sys.executable, os.path.join(HERE, "parity_worker.py"), str(init_path),
                    str(out_path)], check=True, timeout=900,
                   env=tiny.child_env(KERAS_BACKEND=backend, **env))
    return dict(np.load(out_path))


@pytest.mark.slow  # one more JAX process (about a minute)
def test_jax_data_parallel_over_two_devices_trains_as_one(backends, tmp_path):
    """`keras.distribution.DataParallel` over 2 host devices: the same losses and
    weights as one device on the same global batch (JAX shards one global
    step, so the meta step's lookahead is over the global batch)."""
    two = on_backend("jax", backends.init_path, tmp_path / "two.npz", PARITY_DATA_PARALLEL="1",
                 XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert two["devices"] == 2
    one = backends.jax
    for key in [k for k in one if k.startswith("train/")]:
        if one[key].dtype.kind == "f":  # the tolerances of the backends' parity
            tolerance = 1e-2 if "finite_difference" in key else 1e-4
            assert relative(one[key], two[key], 1e-3) < tolerance, key
        else:
            np.testing.assert_array_equal(one[key], two[key], err_msg=key)


def relative(a, b, floor):
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), floor)))


@pytest.mark.parametrize("other", OTHERS)
@pytest.mark.parametrize("case", list(parity_worker.CASES))
def test_training_agrees(backends, case, other):
    tensorflow, theirs = backends.tensorflow, getattr(backends, other)
    keys = [k for k in tensorflow if k.startswith(f"train/{case}/")]
    assert keys and all(k in theirs for k in keys), sorted(set(keys) - set(theirs))
    exact = case != "mgr_finite_difference"
    for key in keys:
        if "/history/" in key:
            assert relative(tensorflow[key], theirs[key], 1e-6) < (1e-5 if exact else 1e-2), key
        elif tensorflow[key].dtype.kind == "f":
            assert relative(tensorflow[key], theirs[key], 1e-3) < (1e-4 if exact else 1e-2), key
        else:  # random-stream positions and counters: equal
            np.testing.assert_array_equal(tensorflow[key], theirs[key], err_msg=key)


def error(backends, other, key):
    a, b = backends.tensorflow[key], getattr(backends, other)[key]
    assert np.linalg.norm(a) > 0, key
    return np.linalg.norm(a - b) / np.linalg.norm(a)


@pytest.mark.parametrize("other", OTHERS)
@pytest.mark.parametrize("case", ["mgr", "metagda", "mgr_microbatches", "mgr_simsiam"])
def test_meta_gradients_agree_with_the_float64_reference(backends, case, other):
    for part in ("meta", "inner"):
        assert error(backends, other, f"meta/{case}/{part}") < 1e-4, part


@pytest.mark.parametrize("other", OTHERS)
def test_finite_difference_meta_gradient_agrees(backends, other):
    assert error(backends, other, "meta/mgr_finite_difference/meta") < 1e-2


@pytest.mark.parametrize("other", OTHERS)
def test_keras_batchnorm_differs_by_the_known_term(backends, other):
    """With Keras's BatchNormalization the other backends' meta-gradients
    differ from TensorFlow's by the second-derivative term TensorFlow's
    moments drop (`stop_gradient(mean)`), and only there: the inner
    (first-order) gradients still agree."""
    assert error(backends, other, "meta_keras/mgr/inner") < 1e-4
    assert 1e-3 < error(backends, other, "meta_keras/mgr/meta") < 5e-2
