"""What MGR costs: step time, peak memory, a breakdown and fit throughput.

    python benchmarks/speed.py                     # CPU, no XLA
    python benchmarks/speed.py --jit_compile       # XLA (meant for a GPU)
    python benchmarks/speed.py --quick             # smoke configuration
    python benchmarks/speed.py --networks=resnet18 --image_size=64 --channels=3 \
        --configs=base,pcr,mgr,mgr/mb4,mgr/mb8 --steps=2 --rounds=1 --throughput= --nobreakdown
    python benchmarks/speed.py --networks=peer --batch_size=64 --configs=base,gda,pcr,mgr:5,mgr \
        --throughput= --nobreakdown               # the PyTorch reference's networks

Every configuration trains the same backbone with the same real and synthetic
batch sizes and the same generator, in one process: `small_cnn` (or `resnet18`) and the
project's conditional generator, or with `--networks=peer` the networks of
the PyTorch reference step (`peer_networks.py`: a 3-block ResNet, a
DCGAN-style generator, a one-hidden-layer unconditional finder, flip +
4-pixel translation views, finder Adam 1e-3), so that the two step times
can be set side by side (docs/benchmarks.md, "Against PyTorch").

Configurations are interleaved in rounds; each round's mean step time is
taken (a meta_every=k config then counts its meta steps) and the median over
rounds reported, so that machine noise (another process on the machine) hits
all configurations alike; the ratio to base is the number to compare across
machines.

Config syntax: `mode[:k][+pool][@s][/fd][/mbK][/kerasbn]`: `:k` sets
meta_every=k (`:inf`: only the first step is a meta step, i.e. the plain mgr
step; `:auto`: wrap()'s default), `+pool` a 1024-image synthetic pool, `@s`
synthetic_batch_size=s, `/fd` the finite-difference meta-gradient, `/mbK`
meta_microbatches=K (`/mbauto`: wrap()'s default), `/kerasbn` Keras's own
BatchNorm pass (`wrap(fused_batchnorm=False)`; otherwise its "auto", the
fused kernel on TensorFlow). Without `/mbK` a config runs the whole-batch
second-order pass (meta_microbatches=1), as every table before that option
did; wrap()'s default, `"auto"`, is `/mb4` at 32 or 64 synthetic images per
replica (`/mb2` at 16).

Backends: `--backend=tensorflow` (default), `--backend=jax` or
`--backend=torch` (read before Keras loads; PyTorch runs eagerly, with no
memory column); one process per backend, so compare them through their
ratios or with `benchmarks/backends.py`, which alternates them.

Peak memory, the step's working memory. TensorFlow: its allocator statistics
for the device (`tf.config.experimental.get_memory_info`), the peak during
the timed steps minus what was allocated before them (weights, the other
models). On CPU TensorFlow keeps these statistics only with its BFC
allocator, chosen by `TF_CPU_ALLOCATOR_USE_BFC=true` before TensorFlow loads:
this script sets it, and fails rather than report 0 when the statistics are
unavailable. JAX (no per-step allocator peak): XLA's buffer assignment of
the compiled step, `memory_analysis()` of the jitted step over the same
state and batch, temporaries plus outputs not aliased to the donated state;
with `--nojit_compile` there is no compiled step and no memory column.

Breakdown (mgr, meta_every=1; TensorFlow): the step's parts timed directly as compiled
functions (real-batch CE forward + backward; finder + generator forward; PCR's
two augmented views through the backbone, forward + backward) and the meta
step as the difference between the `mgr:1` and the plain `mgr:inf` step.

Process peak RSS is reported once for the whole run (`getrusage`), and once
over the timed steps: after the warm-up (tracing, the first steps) Python's
garbage and malloc's free pages are released and the kernel's peak mark is
reset, as the PyTorch reference does before each mode. Time a single
configuration per process to compare it with another framework's.

Throughput: one epoch of `fit` on the digits training split as a shuffled
`tf.data` pipeline (`Dataset.as_dataset`), after a warm-up epoch.

Writes `<out>/speed_<device>_xla<on|off>.{md,json}`.
"""

