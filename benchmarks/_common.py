"""Shared pieces of the accuracy, ablation and paper benchmarks.

Results are appended to a CSV, one row per finished run, keyed by every
setting that changes the result, so a re-run skips finished runs (resume).
Generators are cached per (dataset, ratio, seed, GAN steps) as weights.
"""

import csv
import math
import os
import sys


def _backend_from_command_line():
    """`--backend=NAME` (a flag of the scripts that time steps) must choose
    Keras's backend before Keras loads, so it is read here, on import."""
    for argument in sys.argv[1:]:
        if argument.startswith("--backend="):
            os.environ["KERAS_BACKEND"] = argument.split("=", 1)[1]


_backend_from_command_line()
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import keras_mgr  # noqa: E402, F401  (before TensorFlow loads: keras_mgr.onednn)

FIELDS = [
    "key", "dataset", "ratio", "per_class", "seed", "mode", "config", "options", "num_train",
    "epochs", "steps", "gan_steps", "backbone", "image_size", "batch_size",
    "accuracy", "seconds", "gan_seconds",
]


def define(kind, name, default, help_text):
    """Defines an absl flag, or re-defaults it if another benchmark module already did.

    Scripts that import each other (ablation imports accuracy, speed shares
    flag names with it) would otherwise raise DuplicateFlagError.
    """
    from absl import flags

    if name in flags.FLAGS:
        flags.FLAGS.set_default(name, default)
        flags.FLAGS[name].help = help_text
    else:
        getattr(flags, f"DEFINE_{kind}")(name, default, help_text)


def run_key(**settings):
    """A stable string naming one run by the settings that change its result."""
    return ";".join(f"{k}={settings[k]}" for k in sorted(settings))


def read_rows(path, key="key"):
    """The CSV's rows, the first of each `key` (two processes may finish one twice);
    all rows with `key=None`."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as fh:
        if key is None:
            return list(csv.DictReader(fh))
        rows = {}
        for row in csv.DictReader(fh):
            rows.setdefault(row[key], row)
        return list(rows.values())


def append_row(path, row, fields=FIELDS):
    """Appends one finished run (a crash later never loses it).

    A file written before a field was added keeps its own header (the new
    field is then left out of its rows).
    """
    new = not os.path.exists(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if not new:
        with open(path, newline="") as fh:
            fields = next(csv.reader(fh), None) or fields
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)
        fh.flush()


def parse_options(items):
    """`["consistency=cosine", "meta_every=5"]` -> dict of wrap() keyword arguments."""
    import ast

    options = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"options must be name=value. Received: {item!r}")
        try:
            options[name.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[name.strip()] = value  # a bare string such as cosine
    return options


def finder_optimizer(spec):
    """A finder optimizer from a CSV-friendly spec.

    `"sgd:LR"` is SGD on the raw meta-gradient; `"adam:LR:EPS"` Adam with
    that epsilon (`compile`'s "auto" is Adam with epsilon 1e-12, which turns
    any meta-gradient into steps of about LR per coordinate); `"norm:LR"`
    SGD on the meta-gradient divided by its global norm (steps of exactly LR).
    """
    import keras

    name, *args = str(spec).split(":")
    try:
        values = [float(a) for a in args]
        if name == "sgd" and len(values) == 1:
            return keras.optimizers.SGD(values[0])
        if name == "adam" and len(values) == 2:
            return keras.optimizers.Adam(values[0], epsilon=values[1])
        if name == "norm" and len(values) == 1:
            return NormalizedSGD(values[0])
    except ValueError:
        pass
    raise ValueError("finder_optimizer must be 'sgd:LR', 'adam:LR:EPS' or 'norm:LR'. "
                     f"Received: {spec!r}")


def _normalized_sgd():
    import keras

    class NormalizedSGD(keras.optimizers.SGD):
        """SGD on `g / ||g||` (global norm over all variables)."""

        def _clip_gradients(self, grads):
            present = [g for g in grads if g is not None]
            norm = keras.ops.sqrt(sum(keras.ops.sum(keras.ops.square(g)) for g in present))
            scale = 1.0 / keras.ops.maximum(norm, 1e-30)
            return [None if g is None else g * keras.ops.cast(scale, g.dtype) for g in grads]

    return NormalizedSGD


def NormalizedSGD(learning_rate):  # noqa: N802 (a class made on first use: keras imports late)
    return _normalized_sgd()(learning_rate)


def view_augmentation(strength, value_range, seed):
    """PCR's default `ViewAugmentation` with `strength` times its translate,
    brightness and contrast (translate capped below 1)."""
    from keras_mgr.augment import ViewAugmentation

    k = float(strength)
    if not 0 < k < 8:
        raise ValueError(f"view_strength must be in (0, 8). Received: {strength!r}")
    return ViewAugmentation(translate=0.125 * k, brightness=0.1 * k, contrast=min(0.1 * k, 0.9),
                            value_range=tuple(value_range), seed=seed)


def options_string(options):
    return ",".join(f"{k}={options[k]}" for k in sorted(options)) or "defaults"


def epochs_for(num_train, batch_size, steps):
    """Whole epochs giving at least `steps` optimizer steps."""
    return max(1, math.ceil(steps / math.ceil(num_train / batch_size)))


def summarize(rows, group_keys, value="accuracy"):
    """{group: (mean, std, n)} of `value` over rows (std: sample, ddof=1; 0 if n=1)."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in group_keys), []).append(float(row[value]))
    return {g: (float(np.mean(v)), sample_std(v), len(v)) for g, v in groups.items()}


