"""Where the plain training step's time goes on a CPU, per TensorFlow setting
and on JAX, beside the same parts in PyTorch.

    python benchmarks/cpu_breakdown.py --torch_script=PATH/torch_mgr_step.py \
        --torch_python=PATH/venv/bin/python

On the PyTorch reference's 3-block ResNet (`peer_networks.py`, batch 64,
32x32x1), each part of the base step is timed as a compiled function: the
forward pass with its loss, forward + backward (the gradients), the Adam
update alone, and the whole step; with keras_mgr's fused BatchNorm kernel
(wrap()'s default on TensorFlow), with Keras's own BatchNorm pass, and with
Keras's pass on NCHW (channels first) images. Each
`--settings` item is an environment for one process (TensorFlow reads
oneDNN's switch, its ISA cap and its thread pools when it loads); the
reference's same parts run in a process of their own, and so do Keras's
passes on JAX (`--jax`, one jitted function per part). All processes
alternate, `--rounds` times, so machine noise hits them alike; the median
over rounds is reported.

Writes `<out>/<name>.{md,json}` (`--name`, default `cpu_breakdown`).
"""

import json
import os
import statistics
import subprocess
import sys

from absl import app, flags
from machine import environment

FLAGS = flags.FLAGS
HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ("forward", "forward_backward", "adam", "step")
SETTINGS = ["", "TF_ENABLE_ONEDNN_OPTS=0", "TF_ENABLE_ONEDNN_OPTS=1 ONEDNN_MAX_CPU_ISA=AVX2",
            "TF_NUM_INTEROP_THREADS=1", "TF_ENABLE_ONEDNN_OPTS=0 TF_NUM_INTEROP_THREADS=1"]

# Both children time a part so: two warm-up calls, then the median of `repeats`.
MEDIAN_MS = """def median_ms(fn, repeats):
    fn(); fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))
"""

# The passes each Keras child times: (name, BatchNorm pass, image layout).
PASSES = (("fused", "fused", "channels_last"), ("keras", "keras", "channels_last"),
          ("keras_nchw", "keras", "channels_first"))

# Every child's batch and loss: the reference's shapes, one seed.
INPUTS = """rng = np.random.default_rng(0)
images = rng.uniform(-1, 1, (64, 32, 32, 1)).astype("float32")
labels = rng.integers(0, 10, 64)
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)"""

# Runs in a child process of the given environment: prints one JSON line. A
# pass the setting cannot run (TensorFlow's own CPU kernels take NHWC only)
# is recorded as the line of its error that says so.
KERAS_CHILD = r"""
import json, sys, time
sys.path.insert(0, {here!r})
import _common  # keras_mgr first: its oneDNN choice precedes TensorFlow
import keras, numpy as np
from keras_mgr.backend import tf
from keras_mgr.batchnorm import fused
from machine import describe
from peer_networks import peer_backbone

{median_ms}
{inputs}
y = tf.constant(labels)
parts, unsupported = {{}}, {{}}
for name, batchnorm, layout in {passes!r}:
    keras.config.set_image_data_format(layout)
    keras.utils.set_random_seed(0)
    x = tf.constant(images if layout == "channels_last" else images.transpose(0, 3, 1, 2))
    model = peer_backbone(tuple(x.shape[1:]))
    if batchnorm == "fused":
        assert fused.fuse(model) == 9
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    forward = tf.function(lambda: loss(y, model(x, training=True)))
    def gradients():
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        return tape.gradient(value, model.trainable_variables)
    gradients = tf.function(gradients)
    try:
        fixed = gradients()
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
        lines = [line.strip() for line in str(error).splitlines() if "NHWC" in line]
        if layout != "channels_first" or not lines:
            raise  # only TensorFlow's own CPU kernels refusing NCHW is a result
        unsupported[name] = lines[0][:200].replace("|", "/")
        continue
    adam = tf.function(lambda: optimizer.apply(fixed, model.trainable_variables))
    step = tf.function(lambda: optimizer.apply(gradients(), model.trainable_variables))
    parts[name] = {{part: median_ms(fn, {repeats}) for part, fn in
                   (("forward", forward), ("forward_backward", gradients),
                    ("adam", adam), ("step", step))}}
print("RESULT " + json.dumps({{"parts": parts, "unsupported": unsupported,
                              "machine": describe()._asdict()}}))
"""

