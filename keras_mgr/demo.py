"""End-to-end demo on the embedded digits: `python -m keras_mgr.demo`.

Takes a stratified tenth of scikit-learn's handwritten digits (shipped with
scikit-learn, no download), trains the built-in conditional GAN on that
subset only, then trains the same backbone with each mode (same seed, same
data) and prints test accuracy. Every phase says how long it should take and
prints a progress line with the time left every few epochs.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # grappler logs harmless errors

import keras_mgr  # noqa: E402  (first: it chooses TensorFlow's CPU kernels before Keras loads)

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from keras_mgr import datasets, generators  # noqa: E402
from keras_mgr.backbones import small_cnn  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """The demo's command-line flags (defined when run, not on import, so that
    importing its training helpers never clashes with another script's flags)."""
    flags.DEFINE_float("ratio", 0.1, "Fraction of the digits training split used.")
    flags.DEFINE_integer("progress_lines", 6, "Progress lines per training phase (0: none).")
    flags.DEFINE_list("seeds", ["0"], "Seeds (subset, generator and classifier).")
    flags.DEFINE_list("modes", ["base", "mgr"], f"Modes to compare, from {keras_mgr.MODES}.")
    flags.DEFINE_integer("gan_epochs", 300, "Epochs of GAN training on the subset.")
    flags.DEFINE_integer("epochs", 40, "Classifier epochs.")
    flags.DEFINE_integer("batch_size", 32, "Real (and synthetic) batch size.")
    flags.DEFINE_integer("image_size", 32, "Digits are upsampled from 8x8 to this size.")
    flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate of the classifier.")


def conditional_gan(data, seed):
    """The (untrained) built-in conditional GAN for `data`'s classes and image shape."""
    return generators.ConditionalGAN(num_classes=data.num_classes,
                                     image_shape=data.image_shape, seed=seed)


def train_generator(data, seed, epochs, verbose=0, callbacks=None):
    """Trains the built-in conditional GAN on `data`'s training subset only."""
    keras.utils.set_random_seed(seed)
    gan = conditional_gan(data, seed)
    gan.compile()
    gan.fit(data.as_dataset("train", batch_size=64, shuffle=True, seed=seed),
            epochs=epochs, verbose=verbose, shuffle=False,  # the dataset shuffles
            callbacks=callbacks)
    generator = gan.generator
    generator.trainable = False
    return generator


def build_classifier(data, generator, mode, seed, learning_rate, backbone=small_cnn,
                     finder_optimizer="auto", jit_compile="auto", **wrap_kwargs):
    """Wraps a fresh backbone and compiles it with Adam: the benchmarks' recipe.

    Args:
        backbone: `image_shape -> keras.Model`, called after seeding so that
            its initial weights depend on `seed` only (default `small_cnn`).
        finder_optimizer, jit_compile: passed to `compile`.
        **wrap_kwargs: passed to `keras_mgr.wrap`.
    """
    keras.utils.set_random_seed(seed)
    model = keras_mgr.wrap(backbone(data.image_shape), generator, mode=mode, seed=seed,
                           **wrap_kwargs)
    # wrap() leaves global random state alone; re-seeding here keeps the
    # shuffling stream every recorded benchmark result used.
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  finder_optimizer=finder_optimizer, jit_compile=jit_compile)
    return model


def train_classifier(data, generator, mode, seed, epochs, batch_size, learning_rate,
                     verbose=0, finder_optimizer="auto", callbacks=None, **build_kwargs):
    """Trains `build_classifier(...)` on `data`'s training split; returns its test
    accuracy. `build_kwargs`: `backbone`, `jit_compile` and `wrap()` options."""
    model = build_classifier(data, generator, mode, seed, learning_rate,
                             finder_optimizer=finder_optimizer, **build_kwargs)
    model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs,
              verbose=verbose, callbacks=callbacks)
    return model.evaluate(data.x_test, data.y_test, batch_size=batch_size, verbose=0,
                          return_dict=True)["accuracy"]


# Seconds per step on an idle 2-core CPU, compilation included: GAN, base and
# mgr measured by `make demo` (300 GAN epochs: 129 s; 40 classifier epochs:
# base 21 s, mgr 57 s); gda, metagda and pcr scaled from benchmarks/speed.py's
# ratios to base. For the duration each phase announces (TensorFlow's).
SECONDS_PER_STEP = {"gan": 0.215, "base": 0.13, "gda": 0.2, "metagda": 0.5,
                    "pcr": 0.3, "mgr": 0.36}


