"""End-to-end demo on the embedded digits: `python -m keras_mgr.demo`.

Takes a stratified 10% subset of scikit-learn's handwritten digits (shipped
with scikit-learn, no download), trains the built-in conditional GAN on that
subset only, then trains the same backbone with each mode (same seed, same
data) and prints test accuracy.
"""

import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # grappler logs harmless errors

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_mgr  # noqa: E402
from keras_mgr import datasets, generators  # noqa: E402
from keras_mgr.backbones import small_cnn  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """The demo's command-line flags (defined when run, not on import, so that
    importing its training helpers never clashes with another script's flags)."""
    flags.DEFINE_float("ratio", 0.1, "Fraction of the digits training split used.")
    flags.DEFINE_list("seeds", ["0"], "Seeds (subset, generator and classifier).")
    flags.DEFINE_list("modes", ["base", "mgr"], f"Modes to compare, from {keras_mgr.MODES}.")
    flags.DEFINE_integer("gan_epochs", 300, "Epochs of GAN training on the subset.")
    flags.DEFINE_integer("epochs", 40, "Classifier epochs.")
    flags.DEFINE_integer("batch_size", 32, "Real (and synthetic) batch size.")
    flags.DEFINE_integer("image_size", 32, "Digits are upsampled from 8x8 to this size.")
    flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate of the classifier.")


def train_generator(data, seed, epochs, verbose=0):
    """Trains the built-in conditional GAN on `data`'s training subset only."""
    keras.utils.set_random_seed(seed)
    gan = generators.ConditionalGAN(num_classes=data.num_classes,
                                    image_shape=data.image_shape, seed=seed)
    gan.compile()
    gan.fit(data.as_dataset("train", batch_size=64, shuffle=True, seed=seed),
            epochs=epochs, verbose=verbose, shuffle=False)  # the dataset shuffles
    generator = gan.generator
    generator.trainable = False
    return generator


def train_classifier(data, generator, mode, seed, epochs, batch_size, learning_rate,
                     verbose=0, finder_optimizer="auto", **wrap_kwargs):
    """Wraps a fresh `small_cnn` and returns its test accuracy."""
    keras.utils.set_random_seed(seed)
    model = keras_mgr.wrap(small_cnn(data.image_shape), generator, mode=mode, seed=seed,
                           **wrap_kwargs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  finder_optimizer=finder_optimizer)
    model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs,
              verbose=verbose)
    return model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)["accuracy"]


def main(argv):
    del argv
    results = {mode: [] for mode in FLAGS.modes}
    for seed in map(int, FLAGS.seeds):
        data = datasets.load("digits", ratio=FLAGS.ratio, seed=seed,
                             image_size=FLAGS.image_size)
        print(f"seed {seed}: {len(data.y_train)} training images "
              f"({FLAGS.ratio:.0%} of digits), {len(data.y_test)} test images")
        start = time.time()
        generator = train_generator(data, seed, FLAGS.gan_epochs)
        print(f"  generator: {FLAGS.gan_epochs} GAN epochs in {time.time() - start:.0f} s")
        for mode in FLAGS.modes:
            start = time.time()
            accuracy = train_classifier(data, generator, mode, seed, FLAGS.epochs,
                                        FLAGS.batch_size, FLAGS.learning_rate)
            results[mode].append(accuracy)
            print(f"  {mode:8s} test accuracy {accuracy:.2%} ({time.time() - start:.0f} s)")
    print("\nmode      test accuracy (mean ± std over seeds " + ",".join(FLAGS.seeds) + ")")
    for mode, accuracies in results.items():
        print(f"{mode:8s}  {100 * np.mean(accuracies):.2f} ± {100 * np.std(accuracies):.2f}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