# The same passes on JAX (Keras's BatchNorm; each part one jitted function).
JAX_CHILD = r"""
import json, sys, time
sys.path.insert(0, {here!r})
import keras, numpy as np, jax, jax.numpy as jnp
from peer_networks import peer_backbone

{median_ms}
{inputs}
y = jnp.asarray(labels)
parts = {{}}
for name, batchnorm, layout in {passes!r}:
    if batchnorm != "keras":
        continue
    keras.config.set_image_data_format(layout)
    keras.utils.set_random_seed(0)
    x = jnp.asarray(images if layout == "channels_last" else images.transpose(0, 3, 1, 2))
    model = peer_backbone(tuple(x.shape[1:]))
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    trainable = [v.value for v in model.trainable_variables]
    statistics = [v.value for v in model.non_trainable_variables]
    slots = [v.value for v in optimizer.variables]
    # Every array is an argument (as in Keras's trainer): nothing is a
    # compile-time constant that XLA could fold.
    def value(trainable, statistics, x, y):
        logits, new_statistics = model.stateless_call(trainable, statistics, x, training=True)
        return loss(y, logits), new_statistics
    forward = jax.jit(value)
    gradients = jax.jit(jax.value_and_grad(value, has_aux=True))
    apply = jax.jit(optimizer.stateless_apply)
    def whole_step(slots, trainable, statistics, x, y):
        grads = jax.value_and_grad(value, has_aux=True)(trainable, statistics, x, y)[1]
        return optimizer.stateless_apply(slots, grads, trainable)
    step = jax.jit(whole_step)
    fixed = gradients(trainable, statistics, x, y)[1]
    calls = (("forward", lambda: forward(trainable, statistics, x, y)),
             ("forward_backward", lambda: gradients(trainable, statistics, x, y)),
             ("adam", lambda: apply(slots, fixed, trainable)),
             ("step", lambda: step(slots, trainable, statistics, x, y)))
    parts[name] = {{part: median_ms(lambda: jax.block_until_ready(fn()), {repeats})
                   for part, fn in calls}}
print("RESULT " + json.dumps({{"parts": parts, "jax": jax.__version__}}))
"""

TORCH_CHILD = r"""
import json, sys, time
sys.path.insert(0, {folder!r})
import numpy as np, torch
import torch.nn.functional as F
from torch_mgr_step import FULL, Classifier

{median_ms}
torch.manual_seed(0)
model = Classifier(FULL).train()
optimizer = torch.optim.Adam(model.parameters(), 1e-3)
x = torch.rand(64, 1, 32, 32) * 2 - 1
y = torch.randint(0, 10, (64,))
def forward():
    F.cross_entropy(model(x), y)
def forward_backward():
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
forward_backward()
def step():
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
parts = {{name: median_ms(fn, {repeats}) for name, fn in
         (("forward", forward), ("forward_backward", forward_backward),
          ("adam", optimizer.step), ("step", step))}}
print("RESULT " + json.dumps({{"parts": {{"torch": parts}}, "torch": torch.__version__,
                              "threads": torch.get_num_threads()}}))
"""


