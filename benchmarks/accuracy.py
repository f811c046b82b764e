"""Test accuracy of every mode over data ratios and seeds (paper's main claim).

For each ratio and seed: a stratified subset of the training split, a
conditional GAN trained on that subset only (cached, shared by every mode),
then a fresh `small_cnn` wrapped in each mode, trained with
`keras_mgr.demo.train_classifier` and evaluated on the fixed test split.

    python benchmarks/accuracy.py                       # full grid, digits
    python benchmarks/accuracy.py --quick               # smoke configuration
    python benchmarks/accuracy.py --dataset=flowers --image_size=64
    python benchmarks/accuracy.py --options=consistency=cosine,meta_every=5

Writes `<out>/<name>.csv` (one row per run, appended as runs finish; a
re-run skips every run already in it), `<out>/<name>.md` (mean ± std test
accuracy per mode and ratio) and `<out>/<name>.png` (accuracy vs ratio).
"""

import os
import time

import _common
from absl import app, flags

import keras_mgr.demo  # noqa: F401  (defines its flags first: see _common.define)

MODES = ["base", "gda", "metagda", "pcr", "mgr"]

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "digits", "digits, a TFDS name, or an image-folder path.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (or image folder).")
flags.DEFINE_list("ratios", ["0.1", "0.25", "0.5", "1.0"], "Training-data fractions.")
flags.DEFINE_list("per_class", [], "Training images per class (replaces --ratios), "
                  "e.g. 10,25,50,100.")
flags.DEFINE_list("size_steps", [], "Classifier steps per size (one per ratio or "
                  "per_class value; default: --steps for every size).")
flags.DEFINE_bool("generator_quality", True, "Score each generator (judge accuracy on "
                  "generated images, FID) into <name>_generators.csv.")
flags.DEFINE_integer("judge_steps", 600, "Training steps of the generator-quality judge.")
flags.DEFINE_list("compare_to", ["pcr"], "Modes, besides base, to report paired "
                  "differences to.")
_common.define("list", "seeds", ["0", "1", "2"], "Seeds (subset, generator, classifier).")
_common.define("list", "modes", MODES, "Modes to compare.")
flags.DEFINE_integer("gan_steps", 500, "GAN steps per subset (batch 64, whole epochs).")
flags.DEFINE_enum("gan_data", "subset", ["subset", "pool"], "The generator's training data: "
                  "the labelled subset, or the dataset's whole training pool (a generator "
                  "that knows more than the classifier's data; one generator, seed 0).")
flags.DEFINE_enum("backbone_init", "scratch", ["scratch", "simsiam_pool"], "The backbone's "
                  "initial weights: random, or SimSiam on the unlabelled training pool "
                  "(benchmarks/pretrain.py; one pretraining, seed 0).")
flags.DEFINE_integer("pretrain_steps", 1200, "SimSiam steps of --backbone_init=simsiam_pool.")
flags.DEFINE_integer("steps", 160, "Classifier steps per run (whole epochs).")
_common.define("integer", "batch_size", 32, "Real (and synthetic) batch size.")
_common.define("integer", "image_size", 32, "Image height and width.")
_common.define("float", "learning_rate", 1e-3, "Adam learning rate of the classifier.")
flags.DEFINE_list("options", [], "wrap() options as name=value, e.g. consistency=cosine.")
flags.DEFINE_string("config", None, "Name of this option set in the CSV (default: options).")
flags.DEFINE_string("out", "benchmarks/results", "Output folder.")
flags.DEFINE_string("name", "accuracy", "Stem of the CSV / MD / PNG files.")
flags.DEFINE_string("cache", "runs/generators", "Folder of cached generator weights.")
flags.DEFINE_bool("quick", False, "Smoke configuration: ratios 0.1,0.5; seed 0; "
                  "60 GAN steps; 40 classifier steps; all modes (minutes on 2 cores).")

