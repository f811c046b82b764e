"""How much signal is in the finder's meta-gradient, and what raises it.

Trains mode mgr as `finder_signal.py` does and, at every probe, freezes the
run (every weight, slot and random stream put back afterwards) and draws
`2 * max(k)` independent meta-gradients per validation batch size V, each from
its own real batch, synthetic draws and validation batch:

- `cos`: the cosine between the means of two disjoint groups of k of them,
  averaged over the `max(k) / k` pairs. k > 1 stands for accumulating the
  meta-gradient over k meta steps before the finder's update (at the same
  weights: a probe does not move theta between them).
- `dl` / `dl_rand`: the change of the lookahead validation loss
  CE_val(theta'(phi)) when phi moves a fixed distance along minus one group's
  mean (dl) or along a random direction (dl_rand), measured on an independent
  real batch, synthetic draws and the whole validation source. Negative is
  good; a signal shows as dl < dl_rand.

V = "all" is one lookahead over the whole validation source (the training
subset, or the held-out split with `--holdout`).

    python benchmarks/signal_curve.py --per_class=10 --seeds=0,1,2
    python benchmarks/signal_curve.py --per_class=10 --seeds=0,1,2 --holdout=0.3

Writes `<out>/signal_curve.csv` (one row per probe, V and k), `.md` (mean ±
std over probes and seeds) and `.png` (cos against k, one line per V and
validation source).
"""

import os

import _common
import finder_signal
from absl import app, flags

FLAGS = flags.FLAGS

FIELDS = ["dataset", "per_class", "seed", "source", "epoch", "val_size", "k", "pairs", "cos",
          "dl", "dl_rand"]


def define_flags():
    finder_signal.define_flags()
    _common.define("list", "val_sizes", ["32", "64", "128", "all"],
                   "Validation batch sizes V ('all': the whole validation source).")
    _common.define("list", "accumulate", ["1", "4", "16"], "Group sizes k (each divides the "
                   "largest).")
    _common.define("float", "step", 0.05, "Distance phi moves for dl / dl_rand (L2 norm).")
    FLAGS.set_default("name", "signal_curve")
    FLAGS.set_default("probe_every", 25)


class Curve(finder_signal.Probe):
    """Cosines of accumulated meta-gradients, per validation batch size."""

    def __init__(self, model, data, batch_size, seed, validation, val_sizes, ks, step):
        super().__init__(model, data, batch_size, seed, validation)
        self.val_sizes, self.ks, self.step = val_sizes, ks, step

    def _draw(self, val_size):
        import numpy as np

        n = len(self.data.y_train)
        x_val, y_val = self.validation
        real = self.rng.choice(n, min(self.batch_size, n), replace=False)
        size = len(y_val) if val_size == "all" else min(int(val_size), len(y_val))
        val = np.sort(self.rng.choice(len(y_val), size, replace=False))
        return ((self.data.x_train[real], self.data.y_train[real]),
                self.model.objective.draw(self.batch_size), (x_val[val], y_val[val]))

    def _move(self, direction):
        """phi + step * direction / ||direction||; returns the old values."""
        import numpy as np

        phi_vars = self.model.finder.trainable_variables
        old = [v.numpy() for v in phi_vars]
        scale = self.step / (np.linalg.norm(direction) + 1e-30)
        offset = 0
        for v, p in zip(phi_vars, old):
            size = p.size
            v.assign((p + scale * direction[offset:offset + size].reshape(p.shape)).astype(
                p.dtype))
            offset += size
        return old

    def _loss_change(self, direction, evaluation):
        base = self.lookahead_loss(*evaluation)
        old = self._move(direction)
        changed = self.lookahead_loss(*evaluation)
        for v, p in zip(self.model.finder.trainable_variables, old):
            v.assign(p)
        return changed - base

    def __call__(self):
        import numpy as np

        rows, most = [], max(self.ks)
        x_val, y_val = self.validation
        with self._restored():
            for val_size in self.val_sizes:
                grads = np.stack([_flat_grads(self.meta_gradient(*self._draw(val_size)))
                                  for _ in range(2 * most)])
                real, draws, _ = self._draw(32)
                evaluation = (real, draws, (x_val, y_val))
                for k in self.ks:
                    pairs = most // k
                    cosines = [finder_signal._cos(grads[i * k:(i + 1) * k].mean(0),
                                                  grads[most + i * k:most + (i + 1) * k].mean(0))
                               for i in range(pairs)]
                    mean = grads[:k].mean(0)
                    noise = self.rng.standard_normal(mean.shape)
                    rows.append({"val_size": val_size, "k": k, "pairs": pairs,
                                 "cos": float(np.mean(cosines)),
                                 "dl": self._loss_change(-mean, evaluation),
                                 "dl_rand": self._loss_change(noise, evaluation)})
        return rows


