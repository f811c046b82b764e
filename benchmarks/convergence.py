"""Test accuracy of base against training steps, per training-set size.

Chooses the accuracy grid's step budget: a budget is fair when base's test
accuracy has plateaued at that size, so that the other modes are compared
with a converged baseline rather than an undertrained one.

    python benchmarks/convergence.py --dataset=animals --per_class=10,25,50,100

Writes `<out>/convergence_<dataset>.csv` (one row per evaluation),
`.md` (mean test accuracy per size and step, and the first step whose mean
is within `--tolerance` points of the best) and `.png` (the curves).
"""

import os

import _common
from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags (defined when run, so importing this module defines none)."""
    flags.DEFINE_string("dataset", "animals", "Dataset name (keras_mgr.datasets.load).")
    flags.DEFINE_list("per_class", ["10", "25", "50", "100"], "Training images per class.")
    flags.DEFINE_list("seeds", ["0", "1"], "Seeds (subset and classifier).")
    flags.DEFINE_integer("max_steps", 2000, "Steps of the longest curve.")
    flags.DEFINE_integer("eval_every", 50, "Evaluate the test split every this many steps.")
    flags.DEFINE_integer("image_size", 28, "Image height and width.")
    flags.DEFINE_integer("batch_size", 32, "Batch size.")
    flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
    flags.DEFINE_float("momentum", 0.9, "BatchNorm momentum of small_cnn.")
    flags.DEFINE_float("tolerance", 0.5, "Plateau: within this many points of the best mean.")
    flags.DEFINE_string("out", "benchmarks/results", "Output folder.")


def curve(data, seed, max_steps, eval_every, batch_size, learning_rate, momentum):
    """[(step, test accuracy)] of base (`wrap(mode="base")` on small_cnn)."""
    import keras

    import keras_mgr
    from keras_mgr.backbones import small_cnn
    from keras_mgr.generators import conditional_generator

    keras.utils.set_random_seed(seed)
    generator = conditional_generator(64, data.num_classes, data.image_shape)  # unused
    generator.trainable = False
    model = keras_mgr.wrap(small_cnn(data.image_shape, momentum=momentum), generator,
                           mode="base", seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    per_epoch = -(-len(data.y_train) // batch_size)
    points, step = [], 0
    while step < max_steps:
        epochs = max(1, round(eval_every / per_epoch))
        model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs,
                  verbose=0)
        step += epochs * per_epoch
        result = model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
        points.append((step, result["accuracy"]))
    return points


def main(argv):
    del argv
    import numpy as np

    from keras_mgr import datasets

    path = os.path.join(FLAGS.out, f"convergence_{FLAGS.dataset}.csv")
    rows = _common.read_curve(path)
    done = {(r["per_class"], r["seed"]) for r in rows}
    for per_class in FLAGS.per_class:
        for seed in FLAGS.seeds:
            if (per_class, seed) in done:
                continue
            data = datasets.load(FLAGS.dataset, per_class=int(per_class), seed=int(seed),
                                 image_size=FLAGS.image_size)
            points = curve(data, int(seed), FLAGS.max_steps, FLAGS.eval_every,
                           FLAGS.batch_size, FLAGS.learning_rate, FLAGS.momentum)
            new = [{"per_class": per_class, "seed": seed, "step": s, "accuracy": f"{a:.4f}"}
                   for s, a in points]
            _common.append_curve(path, new)
            rows += new
            _common.log(f"{per_class}/class seed {seed}: " + " ".join(
                f"{s}:{100 * a:.1f}" for s, a in points[:: max(1, len(points) // 10)]))
    lines = [f"# Base test accuracy against steps ({FLAGS.dataset})", "",
             f"small_cnn (BatchNorm momentum {FLAGS.momentum}), Adam {FLAGS.learning_rate}, "
             f"batch {FLAGS.batch_size}, image {FLAGS.image_size}; mean over seeds "
             f"{','.join(FLAGS.seeds)}. Plateau: the first evaluated step whose mean is "
             f"within {FLAGS.tolerance} points of the best mean.", "",
             "| images per class | best mean (%) | at step | plateau step | mean at plateau |",
             "|---|---|---|---|---|"]
    curves = {}
    for per_class in FLAGS.per_class:
        by_step = {}
        for r in rows:
            if r["per_class"] == per_class:
                by_step.setdefault(int(r["step"]), []).append(100 * float(r["accuracy"]))
        steps = sorted(s for s, v in by_step.items() if len(v) == len(FLAGS.seeds))
        if not steps:
            continue
        means = [float(np.mean(by_step[s])) for s in steps]
        best = int(np.argmax(means))
        plateau = next(i for i, m in enumerate(means) if m >= means[best] - FLAGS.tolerance)
        curves[per_class] = (steps, means)
        lines.append(f"| {per_class} | {means[best]:.2f} | {steps[best]} | {steps[plateau]} "
                     f"| {means[plateau]:.2f} |")
    with open(path[:-4] + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    _plot(curves, path[:-4] + ".png")
    print("\n".join(lines))


def _plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for per_class, (steps, means) in curves.items():
        ax.plot(steps, means, label=f"{per_class} per class")
    ax.set_xlabel("training steps (batch 32)")
    ax.set_ylabel("base test accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    define_flags()
    app.run(main)