flags.DEFINE_bool("report_only", False, "Write the table and plot from the CSV; run nothing.")

QUICK = {"ratios": ["0.1", "0.5"], "seeds": ["0"], "gan_steps": 60, "steps": 40,
         "name": "accuracy_quick"}


def settings_from_flags():
    """The run grid as a dict; `--quick` overrides flags the user did not set."""
    s = {name: FLAGS[name].value for name in (
        "dataset", "data_dir", "ratios", "per_class", "size_steps", "seeds", "modes",
        "gan_steps", "steps", "batch_size", "image_size", "learning_rate", "options",
        "config", "out", "name", "cache", "generator_quality", "judge_steps", "gan_data",
        "backbone_init", "pretrain_steps")}
    if FLAGS.quick:
        for name, value in QUICK.items():
            if not FLAGS[name].present:
                s[name] = value
    return s


def sizes_of(s):
    """The grid's training-set sizes: `[("per_class", 10), ...]` or `[("ratio", 0.1), ...]`,
    each with its step budget (`s["size_steps"]`, one per size, else `s["steps"]`)."""
    per_class = s.get("per_class") or []
    sizes = ([("per_class", int(v)) for v in per_class] if per_class
             else [("ratio", float(r)) for r in s["ratios"]])
    steps = [int(v) for v in s.get("size_steps") or []] or [s["steps"]] * len(sizes)
    if len(steps) != len(sizes):
        raise ValueError(f"size_steps needs one value per size ({len(sizes)}). "
                         f"Received: size_steps={s['size_steps']}")
    return [(kind, value, n) for (kind, value), n in zip(sizes, steps)]


def size_label(row):
    """Column label of a CSV row's training-set size: "10/class" or "10% data"."""
    if row.get("per_class"):
        return f"{int(row['per_class'])}/class"
    return f"{float(row['ratio']):.0%} data"