def train(model, data, batch_size, steps, probe_every, probe, on_probe):
    """Fits `model` on `data`, calling `on_probe(epoch, probe())` every
    `probe_every` epochs and after the last."""
    import keras

    epochs = _common.epochs_for(len(data.y_train), batch_size, steps)

    class Callback(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % probe_every == 0 or epoch + 1 == epochs:
                on_probe(epoch + 1, probe())

    model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs, verbose=0,
              callbacks=[Callback()])


def _flat_grads(grads):
    return finder_signal._flat(grads)


def summarize(rows):
    """Markdown: mean ± std over probes and seeds per source, V and k."""
    import numpy as np

    lines = ["| images per class | validation source | V | k | probes | cos | dl | dl_rand "
             "| P(dl < dl_rand) |", "|---|" + "---|" * 8]
    keys = sorted({(r["per_class"], r["source"], r["val_size"], int(r["k"])) for r in rows},
                  key=lambda g: (int(g[0]), g[1], _order(g[2]), g[3]))
    for per_class, source, val_size, k in keys:
        group = [r for r in rows if (r["per_class"], r["source"], r["val_size"], int(r["k"]))
                 == (per_class, source, val_size, k)]
        cos = [float(r["cos"]) for r in group]
        dl = [float(r["dl"]) for r in group]
        dl_rand = [float(r["dl_rand"]) for r in group]
        wins = np.mean([a < b for a, b in zip(dl, dl_rand)])
        lines.append(f"| {per_class} | {source} | {val_size} | {k} | {len(group)} | "
                     f"{np.mean(cos):+.3f} ± {np.std(cos):.3f} | {np.mean(dl):+.2e} | "
                     f"{np.mean(dl_rand):+.2e} | {wins:.2f} |")
    return lines


def _order(val_size):
    return 10**9 if val_size == "all" else int(val_size)


def plot(rows, path):
    """cos against k, one line per (images per class, source, V)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    keys = sorted({(r["per_class"], r["source"], r["val_size"]) for r in rows},
                  key=lambda g: (int(g[0]), g[1], _order(g[2])))
    for per_class, source, val_size in keys:
        ks = sorted({int(r["k"]) for r in rows})
        means = [np.mean([float(r["cos"]) for r in rows if (
            r["per_class"], r["source"], r["val_size"], int(r["k"])) == (
            per_class, source, val_size, k)]) for k in ks]
        ax.plot(ks, means, marker="o", label=f"{per_class}/class, {source}, V={val_size}")
    ax.axhline(0.3, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("meta-gradients averaged (k)")
    ax.set_ylabel("cos between independent estimates")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv):
    del argv
    from keras_mgr.demo import build_classifier

    options = _common.parse_options(FLAGS.options)
    source = f"holdout {FLAGS.holdout}" if FLAGS.holdout else "training subset"
    ks = [int(k) for k in FLAGS.accumulate]
    path = os.path.join(FLAGS.out, FLAGS.name + ".csv")
    done = {(r["per_class"], r["seed"], r["source"]) for r in _common.read_rows(path, key=None)}
    for per_class in FLAGS.per_class:
        for seed in map(int, FLAGS.seeds):
            if (per_class, str(seed), source) in done:
                continue
            data, generator, validation = finder_signal.load_run(per_class, seed)
            run_options = dict(options)
            if validation is not None:
                run_options["meta_validation_data"] = validation
            model = build_classifier(data, generator, "mgr", seed, 1e-3, **run_options)
            curve = Curve(model, data, FLAGS.batch_size, seed, validation, FLAGS.val_sizes, ks,
                          FLAGS.step)
            rows = []

            def on_probe(epoch, probe_rows, rows=rows, per_class=per_class, seed=seed):
                for row in probe_rows:
                    row.update(dataset=FLAGS.dataset, per_class=per_class, seed=seed,
                               source=source, epoch=epoch)
                rows.extend(probe_rows)
                _common.log(f"{per_class}/class seed {seed} epoch {epoch}: " + ", ".join(
                    f"V={r['val_size']} k={r['k']} cos {r['cos']:+.2f}" for r in probe_rows))

            train(model, data, FLAGS.batch_size, FLAGS.steps, FLAGS.probe_every, curve, on_probe)
            for row in rows:  # a seed's probes land together (resume is per seed)
                _common.append_row(path, row, fields=FIELDS)
    rows = _common.read_rows(path, key=None)
    plot(rows, os.path.join(FLAGS.out, FLAGS.name + ".png"))
    _common.write_report(FLAGS.out, FLAGS.name,
                         f"# Meta-gradient signal ({FLAGS.dataset}, mode mgr)",
                         "benchmarks/signal_curve.py", summarize(rows))


if __name__ == "__main__":
    define_flags()
    app.run(main)