import ctypes
import gc
import json
import os
import resource
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# CPU allocator statistics (peak memory) exist only with the BFC allocator,
# which must be chosen before TensorFlow loads.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from machine import Machine, describe  # noqa: E402
from machine import markdown as machine_markdown  # noqa: E402
from peer_networks import peer_backbone, peer_generator, peer_wrap_options  # noqa: E402

import keras_mgr  # noqa: E402
from keras_mgr.backbones import resnet18, small_cnn  # noqa: E402
from keras_mgr.backend import tf  # noqa: E402  (imported on first use: not on JAX)
from keras_mgr.generators import conditional_generator  # noqa: E402

FLAGS = flags.FLAGS
_common.define("string", "backend", "tensorflow", "Keras backend: tensorflow, jax or torch "
               "(read before Keras loads).")
_common.define("integer", "batch_size", 32, "Real batch size.")
flags.DEFINE_integer("synthetic_batch_size", 0, "Synthetic batch size (0: = batch_size).")
_common.define("integer", "image_size", 32, "Square image size.")
flags.DEFINE_integer("channels", 1, "Image channels.")
_common.define("integer", "steps", 10, "Timed steps per configuration and round.")
flags.DEFINE_integer("rounds", 5, "Rounds over all configurations.")
flags.DEFINE_bool("jit_compile", False, "Compile the steps with XLA.")
flags.DEFINE_enum("networks", "small_cnn", ["small_cnn", "resnet18", "peer"],
                  "small_cnn or resnet18 with the project's generator, or the PyTorch "
                  "reference's networks.")
flags.DEFINE_list("configs",
                  ["base", "gda", "gda+pool", "metagda", "pcr", "pcr+pool", "mgr:inf",
                   "mgr", "mgr:5", "mgr/fd", "pcr@16", "pcr@8", "mgr@16", "mgr@8"],
                  "Configurations to time (see the module docstring).")
flags.DEFINE_list("throughput", ["base", "gda", "pcr", "mgr", "mgr:5"],
                  "Configurations whose fit throughput is measured ([] to skip).")
flags.DEFINE_bool("breakdown", True, "Time the parts of the mgr step.")
_common.define("string", "out", "benchmarks/results", "Output folder ('' to print only).")
flags.DEFINE_string("from_json", None, "Print the tables of a results JSON and exit.")
_common.define("bool", "quick", False, "Smoke configuration: 2 steps, 1 round, 4 configs.")

NUM_CLASSES = 10


class StepTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def parse_config(config):
    """`"mgr:5+pool@16"` -> (mode, meta_every, pool, synthetic_batch_size or None).

    The `/` options (not returned here) are read by `config_options`.
    """
    config = config.partition("/")[0]
    config, _, sbs = config.partition("@")
    config, pool, _ = config.partition("+pool")
    mode, _, every = config.partition(":")
    every = {"inf": 10**9, "auto": "auto"}.get(every) or int(every or 1)
    return mode, every, bool(pool), int(sbs) if sbs else None


def config_options(config):
    """`wrap()` arguments of a config's `/` options: `"mgr/fd/mb4/kerasbn"` ->
    finite-difference meta-gradient, 4 micro-batches, Keras's BatchNorm pass."""
    options = {"meta_gradient": "second_order", "meta_microbatches": 1,
               "fused_batchnorm": "auto"}
    for option in config.split("/")[1:]:
        if option == "fd":
            options["meta_gradient"] = "finite_difference"
        elif option.startswith("mb") and option[2:].isdigit():
            options["meta_microbatches"] = int(option[2:])
        elif option == "mbauto":
            options["meta_microbatches"] = "auto"
        elif option == "kerasbn":
            options["fused_batchnorm"] = False
        else:
            raise ValueError(f"Unknown config option /{option} in {config!r}: "
                             "expected /fd, /mbK, /mbauto or /kerasbn.")
    return options


def make_generator(networks, image_shape):
    if networks == "peer":
        return peer_generator(image_shape[-1])
    generator = conditional_generator(64, NUM_CLASSES, image_shape)
    generator.trainable = False
    return generator