def run_grid(s, variants=None, backbone="small_cnn", train=None, gan_image_size=None):
    """Runs every (size, seed, variant, mode) not yet in the CSV; returns all rows.

    Args:
        s: settings (see `settings_from_flags`).
        variants: list of `(config_name, mode, wrap_options)`; default: each
            of `s["modes"]` with `s["options"]`.
        backbone: backbone name recorded in the CSV and the run key.
        train: `train(data, generator, mode, seed, epochs, batch_size,
            learning_rate, **wrap_options) -> test accuracy`; default
            `keras_mgr.demo.train_classifier` (a fresh `small_cnn`).
        gan_image_size: train the generator on the same subset loaded at this
            size (default: `s["image_size"]`); the classifier then needs
            `resize_synthetic=True`.
    """
    from keras_mgr import datasets
    from keras_mgr.demo import train_classifier

    train = train or train_classifier
    gan_image_size = gan_image_size or s["image_size"]
    regime = {}  # settings outside the defaults, in the run key
    if s.get("gan_data", "subset") != "subset":
        regime["gan_data"] = s["gan_data"]
    if s.get("backbone_init", "scratch") != "scratch":
        regime["backbone_init"] = f"{s['backbone_init']}_{s['pretrain_steps']}"
        train = _pretrained(train, s)

    options = _common.parse_options(s["options"])
    if variants is None:
        config = s["config"] or _common.options_string(options)
        variants = [(config, mode, options) for mode in s["modes"]]
    path = os.path.join(s["out"], s["name"] + ".csv")
    done = {row["key"] for row in _common.read_rows(path)}
    for kind, size, steps in sizes_of(s):
        subset = {kind: size}  # ratio= or per_class=
        for seed in map(int, s["seeds"]):
            todo = []
            for config, mode, opts in variants:
                extra = {} if gan_image_size == s["image_size"] else {
                    "gan_image_size": gan_image_size}
                key = _common.run_key(
                    dataset=s["dataset"], seed=seed, mode=mode,
                    options=_common.options_string(opts), steps=steps,
                    gan_steps=s["gan_steps"], batch_size=s["batch_size"],
                    image_size=s["image_size"], learning_rate=s["learning_rate"],
                    backbone=backbone, **subset, **extra, **regime)
                if key not in done:
                    todo.append((key, config, mode, opts))
            if not todo:
                continue
            data = datasets.load(s["dataset"], seed=seed, image_size=s["image_size"],
                                 data_dir=s["data_dir"], **subset)
            if regime.get("gan_data") == "pool":
                gan_data = datasets.load(s["dataset"], image_size=gan_image_size,
                                         data_dir=s["data_dir"])
                generator, gan_seconds = _common.cached_generator(
                    gan_data, s["dataset"], "pool", 0, s["gan_steps"], s["cache"])
            else:
                gan_data = data if gan_image_size == s["image_size"] else datasets.load(
                    s["dataset"], seed=seed, image_size=gan_image_size,
                    data_dir=s["data_dir"], **subset)
                generator, gan_seconds = _common.cached_generator(
                    gan_data, s["dataset"], size if kind == "ratio" else f"{size}pc", seed,
                    s["gan_steps"], s["cache"])
            if s.get("generator_quality") and gan_image_size == s["image_size"]:
                _common.record_generator_quality(
                    os.path.join(s["out"], s["name"] + "_generators.csv"), generator, data,
                    s, kind, size, seed, s.get("judge_steps", 600))
            epochs = _common.epochs_for(len(data.y_train), s["batch_size"], steps)
            _common.log(f"{kind} {size} seed {seed}: {len(data.y_train)} train images, "
                        f"generator {gan_seconds:.0f} s, {epochs} classifier epochs")
            for key, config, mode, opts in todo:
                start = time.perf_counter()
                run_data, run_epochs, run_opts = holdout_split(data, seed, epochs, steps, s,
                                                               opts)
                accuracy = train(run_data, generator, mode, seed, run_epochs,
                                 s["batch_size"], s["learning_rate"], **run_opts)
                row = {
                    "key": key, "dataset": s["dataset"],
                    "ratio": size if kind == "ratio" else "",
                    "per_class": size if kind == "per_class" else "", "seed": seed,
                    "mode": mode, "config": config,
                    "options": _common.options_string(opts),
                    "num_train": len(run_data.y_train), "epochs": run_epochs,
                    "steps": steps, "gan_steps": s["gan_steps"],
                    "backbone": backbone, "image_size": s["image_size"],
                    "batch_size": s["batch_size"], "accuracy": f"{accuracy:.4f}",
                    "seconds": f"{time.perf_counter() - start:.1f}",
                    "gan_seconds": f"{gan_seconds:.1f}",
                }
                _common.append_row(path, row)
                gan_seconds = 0.0
                _common.log(f"  {config:24s} {mode:8s} {accuracy:.4f} ({row['seconds']} s)")
    return _common.read_rows(path)


def _pretrained(train, s):
    """`train` with the backbone SimSiam-pretrained on the unlabelled pool."""
    import pretrain

    backbone, seconds = pretrain.pretrained_backbone(
        s["dataset"], s["image_size"], s["pretrain_steps"], 0, s["cache"],
        data_dir=s["data_dir"])
    if seconds:
        _common.log(f"SimSiam pretraining: {seconds:.0f} s")

    def train_pretrained(*args, **kwargs):
        return train(*args, backbone=backbone, **kwargs)

    return train_pretrained


