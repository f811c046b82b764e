"""Trains every mode a few steps from given weights; run under each backend.

    KERAS_BACKEND=jax python tests/parity_worker.py INIT.npz OUT.npz

Writes every mode's logs and weights after a few steps (`train/...`) and the
finder modes' meta-gradients at their initial weights (`meta/...`, and
`meta_keras/...` with Keras's BatchNormalization). Without INIT.npz (a path
that does not exist), the models keep their own initial weights, which are
written there. `tests/test_backend_parity.py` compares two backends' OUT files.
"""

import functools
import os
import sys

import numpy as np
import tiny

# mode: wrap() options (meta steps on most steps; the finder modes' defaults
# otherwise put the first meta step after the buffer fills).
CASES = {
    "base": {},
    "gda": {},
    "pcr": {},
    "metagda": {"meta_every": 1},
    "mgr": {"meta_every": 2},
    "mgr_microbatches": {"meta_every": 1, "meta_microbatches": 2},
    "mgr_finite_difference": {"meta_every": 1, "meta_gradient": "finite_difference"},
}
# Compared by their meta-gradients only: SimSiam's targets stop the inner
# derivative only (a tape's stop_recording on TensorFlow, recorded targets on JAX).
META_ONLY = {"mgr_simsiam": {"consistency": "simsiam"}}
EPOCHS = 2  # of 3 steps (24 images, batch 8)
# Keras's BatchNormalization takes its variance around stop_gradient(mean) on
# TensorFlow and exactly on JAX: first derivatives agree, second derivatives
# (the meta step) differ by a small term. ExactBatchNormalization is exact on both.
NORM = os.environ.get("PARITY_NORM", "exact")


def wrapped(mode, **options):
    """`tiny.wrapped`'s model with `NORM` and no bias before it (its gradient
    is rounding noise, which Adam would scale up to a full step)."""
    import keras

    import keras_mgr

    keras.utils.set_random_seed(0)
    model = keras_mgr.wrap(tiny.backbone(norm=NORM, use_bias=False), tiny.generator(),
                           num_classes=3, mode=mode, seed=0, meta_batch_size=8,
                           finder_hidden_dim=8, **options)
    model.compile()
    return model


def run(init=None):
    """`(initial, final)`: dicts of arrays per case (`<case>/<i>` weights and
    `<case>/history/<name>` per-epoch logs)."""
    x, y = tiny.data()
    initial, final = {}, {}
    for case, options in CASES.items():
        mode = case.split("_")[0]
        model = wrapped(mode, **options)
        if init is not None:
            model.set_weights([init[f"{case}/{i}"] for i in range(len(model.weights))])
        for i, w in enumerate(model.get_weights()):
            initial[f"{case}/{i}"] = w
        history = model.fit(x, y, batch_size=8, epochs=EPOCHS, shuffle=False, verbose=0)
        for i, w in enumerate(model.get_weights()):
            final[f"{case}/{i}"] = w
        for name, values in history.history.items():
            final[f"{case}/history/{name}"] = np.asarray(values, "float64")
    return initial, final


META_CASES = ("mgr", "metagda", "mgr_microbatches", "mgr_finite_difference", "mgr_simsiam")


def meta_gradients(init=None, cases=META_CASES):
    """`(initial, gradients)`: each case's meta-gradient (and inner gradient)
    at its initial weights on fixed batches, in `keras.config.floatx()`."""
    import keras
    from keras import ops

    x, y = tiny.data()
    dtype = keras.config.floatx()
    initial, out = {}, {}
    for case in cases:
        options = CASES[case] if case in CASES else META_ONLY[case]
        mode, options = case.split("_")[0], dict(options, meta_every=1)
        model = wrapped(mode, **options)
        if init is not None:
            model.set_weights([init[f"{case}/{i}"].astype(w.dtype)
                               for i, w in enumerate(model.get_weights())])
        for i, w in enumerate(model.get_weights()):
            initial[f"{case}/{i}"] = w
        state = [v.value for v in model.backbone.non_trainable_variables]
        meta_grads, inner, *_ = model.objective.meta_step_gradients(
            model.classifier_variables, state, model.finder.trainable_variables,
            ops.convert_to_tensor(x[:8].astype(dtype)), ops.convert_to_tensor(y[:8]),
            model.objective.draw(8), ops.convert_to_tensor(x[8:16].astype(dtype)),
            ops.convert_to_tensor(y[8:16]), ops.ones((8,), dtype))
        out[f"{case}/meta"] = np.concatenate([np.ravel(ops.convert_to_numpy(g))
                                              for g in meta_grads]).astype("float64")
        out[f"{case}/inner"] = np.concatenate([np.ravel(ops.convert_to_numpy(g))
                                               for g in inner]).astype("float64")
    return initial, out


def run_all(init):
    """`(initial, outputs)` of `run` (keys `train/...`), `meta_gradients`
    (`meta/...`) and `meta_gradients` with Keras's BatchNormalization
    (`meta_keras/...`), from `init`'s weights where it has them."""
    global NORM
    initial, outputs = {}, {}
    norm = NORM
    # With Keras's BatchNormalization only mgr is compared (the known term).
    for name, function, norm_here in (
            ("train", run, norm), ("meta", meta_gradients, norm),
            ("meta_keras", functools.partial(meta_gradients, cases=("mgr",)), "keras")):
        NORM = norm_here
        part = None if init is None else {k[len(name) + 1:]: v for k, v in init.items()
                                          if k.startswith(name + "/")}
        first, out = function(part or None)
        initial.update({f"{name}/{k}": v for k, v in first.items()})
        outputs.update({f"{name}/{k}": v for k, v in out.items()})
    NORM = norm
    return initial, outputs


if __name__ == "__main__":
    if os.environ.get("PARITY_DATA_PARALLEL"):  # XLA_FLAGS gives the host 2 devices
        import keras

        keras.distribution.set_distribution(keras.distribution.DataParallel())
    init_path, out_path = sys.argv[1:3]
    init = dict(np.load(init_path)) if os.path.exists(init_path) else None
    initial, outputs = run_all(init)
    if init is None:
        np.savez(init_path, **initial)
    devices = 1
    if os.environ.get("PARITY_DATA_PARALLEL"):
        import jax

        devices = len(jax.devices())
    np.savez(out_path, devices=devices, **outputs)