def confidence_interval(values, level=0.95):
    """`(mean, low, high)`: mean ± t(level, n - 1) * sample std / sqrt(n).

    Example: values 1, 2, 3 -> mean 2, std 1, t(0.975, 2) = 4.303,
    half-width 4.303 / sqrt(3) = 2.484.
    """
    from scipy import stats

    n = len(values)
    mean = float(np.mean(values))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sample_std(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def sample_std(values):
    """Standard deviation over seeds with Bessel's correction (n - 1); 0 for one value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def cached_generator(data, dataset, ratio, seed, gan_steps, cache_dir):
    """The conditional GAN's generator trained on `data`'s training subset only.

    Trained with `keras_mgr.demo.train_generator` for `gan_steps` steps (batch
    64, rounded up to whole epochs) and cached as weights under `cache_dir`.
    Returns `(generator, seconds)`; seconds is 0.0 for a cache hit.
    """
    import time

    from keras_mgr.demo import conditional_gan, train_generator

    name = f"{_slug(dataset)}_r{ratio}_s{seed}_g{gan_steps}_i{data.image_shape[0]}"
    path = os.path.join(cache_dir, name + ".weights.h5")
    if os.path.exists(path):
        generator = conditional_gan(data, seed).generator
        generator.load_weights(path)
        generator.trainable = False
        return generator, 0.0
    epochs = epochs_for(len(data.y_train), 64, gan_steps)
    start = time.perf_counter()
    generator = train_generator(data, seed, epochs)
    seconds = time.perf_counter() - start
    os.makedirs(cache_dir, exist_ok=True)
    generator.save_weights(path + ".tmp.weights.h5")
    os.replace(path + ".tmp.weights.h5", path)
    return generator, seconds


QUALITY_FIELDS = ["dataset", "ratio", "per_class", "seed", "gan_steps", "accuracy", "fid",
                  "real_test_accuracy", "real_fid", "judge_steps"]


def record_generator_quality(path, generator, data, s, kind, size, seed, judge_steps=600):
    """Scores `generator` (trained on `data`'s subset) once per (size, seed, GAN steps).

    The judge is `keras_mgr.generators.quality.train_feature_classifier`
    trained on the dataset's whole training pool (seed 0, cached in
    `s["cache"]`), so that scores of different subsets are comparable.
    """
    from keras_mgr import datasets
    from keras_mgr.generators import generator_quality, quality

    for row in read_rows(path, key=None):
        if (row[kind] == str(size) and row["seed"] == str(seed)
                and row["gan_steps"] == str(s["gan_steps"])):
            return
    judge_path = os.path.join(
        s["cache"], f"judge_{_slug(s['dataset'])}_i{s['image_size']}_j{judge_steps}.weights.h5")
    full = datasets.load(s["dataset"], image_size=s["image_size"], data_dir=s["data_dir"])
    if os.path.exists(judge_path):
        judge = quality.feature_classifier(full.image_shape, full.num_classes)
        judge.load_weights(judge_path)
    else:
        judge = quality.train_feature_classifier(full, steps=judge_steps, seed=0)
        os.makedirs(s["cache"], exist_ok=True)
        judge.save_weights(judge_path + ".tmp.weights.h5")
        os.replace(judge_path + ".tmp.weights.h5", judge_path)
    scores = generator_quality(generator, data, classifier=judge, seed=seed)
    append_row(path, {"dataset": s["dataset"], "ratio": size if kind == "ratio" else "",
                      "per_class": size if kind == "per_class" else "", "seed": seed,
                      "gan_steps": s["gan_steps"], "judge_steps": judge_steps,
                      **{k: f"{scores[k]:.4f}" for k in ("accuracy", "fid",
                                                         "real_test_accuracy", "real_fid")}},
               fields=QUALITY_FIELDS)


def _slug(name):
    return "".join(c if c.isalnum() else "_" for c in str(name)).strip("_")[-40:]


def write_report(out, name, title, script, table):
    """Writes `<out>/<name>.md` (the title, a line saying the table is a mean
    ± std over probes and seeds of `script`, then `table`'s lines), prints it."""
    lines = [title, "", f"Mean ± std over probes and seeds (see {script}).", "", *table]
    with open(os.path.join(out, name + ".md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def log(*args):
    print(*args, flush=True)
    sys.stdout.flush()


CURVE_FIELDS = ["per_class", "seed", "step", "accuracy"]


def read_curve(path):
    """Rows of a convergence CSV (see convergence.py); [] if none yet."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def append_curve(path, rows):
    """Appends one finished curve (all its rows at once)."""
    new = not os.path.exists(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CURVE_FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