def holdout_split(data, seed, epochs, steps, s, opts):
    """Applies the benchmark-only options `meta_validation_fraction=f`,
    `drop_fraction=f`, `finder_optimizer=spec` (see
    `_common.finder_optimizer`; passed to `compile`) and `view_strength=k`
    (PCR's `ViewAugmentation` with k times the default translate, brightness
    and contrast).

    Both take the same stratified fraction `f` out of the training subset's
    cross-entropy (the generator was still trained on the whole subset); the
    first passes it to wrap() as `meta_validation_data`, the second discards
    it (a control: the same smaller training set, validation from the
    buffer). Returns `(data, epochs, options)`, epochs recomputed so the
    step budget stays `steps`.
    """
    opts = dict(opts)
    if "finder_optimizer" in opts:
        opts["finder_optimizer"] = _common.finder_optimizer(opts["finder_optimizer"])
    if "view_strength" in opts:
        # seed + 1: the stream wrap()'s default views use.
        opts["augmentation"] = _common.view_augmentation(opts.pop("view_strength"),
                                                         data.value_range, seed + 1)
    fraction = opts.pop("meta_validation_fraction", None)
    dropped = opts.pop("drop_fraction", None)
    if fraction and dropped:
        raise ValueError("Use meta_validation_fraction or drop_fraction, not both. "
                         f"Received: {fraction}, {dropped}")
    if not (fraction or dropped):
        return data, epochs, opts
    run_data, held = data.hold_out(fraction or dropped, seed)
    if fraction:
        opts["meta_validation_data"] = held
    return run_data, _common.epochs_for(len(run_data.y_train), s["batch_size"], steps), opts


def write_report(rows, out, name, title="Test accuracy", reference=None, also=None,
                 quality_rows=None, gan_data="subset"):
    """Markdown tables and a PNG plot of a grid's rows.

    Tables: mean ± sample std per mode and size; paired per-seed differences
    (mean, 95% t-interval) to `reference`, a `(config, mode)` (default base),
    and to each `(config, mode)` in `also` (e.g. pcr); the generators'
    quality per size when `quality_rows` (see `_common.record_generator_quality`)
    are given.
    """
    if not rows:
        raise ValueError(f"No finished runs to report in {os.path.join(out, name)}.csv")
    for row in rows:
        row["size"] = size_label(row)
    stats = _common.summarize(rows, ["config", "mode", "size"])
    sizes = sorted({r["size"] for r in rows}, key=_size_value)
    lines_ = sorted({(c, m) for c, m, _ in stats},
                    key=lambda cm: (cm[0], MODES.index(cm[1]) if cm[1] in MODES else 99))
    configs = {c for c, _ in lines_}
    table = [f"# {title}", "",
             "Test accuracy (%), mean ± sample std (n - 1) over seeds (n = number of "
             "seeds).", "", _header(sizes)]
    for config, mode in lines_:
        cells = []
        for size in sizes:
            hit = stats.get((config, mode, size))
            cells.append(f"{100 * hit[0]:.2f} ± {100 * hit[1]:.2f} (n={hit[2]})"
                         if hit else "-")
        table.append(f"| {_label(config, mode, len(configs))} | " + " | ".join(cells) + " |")
    if reference is None:
        reference = next(((c, m) for c, m in lines_ if m == "base"), None)
    for ref in [reference] + list(also or []):
        table += _paired_differences(rows, sizes, lines_, len(configs), ref)
    if quality_rows:
        table += _quality_table(quality_rows, sizes, gan_data)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name + ".md"), "w") as fh:
        fh.write("\n".join(table) + "\n")
    _plot(stats, sizes, lines_, len(configs), os.path.join(out, name + ".png"), title)
    return "\n".join(table)


def _size_value(label):
    number = float(label.split("/")[0].split("%")[0])
    return number


def _header(sizes, first="mode"):
    return f"| {first} | " + " | ".join(sizes) + " |\n|---|" + "---|" * len(sizes)


def _label(config, mode, n_configs):
    return mode if n_configs == 1 else f"{mode} [{config}]"


