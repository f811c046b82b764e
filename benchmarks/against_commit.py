"""keras_mgr now against keras_mgr at an earlier commit, interleaved in one process.

    python benchmarks/against_commit.py --commit=42592eb \
        --then=base,mgr:5,mgr --now=base,mgr:5,mgr:5/mb4,mgr,mgr/mb4
    python benchmarks/against_commit.py --commit=42592eb --networks=resnet18 --image_size=64 \
        --channels=3 --steps=4 --rounds=3 --then=base,mgr:5,mgr --now=base,mgr:5/mb4,mgr/mb4

"Step time no worse than 1.1x today's" compares against the code of that day,
on this machine, now: two processes run minutes apart differ by 10-30% here.
The commit's `keras_mgr` package is extracted with `git archive` into a
temporary folder, renamed `keras_mgr_then` (its imports rewritten) and
imported beside the working tree's; both sides train the same backbone
builder, generator, data and batches, and their configurations are
interleaved in rounds as in `speed.py` (the median over rounds of each
round's mean step time; peak step memory from TensorFlow's allocator).

Config syntax: `speed.py`'s. A `then` config may use `mode`, `:k` and `@s`
only: the older `wrap()` is given nothing it may not know, so it runs that
commit's defaults for everything else. Writes `<out>/against_<commit>*.md`.
"""

import importlib
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Allocator statistics (peak memory) need the BFC allocator, chosen before TensorFlow loads.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import speed  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_mgr  # noqa: E402
from keras_mgr.backbones import resnet18, small_cnn  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("commit", None, "The earlier commit (any git revision).")
flags.DEFINE_list("then", ["base", "mgr:5", "mgr"], "Configs run by the commit's keras_mgr.")
flags.DEFINE_list("now", ["base", "mgr:5", "mgr:5/mb4", "mgr", "mgr/mb4"],
                  "Configs run by the working tree's keras_mgr.")
_common.define("integer", "batch_size", 32, "Real batch size (and synthetic).")
_common.define("integer", "image_size", 32, "Image height and width.")
_common.define("integer", "channels", 1, "Image channels.")
_common.define("integer", "steps", 10, "Steps per round.")
_common.define("integer", "rounds", 5, "Rounds over all configurations.")
_common.define("string", "out", "benchmarks/results", "Output folder ('' to only print).")

PACKAGE = "keras_mgr_then"


def extract(commit, folder, repository=None):
    """The commit's `keras_mgr` as the package `keras_mgr_then` under `folder`
    (`repository`: a git checkout; default: the one holding this file)."""
    root = repository or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    archive = subprocess.run(["git", "archive", commit, "keras_mgr"], capture_output=True,
                             cwd=root)
    if archive.returncode:
        raise ValueError(f"git archive failed for commit {commit!r}: "
                         f"{archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
    os.rename(os.path.join(folder, "keras_mgr"), os.path.join(folder, PACKAGE))
    for path, _, files in os.walk(os.path.join(folder, PACKAGE)):
        for name in files:
            if name.endswith(".py"):
                file = os.path.join(path, name)
                with open(file) as fh:
                    text = fh.read()
                with open(file, "w") as fh:
                    fh.write(text.replace("keras_mgr", PACKAGE))
    sys.path.insert(0, folder)
    return importlib.import_module(PACKAGE)


def build(package, side, config, image_shape, generator, batch_size, backbone):
    mode, every, pool, sbs = speed.parse_config(config)
    if side == "then" and (pool or "/" in config):
        raise ValueError(f"A 'then' config takes mode, :k and @s only. Received: {config!r}")
    keras.utils.set_random_seed(0)
    options = {} if side == "then" else speed.config_options(config)
    if mode != "base":
        options.update(meta_every=every, synthetic_batch_size=sbs or batch_size,
                       meta_batch_size=batch_size)
    model = package.wrap({"resnet18": resnet18}.get(backbone, small_cnn)(image_shape),
                         generator, mode=mode, seed=0, **options)
    model.compile()
    return model


def measure(then, now, commit, image_shape, steps, rounds, batch_size, backbone="small_cnn",
            repository=None):
    """`{(side, config): (seconds per step, peak step memory in bytes)}`; the
    models as a second result."""
    with tempfile.TemporaryDirectory() as folder:
        packages = {"then": extract(commit, folder, repository), "now": keras_mgr}
        generator = speed.make_generator("small_cnn", image_shape)
        models = {(side, c): build(packages[side], side, c, image_shape, generator,
                                   batch_size, backbone)
                  for side, configs in (("then", then), ("now", now)) for c in configs}
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (batch_size * steps,) + image_shape).astype("float32")
        y = rng.integers(0, speed.NUM_CLASSES, batch_size * steps)
        for model in models.values():  # tracing, a meta step and a plain step
            model.fit(x[: 3 * batch_size], y[: 3 * batch_size], batch_size=batch_size,
                      verbose=0, shuffle=False)
        times = {key: [] for key in models}
        memory = dict.fromkeys(models, 0)
        device, _ = speed._memory()
        for _ in range(rounds):
            for key, model in models.items():
                timer = speed.StepTimer()
                tf.config.experimental.reset_memory_stats(device)
                _, before = speed._memory()
                model.fit(x, y, batch_size=batch_size, verbose=0, shuffle=False,
                          callbacks=[timer])
                _, after = speed._memory()
                memory[key] = max(memory[key], after["peak"] - before["current"])
                times[key].append(float(np.mean(timer.times)))
    return {key: (float(np.median(times[key])), memory[key]) for key in models}, models


def report(results, commit, flags_line):
    """Markdown: each config's time against the commit's same mode and
    schedule, and its memory against the same side's base."""
    def schedule(config):
        return config.partition("/")[0]

    then = {schedule(c): s for (side, c), (s, _) in results.items() if side == "then"}
    lines = [f"# keras_mgr now against commit {commit}", "", f"`{flags_line}`", "",
             "| code | config | ms/step | x the commit's same mode and schedule | "
             "peak step memory (MiB) | memory x base (same code) |", "|---|---|---|---|---|---|"]
    for (side, config), (seconds, mem) in results.items():
        base = results.get((side, "base"), (None, 0))[1]
        ratio = then.get(schedule(config))
        lines.append(
            f"| {'commit' if side == 'then' else 'now'} | {config} | {1000 * seconds:.1f} | "
            f"{f'{seconds / ratio:.2f}' if ratio else '-'} | {mem / 2**20:.1f} | "
            f"{f'{mem / base:.2f}' if base else '-'} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    if not FLAGS.commit:
        raise app.UsageError("--commit is required (the revision to compare against).")
    if FLAGS.networks not in ("small_cnn", "resnet18"):
        raise app.UsageError(f"--networks: small_cnn or resnet18. Received: {FLAGS.networks!r}")
    shape = (FLAGS.image_size, FLAGS.image_size, FLAGS.channels)
    results, _ = measure(FLAGS.then, FLAGS.now, FLAGS.commit, shape, FLAGS.steps, FLAGS.rounds,
                      FLAGS.batch_size, FLAGS.networks)
    flags_line = " ".join(sys.argv[1:])
    md = report(results, FLAGS.commit, flags_line)
    print(md)
    if FLAGS.out:
        os.makedirs(FLAGS.out, exist_ok=True)
        stem = f"against_{FLAGS.commit}_{FLAGS.networks}"
        with open(os.path.join(FLAGS.out, stem + ".md"), "w") as fh:
            fh.write(md)


if __name__ == "__main__":
    app.run(main)