def build(config, image_shape, generator, batch_size, synthetic_batch_size, jit_compile,
          networks="small_cnn"):
    mode, every, pool, sbs = parse_config(config)
    keras.utils.set_random_seed(0)
    backbone = {"peer": peer_backbone, "resnet18": resnet18}.get(networks, small_cnn)(image_shape)
    options = {}
    if networks == "peer":  # the reference's finder (finder modes) and views (PCR modes)
        options = {k: v for k, v in peer_wrap_options().items()
                   if mode in (("mgr", "pcr") if k == "augmentation" else ("mgr", "metagda"))}
    model = keras_mgr.wrap(
        backbone, generator, mode=mode, meta_every=every, seed=0, **options,
        synthetic_pool_size=1024 if pool else 0,
        synthetic_batch_size=sbs or synthetic_batch_size or None,
        meta_batch_size=batch_size,
        **config_options(config),
    )
    model.compile(jit_compile=jit_compile)
    return model


def device_name():
    """The device the steps run on, as the backend names it (e.g. `GPU:0`, `cuda:0`)."""
    if keras.backend.backend() == "jax":
        import jax

        return str(jax.devices()[0])
    if keras.backend.backend() == "torch":
        from keras.src.backend.torch.core import get_device

        return str(get_device())
    return tf.config.list_logical_devices()[-1].name


def device_kind():
    """`"gpu"` or `"cpu"`."""
    if keras.backend.backend() == "jax":
        import jax

        return "gpu" if jax.devices()[0].platform == "gpu" else "cpu"
    if keras.backend.backend() == "torch":
        return "gpu" if device_name().startswith("cuda") else "cpu"
    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def compiled_step_memory(model, x, y):
    """JAX: bytes of XLA's buffers for `model`'s jitted training step(s) on
    the batch `(x, y)`, temporaries plus outputs not aliased to the donated
    state (the largest of the plain and the meta step)."""
    import jax

    state = ([v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables],
             [v.value for v in model.optimizer.variables],
             [v.value for v in model.metrics_variables])
    steps = [model.train_step] + ([model.meta_train_step] if model.uses_finder else [])
    worst = 0
    for step in steps:
        analysis = jax.jit(step, donate_argnums=0).lower(state, (x, y)).compile()
        analysis = analysis.memory_analysis()
        worst = max(worst, analysis.temp_size_in_bytes + analysis.output_size_in_bytes
                    - analysis.alias_size_in_bytes)
    return worst


def _memory():
    """`(device, {"current", "peak"})` of TensorFlow's allocator, or an error
    naming the fix (never a silent 0). `(device, None)` when the run asked for
    TensorFlow's default CPU allocator (`TF_CPU_ALLOCATOR_USE_BFC=false`, e.g.
    to compare process RSS with another framework), on JAX (see
    `compiled_step_memory`) and on PyTorch: no allocator column then."""
    if keras.backend.backend() in ("jax", "torch"):
        return device_name(), None
    device = "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"
    if device == "CPU:0" and os.environ.get("TF_CPU_ALLOCATOR_USE_BFC") == "false":
        return device, None
    try:
        return device, tf.config.experimental.get_memory_info(device)
    except (ValueError, RuntimeError) as error:
        raise RuntimeError(
            f"No allocator statistics on {device}, so no peak memory: on CPU set "
            "TF_CPU_ALLOCATOR_USE_BFC=true before TensorFlow is imported (speed.py does "
            f"when it is the first to import it). Received: {error}") from error