def _paired_differences(rows, sizes, lines_, n_configs, reference):
    """Per-seed difference to `reference` `(config, mode)`: mean [95% CI].

    Seeds share the subset and generator across modes, so the paired
    difference removes the subset's difficulty from the comparison. The
    interval is mean ± t(0.975, n - 1) * std / sqrt(n) over seeds.
    """
    if reference not in lines_:
        return []
    by = {(r["config"], r["mode"], r["size"], r["seed"]): float(r["accuracy"]) for r in rows}
    ref_config, ref_mode = reference
    out = ["", f"Paired difference to {_label(ref_config, ref_mode, n_configs)} (points): "
           "mean [95% confidence interval over seeds present in both] (n):", "",
           _header(sizes)]
    for config, mode in lines_:
        if (config, mode) == reference:
            continue
        cells = []
        for size in sizes:
            d = [100 * (v - by[(ref_config, ref_mode, size, seed)])
                 for (c, m, ss, seed), v in by.items()
                 if c == config and m == mode and ss == size
                 and (ref_config, ref_mode, size, seed) in by]
            if not d:
                cells.append("-")
                continue
            mean, low, high = _common.confidence_interval(d)
            cells.append(f"{mean:+.2f} [{low:+.2f}, {high:+.2f}] (n={len(d)})"
                         if len(d) > 1 else f"{mean:+.2f} (n=1)")
        out.append(f"| {_label(config, mode, n_configs)} | " + " | ".join(cells) + " |")
    return out


def _quality_table(quality_rows, sizes, gan_data="subset"):
    """Generated-sample accuracy and FID per size, mean ± std over seeds."""
    which = ("one per size and seed, trained on that subset only" if gan_data == "subset"
             else "one, trained on the whole training pool, scored once per size and seed")
    out = ["", f"Generators ({which}), scored by "
           "a fixed judge CNN trained on the whole training pool: accuracy of the judge on "
           "generated images against the requested class (%), and FID in the judge's "
           "features against the real test split (lower is better):", "",
           _header(sizes, "generators")]
    for row in quality_rows:
        row["size"] = size_label(row)
    steps = sorted({row["gan_steps"] for row in quality_rows}, key=int)
    for field, scale, label in (("accuracy", 100, "generated-sample accuracy"),
                                ("fid", 1, "FID vs real test"),
                                ("real_test_accuracy", 100, "judge on real test"),
                                ("real_fid", 1, "FID real train vs test")):
        stats = _common.summarize(quality_rows, ["size", "gan_steps"], value=field)
        for gan_steps in steps:
            cells = [f"{scale * stats[key][0]:.2f} ± {scale * stats[key][1]:.2f} "
                     f"(n={stats[key][2]})" if (key := (size, gan_steps)) in stats else "-"
                     for size in sizes]
            name = label if len(steps) == 1 else f"{label}, {gan_steps} GAN steps"
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def _plot(stats, sizes, lines_, n_configs, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for config, mode in lines_:
        points = [(_size_value(size), stats[(config, mode, size)]) for size in sizes
                  if (config, mode, size) in stats]
        ax.errorbar([p[0] for p in points], [100 * p[1][0] for p in points],
                    yerr=[100 * p[1][1] for p in points], marker="o", capsize=3,
                    label=_label(config, mode, n_configs))
    ax.set_xscale("log")
    ax.set_xlabel("images per class" if "/class" in sizes[0] else "training data (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv):
    del argv
    s = settings_from_flags()
    rows = _common.read_rows(os.path.join(s["out"], s["name"] + ".csv")) if (
        FLAGS.report_only) else run_grid(s)
    budget = ", ".join(f"{n} at {v}{'/class' if k == 'per_class' else ''}"
                       for k, v, n in sizes_of(s))
    config = s["config"] or _common.options_string(_common.parse_options(s["options"]))
    print(write_report(
        rows, s["out"], s["name"],
        f"Test accuracy on {s['dataset']} (classifier steps: {budget}; "
        f"{s['gan_steps']} GAN steps)",
        also=[(config, m) for m in FLAGS.compare_to],
        quality_rows=_common.read_rows(os.path.join(s["out"], s["name"] + "_generators.csv"),
                                       key=None), gan_data=s["gan_data"]))


if __name__ == "__main__":
    app.run(main)
