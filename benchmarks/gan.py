"""Train the built-in conditional GAN on a fraction of digits; score it.

The GAN sees only the stratified `--ratio` subset of the digits training
split. Quality is measured offline by `generator_quality`: a small CNN judge
trained on the real training subset (`--judge=subset`, the small-data
setting) or on the whole digits training split (`--judge=full`, a fixed judge
that makes runs at different ratios comparable; it never sees test images);
`--judge=both` (default) reports both.

    python benchmarks/gan.py --ratio=0.1 --steps=1000 --out=runs/gan

Writes `<out>/gan_r<ratio>_s<seed>.{json,md,png}` (the PNG is a grid of EMA
samples, one row per class).
"""

import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from keras_mgr import datasets
from keras_mgr.generators import ConditionalGAN, generator_quality, quality

flags.DEFINE_float("ratio", 0.1, "Fraction of the digits training split.")
flags.DEFINE_integer("seed", 0, "Seed of the subset, weights and latents.")
flags.DEFINE_integer("steps", 1000, "GAN steps (rounded up to whole epochs).")
flags.DEFINE_integer("epochs", None, "GAN epochs; overrides --steps.")
flags.DEFINE_integer("batch_size", 64, "GAN batch size.")
flags.DEFINE_integer("image_size", 32, "Image height and width.")
flags.DEFINE_integer("generator_filters", 16, "Generator base filters.")
flags.DEFINE_integer("discriminator_filters", 16, "Discriminator base filters.")
flags.DEFINE_enum(
    "judge", "both", ["subset", "full", "both"], "Judge's training data."
)
flags.DEFINE_integer("samples_per_class", 100, "Generated images per class.")
flags.DEFINE_string("out", "runs/gan", "Output folder.")


def main(_):
    f = flags.FLAGS
    keras.utils.set_random_seed(f.seed)
    data = datasets.load("digits", ratio=f.ratio, seed=f.seed, image_size=f.image_size)
    steps_per_epoch = math.ceil(len(data.y_train) / f.batch_size)
    epochs = f.epochs or max(1, math.ceil(f.steps / steps_per_epoch))
    print(f"{data}; {epochs} epochs of {steps_per_epoch} steps")

    gan = ConditionalGAN(
        num_classes=data.num_classes,
        image_shape=data.image_shape,
        generator_filters=f.generator_filters,
        discriminator_filters=f.discriminator_filters,
        seed=f.seed,
    )
    gan.compile()
    train = data.as_dataset("train", f.batch_size, shuffle=True, seed=f.seed)
    start = time.perf_counter()
    history = gan.fit(train, epochs=epochs, verbose=2 if epochs <= 50 else 0)
    gan_seconds = time.perf_counter() - start

    start = time.perf_counter()
    judges = ["subset", "full"] if f.judge == "both" else [f.judge]
    scores = {}
    for name in judges:
        if name == "full" and f.ratio == 1.0 and "subset_judge" in scores:
            scores["full_judge"] = scores["subset_judge"]  # the same judge
            continue
        judge_data = data if name == "subset" else datasets.load(
            "digits", ratio=1.0, image_size=f.image_size
        )
        judge = quality.train_feature_classifier(judge_data, seed=f.seed)
        scores[f"{name}_judge"] = generator_quality(
            gan.generator, data, classifier=judge,
            samples_per_class=f.samples_per_class, seed=f.seed,
        )
    judge_seconds = time.perf_counter() - start

    result = {
        "ratio": f.ratio,
        "seed": f.seed,
        "num_train": len(data.y_train),
        "epochs": epochs,
        "steps": epochs * steps_per_epoch,
        "gan_seconds": round(gan_seconds, 1),
        "seconds_per_step": round(gan_seconds / (epochs * steps_per_epoch), 4),
        "judge_seconds": round(judge_seconds, 1),
        "final_d_loss": float(history.history["d_loss"][-1]),
        "final_g_loss": float(history.history["g_loss"][-1]),
        "generator_filters": f.generator_filters,
        "discriminator_filters": f.discriminator_filters,
        "scores": scores,
    }
    os.makedirs(f.out, exist_ok=True)
    stem = os.path.join(f.out, f"gan_r{f.ratio}_s{f.seed}")
    with open(stem + ".json", "w") as fh:
        json.dump(result, fh, indent=2)
    with open(stem + ".md", "w") as fh:
        fh.write(_markdown(result, data.class_names))
    _write_grid(gan, data, stem + ".png")
    print(_markdown(result, data.class_names))
    print(f"wrote {stem}.json, .md, .png")


def _markdown(r, class_names):
    lines = [
        f"# Conditional GAN on digits, ratio={r['ratio']} ({r['num_train']} "
        f"training images), seed={r['seed']}",
        "",
        f"- GAN training: {r['gan_seconds']} s wall, {r['steps']} steps "
        f"({r['epochs']} epochs), {r['seconds_per_step']} s/step; final "
        f"d_loss {r['final_d_loss']:.3f}, g_loss {r['final_g_loss']:.3f}",
    ]
    for name, s in r["scores"].items():
        lines += [
            "",
            f"## Judge trained on {name.split('_')[0]} training data",
            "",
            f"- judge's real test accuracy: {s['real_test_accuracy']:.3f}",
            f"- generated-image accuracy: {s['accuracy']:.3f} "
            f"({s['samples_per_class']} samples per class)",
            f"- FID (judge features) vs real test: {s['fid']:.3f}; vs real "
            f"train: {s['fid_train']:.3f}; real train vs real test: "
            f"{s['real_fid']:.3f}",
            "",
            "| class | generated acc | real test acc |",
            "|---|---|---|",
        ]
        for cls, gen, real in zip(
            class_names, s["per_class_accuracy"], s["real_per_class_accuracy"]
        ):
            lines.append(f"| {cls} | {gen:.2f} | {real:.2f} |")
    return "\n".join(lines) + "\n"


def _write_grid(gan, data, path, per_class=10):
    labels = np.repeat(np.arange(data.num_classes), per_class)
    x = gan.sample(labels, seed=0)
    low, high = data.value_range
    x = np.clip((x - low) / (high - low) * 255.0, 0, 255).astype("uint8")
    n, h, w, c = x.shape
    grid = x.reshape(data.num_classes, per_class, h, w, c).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(data.num_classes * h, per_class * w, c)
    tf.io.write_file(path, tf.io.encode_png(grid))


if __name__ == "__main__":
    app.run(main)