def measure(configs, image_shape, steps, rounds, batch_size, synthetic_batch_size=0,
            jit_compile=False, networks="small_cnn", rss=None, warmup=None):
    """Per config: median seconds per step and peak working memory (bytes).

    Returns `(seconds, memory, models, generator)`. A dict `rss` receives
    `"steps_peak"`: the process's peak RSS (bytes) over the timed steps, the
    mark reset after the warm-up (None where the kernel refuses the reset).
    A dict `warmup` receives each config's warm-up seconds (tracing,
    compilation and 3 steps; configs warm up in order, the first also pays
    TensorFlow's one-time start).
    """
    generator = make_generator(networks, image_shape)
    rng = np.random.default_rng(0)
    n = batch_size * steps
    x = rng.uniform(-1, 1, (n,) + image_shape).astype("float32")
    y = rng.integers(0, NUM_CLASSES, n).astype("int32")
    models = {c: build(c, image_shape, generator, batch_size, synthetic_batch_size,
                       jit_compile, networks) for c in configs}
    times = {c: [] for c in configs}
    memory = {c: 0 for c in configs}
    # Warm-up: tracing and compilation; two batches so that a meta step, the
    # validation buffer (filled after one batch) and a plain step all run.
    for c, model in models.items():
        start = time.perf_counter()
        model.fit(x[: 3 * batch_size], y[: 3 * batch_size], batch_size=batch_size,
                  epochs=1, verbose=0, shuffle=False)
        if warmup is not None:
            warmup[c] = time.perf_counter() - start
    reset = _reset_peak_rss()
    device, stats = _memory()
    if stats is None:  # not measured: shown as "-", never as 0
        memory = {c: None for c in configs}
    if keras.backend.backend() == "jax" and jit_compile:
        memory = {c: compiled_step_memory(m, x[:batch_size], y[:batch_size].astype("int32"))
                  for c, m in models.items()}
    for _ in range(rounds):
        for c, model in models.items():
            timer = StepTimer()
            if stats is not None:
                tf.config.experimental.reset_memory_stats(device)
            _, before = _memory()
            model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False,
                      callbacks=[timer])
            _, after = _memory()
            if after is not None:
                memory[c] = max(memory[c], after["peak"] - before["current"])
            times[c].append(float(np.mean(timer.times)))
    if rss is not None:
        rss["steps_peak"] = _peak_rss() if reset else None
    # Mean step time within a round (so that meta_every=k counts its meta
    # steps: a median of single steps would hide them), median over rounds.
    seconds = {c: float(np.median(t)) for c, t in times.items()}
    return seconds, memory, models, generator


def _reset_peak_rss():
    """Frees what Python and malloc hold, then resets the kernel's peak-RSS mark
    (as the PyTorch reference does before each mode). False if refused."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss():
    """The process's peak RSS in bytes since start or the last reset (VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _median_seconds(fn, repeats):
    keras.ops.convert_to_numpy(tf.nest.flatten(fn())[0])  # trace / compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(tf.nest.flatten(fn())[0])
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def breakdown(model, image_shape, batch_size, repeats, jit_compile):
    """Seconds of the parts of one mgr step, each a compiled function."""
    sbs = model.synthetic_batch_size or batch_size
    rng = np.random.default_rng(1)
    x = tf.constant(rng.uniform(-1, 1, (batch_size,) + image_shape).astype("float32"))
    y = tf.constant(rng.integers(0, NUM_CLASSES, batch_size).astype("int32"))
    theta = [v.value for v in model.classifier_variables]
    state = [v.value for v in model.backbone.non_trainable_variables]
    phi = [v.value for v in model.finder.trainable_variables]
    draws = model.objective.draw(sbs)
    images = model.synthesis(phi, draws)
    compiled = tf.function(jit_compile=jit_compile, autograph=False)

    @compiled
    def real_ce():
        with tf.GradientTape() as tape:
            tape.watch(theta)
            _, logits, _, _ = model.objective.forward(theta, state, x, training=True)
            loss = model.objective.cross_entropy(y, logits)
        return tape.gradient(loss, theta)

    @compiled
    def generate():
        return model.synthesis(phi, model.objective.draw(sbs))

    @compiled
    def pcr_views():
        with tf.GradientTape() as tape:
            tape.watch(theta)
            loss, _ = model.term(theta, state, images, draws)
        return [g for g in tape.gradient(loss, theta) if g is not None]

    return {"real CE forward + backward": _median_seconds(real_ce, repeats),
            "finder + generator forward": _median_seconds(generate, repeats),
            "PCR: two views, forward + backward": _median_seconds(pcr_views, repeats)}


