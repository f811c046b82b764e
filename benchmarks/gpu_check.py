"""The GPU check: XLA agreement, cost per mode with and without XLA, a realistic mgr step.

    python benchmarks/gpu_check.py                 # on one GPU: a few minutes
    python benchmarks/gpu_check.py --backend=jax   # the same on JAX (no TensorFlow needed)
    python benchmarks/gpu_check.py --tiny          # anywhere, tiny sizes (the slow test runs it)

Three tables, written to `benchmarks/results/gpu_check_<device>.md` (and `.json`):

1. Agreement: each mode trained the same few steps from the same seeds with
   and without XLA (`jit_compile`); per variable, the largest difference
   relative to the variable's largest magnitude, maximised over the
   classifier's variables and over the finder's, and the final losses. XLA
   reorders floating-point work; Adam's normalisation turns that round-off in
   near-zero gradient components into steps of up to its learning rate, so
   classifier weights may differ by ~1e-4 relative (measured on CPU, 2 steps)
   while the losses agree to round-off. The finder's Adam (epsilon 1e-12) does
   the same to its whole, tiny meta-gradient, and its zero-initialised last
   layer then differs by its full step (relative difference up to 2).
2. Cost: step time and peak step memory per mode (`speed.measure`), without
   and with XLA, and the XLA speed-up.
3. The mgr step (meta_every 1, exact second order) at a realistic size:
   ResNet-18 on 96x96x3 images, batch 64 real + 64 synthetic, with and without
   XLA (`--tiny`: small_cnn at 16x16x3, batch 4: the code path only).

Without XLA, TensorFlow runs its graph and JAX its operations one by one.
Memory on JAX is XLA's buffer assignment of the compiled step
(`speed.compiled_step_memory`): there is none without XLA ("-").
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import _common  # noqa: E402  (first: it reads --backend before Keras loads)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import speed  # noqa: E402
from absl import app, flags  # noqa: E402
from machine import describe  # noqa: E402
from machine import markdown as machine_markdown  # noqa: E402

import keras_mgr  # noqa: E402
from keras_mgr.backbones import resnet18, small_cnn  # noqa: E402
from keras_mgr.backend import tf  # noqa: E402  (imported on first use: not on JAX)
from keras_mgr.generators import conditional_generator  # noqa: E402

MODES = ("base", "gda", "metagda", "pcr", "mgr")
# (image size, batch, agreement steps, timed steps, rounds, realistic size, realistic batch)
SIZES = {"full": (32, 32, 10, 10, 3, 96, 64), "tiny": (8, 4, 2, 2, 1, 16, 4)}


def define_flags():
    _common.define("bool", "tiny", False, "Tiny sizes (CPU smoke run).")
    _common.define("string", "backend", "tensorflow", "Keras backend: tensorflow or jax "
                   "(read before Keras loads).")
    _common.define("string", "out", "benchmarks/results", "Output folder ('' to print only).")
    flags.DEFINE_list("check_modes", list(MODES), "Modes to check.")


def _data(image_shape, batch, steps, num_classes=10):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch * steps,) + image_shape).astype("float32")
    return x, rng.integers(0, num_classes, batch * steps).astype("int32")


def _model(mode, backbone, generator, batch, jit_compile):
    keras.utils.set_random_seed(0)
    model = keras_mgr.wrap(backbone(), generator, mode=mode, meta_every=1, seed=0,
                           meta_batch_size=batch)
    model.compile(jit_compile=jit_compile)
    return model


def agreement(mode, image_shape, batch, steps):
    """`{classifier, finder, losses}`: the same steps with and without XLA."""
    generator = conditional_generator(64, 10, image_shape)
    generator.trainable = False
    x, y = _data(image_shape, batch, steps)
    runs = {}
    for jit in (False, True):
        model = _model(mode, lambda: small_cnn(image_shape), generator, batch, jit)
        history = model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False).history
        finder = {id(v) for v in model.finder.weights} if model.finder is not None else set()
        runs[jit] = ([(id(v) in finder, v.numpy()) for v in model.weights],
                     {k: float(v[-1]) for k, v in history.items()})
    pairs = list(zip(runs[False][0], runs[True][0]))
    return {
        "classifier": max_relative_difference([a for (f, a), _ in pairs if not f],
                                              [b for (f, _), (_, b) in pairs if not f]),
        "finder": max_relative_difference([a for (f, a), _ in pairs if f],
                                          [b for (f, _), (_, b) in pairs if f]),
        "losses": {k: (runs[False][1][k], runs[True][1][k]) for k in runs[False][1]},
    }


def max_relative_difference(first, second):
    """Largest `max|a - b| / max(max|a|, max|b|)` over pairs of arrays (0 if none)."""
    worst = 0.0
    for a, b in zip(first, second):
        a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
        if a.size:
            scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), 1e-12)
            worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    return worst


def realistic(image_size, batch, backbone=resnet18):
    """mgr (meta_every 1): `{jit: (seconds per step, peak MiB)}`."""
    image_shape = (image_size, image_size, 3)
    generator = conditional_generator(64, 10, image_shape)
    generator.trainable = False
    x, y = _data(image_shape, batch, 4)
    out = {}
    for jit in (False, True):
        model = _model("mgr", lambda: backbone(image_shape), generator, batch, jit)
        model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, verbose=0, shuffle=False)
        device, stats = speed._memory()
        if stats is not None:
            tf.config.experimental.reset_memory_stats(device)
        _, before = speed._memory()
        timer = speed.StepTimer()
        model.fit(x, y, batch_size=batch, verbose=0, shuffle=False, callbacks=[timer])
        _, after = speed._memory()
        if stats is not None:
            memory = (after["peak"] - before["current"]) / 2**20
        elif jit and keras.backend.backend() == "jax":
            memory = speed.compiled_step_memory(model, x[:batch], y[:batch]) / 2**20
        else:
            memory = None
        out[jit] = (float(np.mean(timer.times)), memory)
    return out


def run(tiny, modes):
    size, batch, agree_steps, steps, rounds, big, big_batch = SIZES["tiny" if tiny else "full"]
    image_shape = (size, size, 1)
    start = time.perf_counter()
    results = {"device": speed.device_name(), "backend": keras.backend.backend(), "tiny": tiny,
               "image_shape": image_shape, "batch": batch, "agreement": {}, "cost": {},
               "realistic": {}}
    for mode in modes:
        results["agreement"][mode] = agreement(mode, image_shape, batch, agree_steps)
    for jit in (False, True):
        seconds, memory, _, _ = speed.measure(list(modes), image_shape, steps, rounds, batch,
                                              jit_compile=jit)
        results["cost"][str(jit)] = {m: (seconds[m], None if memory[m] is None else
                                         memory[m] / 2**20) for m in modes}
    backbone = small_cnn if tiny else resnet18
    results["realistic"] = {str(k): v for k, v in realistic(big, big_batch, backbone).items()}
    results["realistic_backbone"] = backbone.__name__
    results["realistic_size"] = (big, big_batch)
    results["seconds"] = time.perf_counter() - start
    return results


def report(results):
    """The markdown tables of `run`'s results."""
    size = results["image_shape"]
    lines = [f"# GPU check on {results['device']}, {results.get('backend', 'tensorflow')}"
             + (" (tiny)" if results["tiny"] else ""), "",
             f"small_cnn, images {size[0]}x{size[1]}x{size[2]}, batch {results['batch']} "
             f"real + {results['batch']} synthetic, meta_every 1; whole check "
             f"{results['seconds']:.0f} s.", "",
             "## XLA against no XLA (same seeds, same steps)", "",
             "| mode | classifier weights, max relative difference | finder weights | "
             "final loss, no XLA / XLA |", "|---|---|---|---|"]
    for mode, row in results["agreement"].items():
        loss = row["losses"].get("loss", (float("nan"),) * 2)
        finder = f"{row['finder']:.2e}" if mode in ("metagda", "mgr") else "-"
        lines.append(f"| {mode} | {row['classifier']:.2e} | {finder} | "
                     f"{loss[0]:.5f} / {loss[1]:.5f} |")
    lines += ["", "## Step time and peak step memory", "",
              "| mode | ms / step | ms / step, XLA | XLA speed-up | MiB | MiB, XLA |",
              "|---|---|---|---|---|---|"]
    plain, xla = results["cost"]["False"], results["cost"]["True"]
    for mode in plain:
        lines.append(f"| {mode} | {1e3 * plain[mode][0]:.1f} | {1e3 * xla[mode][0]:.1f} | "
                     f"{plain[mode][0] / xla[mode][0]:.2f}x | {_mib(plain[mode][1])} | "
                     f"{_mib(xla[mode][1])} |")
    big, big_batch = results["realistic_size"]
    real = results["realistic"]
    name = results.get("realistic_backbone", "resnet18")
    lines += ["", f"## mgr at a realistic size: {name}, {big}x{big}x3, batch {big_batch} + "
              f"{big_batch}", "", "| | ms / step | peak step MiB |", "|---|---|---|",
              f"| no XLA | {1e3 * real['False'][0]:.1f} | {_mib(real['False'][1])} |",
              f"| XLA | {1e3 * real['True'][0]:.1f} | {_mib(real['True'][1])} |",
              f"| XLA speed-up | {real['False'][0] / real['True'][0]:.2f}x | |"]
    return "\n".join(lines) + "\n"


def _mib(value):
    return "-" if value is None else f"{value:.1f}"


def main(argv):
    del argv
    f = flags.FLAGS
    if f.backend != keras.backend.backend():
        raise ValueError(f"--backend={f.backend} but Keras loaded {keras.backend.backend()!r}.")
    results = run(f.tiny, f.check_modes)
    here = describe()
    results["machine"] = here._asdict()
    text = report(results) + "\n".join(machine_markdown(here)) + "\n"
    print(text)
    if f.out:
        os.makedirs(f.out, exist_ok=True)
        device = speed.device_kind() + ("" if f.backend == "tensorflow" else "_" + f.backend)
        stem = os.path.join(f.out, f"gpu_check_{device}" + ("_tiny" if f.tiny else ""))
        with open(stem + ".md", "w") as fh:
            fh.write(text)
        with open(stem + ".json", "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
