"""Per-step training time of every mode, as ratios to base measured in one run.

    python benchmarks/speed.py                    # CPU, no XLA
    python benchmarks/speed.py --jit_compile      # XLA (meant for a GPU)

Every configuration trains the same backbone (`small_cnn`) on the same batch
size with the same generator, in one process. Configurations are interleaved
in rounds and the median step time of each is reported, so that machine noise
hits them alike; the ratio to base is the number to compare across machines.
"""

import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_mgr  # noqa: E402
from keras_mgr.backbones import small_cnn  # noqa: E402
from keras_mgr.generators import conditional_generator  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 32, "Real batch size.")
flags.DEFINE_integer("synthetic_batch_size", 0, "Synthetic batch size (0: = batch_size).")
flags.DEFINE_integer("image_size", 32, "Square image size.")
flags.DEFINE_integer("channels", 1, "Image channels.")
flags.DEFINE_integer("steps", 10, "Timed steps per configuration and round.")
flags.DEFINE_integer("rounds", 3, "Rounds over all configurations.")
flags.DEFINE_bool("jit_compile", False, "Compile the steps with XLA.")
flags.DEFINE_list("configs",
                  ["base", "gda", "gda+pool", "metagda", "pcr", "pcr+pool", "mgr", "mgr:5"],
                  "Modes to time; 'mode:k' sets meta_every=k, '+pool' a 1024-image "
                  "synthetic pool.")

NUM_CLASSES = 10


class StepTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def build(config, image_shape, generator):
    config, pool, _ = config.partition("+pool")
    mode, _, every = config.partition(":")
    keras.utils.set_random_seed(0)
    model = keras_mgr.wrap(
        small_cnn(image_shape), generator, mode=mode, meta_every=int(every or 1), seed=0,
        synthetic_pool_size=1024 if pool else 0,
        synthetic_batch_size=FLAGS.synthetic_batch_size or None,
        meta_batch_size=FLAGS.batch_size,
    )
    model.compile(jit_compile=FLAGS.jit_compile)
    return model


def measure(configs, image_shape, steps, rounds, batch_size):
    """Median seconds per step of each config, interleaved over rounds."""
    generator = conditional_generator(64, NUM_CLASSES, image_shape)
    generator.trainable = False
    rng = np.random.default_rng(0)
    n = batch_size * steps
    x = rng.uniform(-1, 1, (n,) + image_shape).astype("float32")
    y = rng.integers(0, NUM_CLASSES, n)
    models = {c: build(c, image_shape, generator) for c in configs}
    times = {c: [] for c in configs}
    for model in models.values():  # warm-up: tracing and compilation
        model.fit(x[: 2 * batch_size], y[: 2 * batch_size], batch_size=batch_size,
                  epochs=1, verbose=0)
    for _ in range(rounds):
        for c, model in models.items():
            timer = StepTimer()
            model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False,
                      callbacks=[timer])
            times[c].extend(timer.times)
    return {c: float(np.median(t)) for c, t in times.items()}


def main(argv):
    del argv
    image_shape = (FLAGS.image_size, FLAGS.image_size, FLAGS.channels)
    seconds = measure(FLAGS.configs, image_shape, FLAGS.steps, FLAGS.rounds,
                      FLAGS.batch_size)
    base = seconds.get("base", next(iter(seconds.values())))
    print(f"batch {FLAGS.batch_size}, synthetic batch "
          f"{FLAGS.synthetic_batch_size or FLAGS.batch_size}, images {image_shape}, "
          f"jit_compile={FLAGS.jit_compile}, backend device: "
          f"{tf.config.list_logical_devices()[-1].name}")
    print("| config | ms / step | ratio to base |\n|---|---|---|")
    for c, s in seconds.items():
        print(f"| {c} | {1000 * s:.1f} | {s / base:.2f} |")


if __name__ == "__main__":
    app.run(main)