def throughput(configs, generator, batch_size, synthetic_batch_size, jit_compile,
               networks="small_cnn"):
    """Images per second of a whole `fit` epoch on digits through tf.data."""
    from keras_mgr import datasets

    data = datasets.load("digits", ratio=1.0, seed=0, image_size=generator.output.shape[1])
    result = {}
    for c in configs:
        model = build(c, data.image_shape, generator, batch_size, synthetic_batch_size,
                      jit_compile, networks)
        train = data.as_dataset("train", batch_size=batch_size, shuffle=True, seed=0)
        model.fit(train, epochs=1, verbose=0, shuffle=False)  # warm-up: tracing
        start = time.perf_counter()
        model.fit(train, epochs=1, verbose=0, shuffle=False)  # tf.data shuffles
        result[c] = len(data.y_train) / (time.perf_counter() - start)
    return result


def report(f, seconds, memory, parts, images_per_second, device, peak_rss=None,
           steps_rss=None, warmup=None):
    base = seconds.get("base", next(iter(seconds.values())))
    base_memory = memory.get("base")
    pcr = seconds.get("pcr")
    sbs = f["synthetic_batch_size"] or f["batch_size"]
    lines = [
        f"# Step cost, {device}, {f.get('backend', 'tensorflow')}, "
        f"jit_compile={f['jit_compile']}", "",
        f"Real batch {f['batch_size']}, synthetic batch {sbs} (unless `@s`), images "
        f"{f['image_size']}x{f['image_size']}x{f['channels']}, "
        f"{f.get('networks', 'small_cnn')} networks, "
        f"{f['steps']} steps x {f['rounds']} rounds per config (mean step time of a round, "
        "median over rounds).", "",
        "| config | ms / step | ratio to base | ratio to pcr | peak step memory (MiB) "
        "| memory ratio to base |", "|---|---|---|---|---|---|"]
    for c, s in seconds.items():
        to_pcr = f"{s / pcr:.2f}" if pcr else "-"
        mem = memory.get(c)
        ratio = f"{mem / base_memory:.2f}" if mem is not None and base_memory else "-"
        mem = "- | -" if mem is None else f"{mem / 2**20:.1f} | {ratio}"
        lines.append(f"| {c} | {1000 * s:.1f} | {s / base:.2f} | {to_pcr} | {mem} |")
    if peak_rss:
        lines += ["", f"Process peak RSS: {peak_rss / 2**20:.0f} MiB."]
    if peak_rss and steps_rss:
        lines[-1] += (f" Over the timed steps (after the warm-up, freed memory trimmed "
                      f"and the mark reset): {steps_rss / 2**20:.0f} MiB.")
    if warmup:
        lines += ["", "Warm-up (tracing, compilation and 3 steps; in this order, the first "
                  "also pays the backend's start), s: "
                  + ", ".join(f"{c} {w:.1f}" for c, w in warmup.items()) + "."]
    lines += _scaling(seconds, sbs)
    if parts:
        total = seconds.get("mgr")
        plain = seconds.get("mgr:inf")
        if total and plain:
            parts = dict(parts, **{"meta step (mgr:1 - mgr:inf)": total - plain})
        lines += ["", "## Where the mgr (meta_every=1) step goes", "",
                  "| part | ms | share of the mgr step |", "|---|---|---|"]
        for name, s in parts.items():
            share = f"{s / total:.0%}" if total else "-"
            lines.append(f"| {name} | {1000 * s:.1f} | {share} |")
        if total:
            lines.append(f"| whole mgr step | {1000 * total:.1f} | 100% |")
    if f.get("breakdown") and f.get("backend", "tensorflow") != "tensorflow":
        lines += ["", "Breakdown of the mgr step: not measured on this backend (it times "
                  "TensorFlow functions)."]
    if images_per_second:
        base_ips = images_per_second.get("base")
        lines += ["", "## fit throughput (digits train split, tf.data, one epoch)", "",
                  "| config | images / s | ratio to base |", "|---|---|---|"]
        for c, ips in images_per_second.items():
            ratio = f"{ips / base_ips:.2f}" if base_ips else "-"
            lines.append(f"| {c} | {ips:.0f} | {ratio} |")
    return "\n".join(lines) + "\n"