class Progress(keras.callbacks.Callback):
    """Prints `lines` progress lines over `epochs` epochs: epoch, the logged
    losses, elapsed time and the time left at the current pace."""

    def __init__(self, epochs, lines=6, keys=("loss",)):
        super().__init__()
        self.epochs, self.keys = epochs, keys
        self.every = max(1, -(-epochs // lines)) if lines else 0

    def on_train_begin(self, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if not self.every or (done % self.every and done != self.epochs):
            return
        elapsed = time.time() - self.start
        values = "  ".join(f"{k} {logs[k]:.3f}" for k in self.keys if k in (logs or {}))
        print(f"    epoch {done:>4}/{self.epochs}  {values}  {_duration(elapsed)} elapsed, "
              f"{_duration(elapsed / done * (self.epochs - done))} left", flush=True)


def _duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _steps(num_images, batch_size, epochs):
    return -(-num_images // batch_size) * epochs


def results_table(results, num_test):
    """The closing table: per-seed accuracies, and mean ± sample std (n - 1) and
    the paired difference to base only when there are at least two seeds."""
    seeds = len(next(iter(results.values())))
    lines = [f"Test accuracy (%) on {num_test} test images (one image = "
             f"{100 / num_test:.2f} points):"]
    for mode, accuracies in results.items():
        cells = "  ".join(f"{100 * a:6.2f}" for a in accuracies)
        line = f"  {mode:8s} {cells}"
        if seeds > 1:
            line += (f"   mean {100 * np.mean(accuracies):.2f} ± "
                     f"{100 * np.std(accuracies, ddof=1):.2f}")
            base = results.get("base")  # the reference row, when it ran
            if base is not None and accuracies is not base:
                diff = 100 * (np.array(accuracies) - np.array(base))
                line += f"   vs base {np.mean(diff):+.2f} ± {np.std(diff, ddof=1):.2f}"
        lines.append(line)
    if seeds == 1:
        lines.append("  One seed: no spread. `--seeds=0,1,2` gives mean ± sample std and "
                     "the paired difference to base.")
    return "\n".join(lines)


def main(argv):
    del argv
    modes, seeds = FLAGS.modes, [int(s) for s in FLAGS.seeds]
    data = datasets.load("digits", ratio=FLAGS.ratio, seed=seeds[0],
                         image_size=FLAGS.image_size)
    n = len(data.y_train)
    gan_seconds = SECONDS_PER_STEP["gan"] * _steps(n, 64, FLAGS.gan_epochs)
    per_mode = {m: SECONDS_PER_STEP.get(m, 0.2) * _steps(n, FLAGS.batch_size, FLAGS.epochs)
                for m in modes}
    total = len(seeds) * (gan_seconds + sum(per_mode.values()))
    where = "on an idle 2-core CPU"
    if keras.backend.backend() != "tensorflow":  # the times above are TensorFlow's
        where = (f"with TensorFlow {where}; the {keras.backend.backend()} backend is slower "
                 "on a CPU (docs/benchmarks.md)")
    print(f"keras_mgr demo: digits, {FLAGS.ratio:.0%} subset, modes {', '.join(modes)}, "
          f"seeds {','.join(map(str, seeds))}.\nExpected: about {_duration(total)} {where} "
          "(longer on a busy one; each phase prints the time left).", flush=True)
    results = {mode: [] for mode in modes}
    for seed in seeds:
        data = datasets.load("digits", ratio=FLAGS.ratio, seed=seed,
                             image_size=FLAGS.image_size)
        print(f"\nseed {seed}: {len(data.y_train)} training images ({FLAGS.ratio:.0%} of "
              f"digits), {len(data.y_test)} test images", flush=True)
        print(f"  generator: {FLAGS.gan_epochs} GAN epochs on the training images only "
              f"(about {_duration(gan_seconds)})", flush=True)
        start = time.time()
        generator = train_generator(data, seed, FLAGS.gan_epochs, callbacks=[
            Progress(FLAGS.gan_epochs, FLAGS.progress_lines, ("d_loss", "g_loss"))])
        print(f"  generator done in {_duration(time.time() - start)}", flush=True)
        for mode in modes:
            print(f"  {mode}: {FLAGS.epochs} epochs (about {_duration(per_mode[mode])})",
                  flush=True)
            start = time.time()
            accuracy = train_classifier(
                data, generator, mode, seed, FLAGS.epochs, FLAGS.batch_size,
                FLAGS.learning_rate, callbacks=[Progress(
                    FLAGS.epochs, FLAGS.progress_lines, ("loss", "accuracy"))])
            results[mode].append(accuracy)
            print(f"  {mode} test accuracy {accuracy:.2%} "
                  f"({_duration(time.time() - start)})", flush=True)
    print("\n" + results_table(results, len(data.y_test)))


if __name__ == "__main__":
    define_flags()
    app.run(main)