def _child(cmd, env):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{cmd[0]} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def measure(settings, rounds, repeats, torch_script=None, torch_python=None, jax=False):
    """`{"runs": {setting: [child result per round]}, "torch": [...], "jax": [...]}`."""
    runs = {setting: [] for setting in settings}
    torch_runs, jax_runs = [], []
    for _ in range(rounds):
        for setting in settings:
            env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
                       **environment(setting))
            code = KERAS_CHILD.format(here=HERE, repeats=repeats, median_ms=MEDIAN_MS,
                                      passes=PASSES, inputs=INPUTS)
            runs[setting].append(_child([sys.executable, "-c", code], env))
            print(f"{setting or 'as keras_mgr runs'}: {runs[setting][-1]['parts']}", flush=True)
        if jax:
            code = JAX_CHILD.format(here=HERE, repeats=repeats, median_ms=MEDIAN_MS,
                                    passes=PASSES, inputs=INPUTS)
            jax_runs.append(_child([sys.executable, "-c", code],
                                   dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")))
            print(f"jax: {jax_runs[-1]['parts']}", flush=True)
        if torch_script:
            code = TORCH_CHILD.format(folder=os.path.dirname(os.path.abspath(torch_script)),
                                      repeats=repeats, median_ms=MEDIAN_MS)
            torch_runs.append(_child([torch_python, "-c", code], dict(os.environ)))
            print(f"torch: {torch_runs[-1]['parts']}", flush=True)
    return {"runs": runs, "torch": torch_runs, "jax": jax_runs}


def _median(runs, name, part):
    return statistics.median(run["parts"][name][part] for run in runs)


PASS_LABELS = {"fused": "fused", "keras": "keras", "keras_nchw": "keras, NCHW",
               "torch": "torch (NCHW)"}


def report(results):
    """Markdown: ms per part, median over rounds, one row per setting and
    pass; JAX's and the reference's rows; each step's ratio to the reference's."""
    torch_runs = results["torch"]
    torch_step = _median(torch_runs, "torch", "step") if torch_runs else None
    lines = ["| setting | BatchNorm, layout | forward | forward + backward | backward "
             "(difference) | Adam update | whole step | step / PyTorch's | oneDNN |",
             "|---|---|---|---|---|---|---|---|---|"]

    def row(label, name, runs, onednn):
        unsupported = runs[0].get("unsupported", {}).get(name)
        if unsupported:
            return f"| {label} | {PASS_LABELS[name]} | unsupported: {unsupported} |||||| {onednn} |"
        ms = {part: _median(runs, name, part) for part in PARTS}
        ratio = f"{ms['step'] / torch_step:.2f}" if torch_step else "-"
        return (f"| {label} | {PASS_LABELS[name]} | {ms['forward']:.1f} | "
                f"{ms['forward_backward']:.1f} | {ms['forward_backward'] - ms['forward']:.1f} | "
                f"{ms['adam']:.1f} | {ms['step']:.1f} | {ratio} | {onednn} |")

    for setting, runs in results["runs"].items():
        onednn = "on" if runs[0]["machine"]["onednn"] else "off"
        label = f"TensorFlow, `{setting}`" if setting else "TensorFlow as keras_mgr runs"
        for name in PASS_LABELS:
            if name in runs[0]["parts"] or name in runs[0].get("unsupported", {}):
                lines.append(row(label, name, runs, onednn))
    jax_runs = results.get("jax") or []
    for name in PASS_LABELS:
        if jax_runs and name in jax_runs[0]["parts"]:
            lines.append(row(f"JAX {jax_runs[0]['jax']} (XLA)", name, jax_runs, "XLA's own"))
    if torch_runs:
        lines.append(row(f"PyTorch {torch_runs[0]['torch']}, {torch_runs[0]['threads']} "
                         "threads", "torch", torch_runs, "its own"))
    rounds = len(next(iter(results["runs"].values())))
    lines += ["", f"Milliseconds, median over {rounds} alternating rounds; batch 64, "
              "32x32x1, the reference's 3-block ResNet; `fused`: keras_mgr's fused "
              "BatchNorm kernel (wrap()'s default on TensorFlow), `keras`: Keras's own pass; "
              "NHWC (channels last) unless NCHW is named."]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    sys.path.insert(0, HERE)
    from machine import Machine
    from machine import markdown as machine_markdown

    for setting in FLAGS.settings:
        environment(setting)  # a malformed item stops here
    if FLAGS.torch_script and not os.path.exists(FLAGS.torch_script):
        raise FileNotFoundError(f"--torch_script does not exist. Received: {FLAGS.torch_script!r}")
    path = os.path.join(FLAGS.out, FLAGS.name)
    if FLAGS.report_only:
        with open(path + ".json") as fh:
            results = json.load(fh)
    else:
        results = measure(FLAGS.settings, FLAGS.rounds, FLAGS.repeats, FLAGS.torch_script,
                          FLAGS.torch_python, FLAGS.jax)
        os.makedirs(FLAGS.out, exist_ok=True)
        with open(path + ".json", "w") as fh:
            json.dump(results, fh, indent=1)
    first = next(iter(results["runs"].values()))[0]["machine"]
    md = report(results) + "\n".join(machine_markdown(Machine(**first))) + (
        "\n(the first setting's process)\n")
    print(md)
    with open(path + ".md", "w") as fh:
        fh.write("# The plain step's parts on this CPU, per TensorFlow setting and on JAX\n\n" + md)


def define_flags():  # at run time only: importing this module defines no flags
    flags.DEFINE_list("settings", SETTINGS, "Environments, one process each: 'NAME=VALUE ...' "
                      "('' : as keras_mgr runs when imported first).")
    flags.DEFINE_integer("rounds", 2, "Alternating rounds over the settings.")
    flags.DEFINE_integer("repeats", 10, "Timed calls per part (after 2 warm-up calls).")
    flags.DEFINE_string("torch_script", None, "The PyTorch reference script (its networks).")
    flags.DEFINE_string("torch_python", "python3", "Python of a venv with torch (CPU build).")
    flags.DEFINE_bool("jax", False, "Also time the same passes on Keras's JAX backend.")
    flags.DEFINE_string("out", "benchmarks/results", "Output folder.")
    flags.DEFINE_string("name", "cpu_breakdown", "Output file name, without extension.")
    flags.DEFINE_bool("report_only", False, "Re-render the table from the saved JSON.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