def _scaling(seconds, sbs):
    """Extra cost over base of `mode@s` against `mode` (full synthetic batch)."""
    base = seconds.get("base")
    rows = []
    for c, s in seconds.items():
        mode, every, pool, size = parse_config(c)
        full = seconds.get(c.split("@")[0])
        if size is None or not base or not full or full == base:
            continue
        rows.append(f"| {c} | {size / sbs:.2f} | {(s - base) / (full - base):.2f} | "
                    f"{s / full:.2f} |")
    if not rows:
        return []
    return ["", "## Smaller synthetic batches", "",
            "Extra cost over base, relative to the same mode at the full synthetic batch "
            f"({sbs}); proportional scaling would match the batch fraction.", "",
            "| config | synthetic batch fraction | extra cost fraction | step ratio |",
            "|---|---|---|---|"] + rows


def run(f):
    """Runs every measurement of flag dict `f`; returns (markdown, results)."""
    image_shape = (f["image_size"], f["image_size"], f["channels"])
    rss, warmup = {}, {}
    seconds, memory, models, generator = measure(
        f["configs"], image_shape, f["steps"], f["rounds"], f["batch_size"],
        f["synthetic_batch_size"], f["jit_compile"], f["networks"], rss, warmup)
    parts = {}
    mgr = models.get("mgr")
    if f["breakdown"] and mgr is not None and f["backend"] == "tensorflow":
        parts = breakdown(mgr, image_shape, f["batch_size"], f["steps"] * f["rounds"],
                          f["jit_compile"])
    images_per_second = throughput(f["throughput"], generator, f["batch_size"],
                                   f["synthetic_batch_size"], f["jit_compile"],
                                   f["networks"]) if (
        f["throughput"]) else {}
    device = device_name()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    here = describe()
    md = report(f, seconds, memory, parts, images_per_second, device, peak_rss,
                rss["steps_peak"], warmup) + "\n".join(machine_markdown(here)) + "\n"
    results = {"flags": f, "device": device, "machine": here._asdict(),
               "seconds_per_step": seconds,
               "warmup_seconds": warmup,
               "process_peak_rss_bytes": peak_rss, "steps_peak_rss_bytes": rss["steps_peak"],
               "peak_step_memory_bytes": memory, "breakdown_seconds": parts,
               "fit_images_per_second": images_per_second}
    return md, results


def flag_dict():
    f = {name: FLAGS[name].value for name in (
        "batch_size", "synthetic_batch_size", "image_size", "channels", "steps",
        "rounds", "jit_compile", "configs", "throughput", "breakdown", "out", "networks",
        "backend")}
    if f["backend"] != keras.backend.backend():
        raise ValueError(f"--backend={f['backend']} but Keras loaded "
                         f"{keras.backend.backend()!r}: pass --backend=NAME, or set "
                         "KERAS_BACKEND, before the script starts.")
    if FLAGS.quick:
        quick = {"steps": 2, "rounds": 1, "configs": ["base", "pcr", "mgr:inf", "mgr"],
                 "throughput": ["base"]}
        f.update({k: v for k, v in quick.items() if not FLAGS[k].present})
    return f


def main(argv):
    del argv
    f = flag_dict()
    if FLAGS.from_json:  # re-render a finished measurement
        with open(FLAGS.from_json) as fh:
            r = json.load(fh)
        print(report(r["flags"], r["seconds_per_step"], r["peak_step_memory_bytes"],
                     r["breakdown_seconds"], r["fit_images_per_second"], r["device"],
                     r.get("process_peak_rss_bytes"), r.get("steps_peak_rss_bytes"),
                     r.get("warmup_seconds"))
              + ("\n".join(machine_markdown(Machine(**r["machine"]))) if "machine" in r else ""))
        return
    md, results = run(f)
    print(md)
    if f["out"]:
        stem = os.path.join(f["out"], f"speed_{device_kind()}_xla"
                                      f"{'on' if f['jit_compile'] else 'off'}")
        if f["backend"] != "tensorflow":
            stem += "_" + f["backend"]
        if f["networks"] != "small_cnn":
            stem += "_" + f["networks"]
        if FLAGS.quick:
            stem += "_quick"
        os.makedirs(f["out"], exist_ok=True)
        with open(stem + ".md", "w") as fh:
            fh.write(md)
        with open(stem + ".json", "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"wrote {stem}.md, .json")


if __name__ == "__main__":
    app.run(main)
