"""Does meta pseudo sampling learn? Probes of the finder's meta-gradient.

Trains mode mgr (wrap()'s defaults) on a small subset and, every
`--probe_every` epochs, freezes the run and measures at the current weights
theta and finder phi:

- `cos_val`: cosine similarity of two meta-gradients that differ only in
  their validation batch (two disjoint random batches of the training
  subset, as the rolling buffer would hold): does the direction come from
  the data or from the validation batch's noise?
- `cos_all`: the same with an independent real batch, synthetic draws and
  validation batch (what two consecutive meta steps see at nearly the same
  phi).
- `cos_prev`: cosine to the previous probe's meta-gradient on the same
  probe batches (does the direction persist as training goes on?).
- `dl_same` / `dl_indep`: the real change of the lookahead validation loss
  CE_val(theta'(phi)) when the finder takes the update its optimizer would
  take (Adam, as in training), on the validation batch the meta-gradient
  used and on the independent one; `dl_rand_*`: the same for a random
  update of the same norm. Negative is good; a signal shows as
  `dl_indep` < `dl_rand_indep`.
- `latent_shift`: mean ||F(z) - z|| of the finder's latents.

The probes restore every weight, optimizer slot and random stream they
touch, so the run trains exactly as without them.

    python benchmarks/finder_signal.py --per_class=10 --seeds=0,1,2

Writes `<out>/finder_signal.csv` (one row per probe) and `.md` (mean ± std
over probes and seeds, per size). The accuracy of mgr against pcr and the
random-drift control (`meta_gradient="random_drift"`) is in accuracy.py's
grid (`--modes=mgr --options=meta_gradient=random_drift`).
"""

import contextlib
import os

import _common
from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags (defined when run, so importing this module defines none)."""
    flags.DEFINE_string("dataset", "animals", "Dataset name (keras_mgr.datasets.load).")
    flags.DEFINE_list("per_class", ["10"], "Training images per class.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (subset, generator, classifier).")
    flags.DEFINE_integer("steps", 250, "Classifier steps (whole epochs).")
    flags.DEFINE_integer("probe_every", 8, "Probe every this many epochs.")
    flags.DEFINE_integer("gan_steps", 500, "GAN steps (shares accuracy.py's cache).")
    flags.DEFINE_integer("image_size", 28, "Image height and width.")
    flags.DEFINE_integer("batch_size", 32, "Real and synthetic batch size.")
    flags.DEFINE_list("options", [], "wrap() options as name=value.")
    flags.DEFINE_float("holdout", 0.0, "Hold this stratified fraction of the subset out of "
                       "the cross-entropy as meta_validation_data (probes then draw their "
                       "validation batches from it); 0: the rolling buffer.")
    flags.DEFINE_string("cache", "runs/generators", "Folder of cached generator weights.")
    flags.DEFINE_string("out", "benchmarks/results", "Output folder.")
    flags.DEFINE_string("name", "finder_signal", "Stem of the CSV / MD files.")


FIELDS = ["dataset", "per_class", "seed", "options", "epoch", "latent_shift", "meta_grad_norm",
          "cos_val", "cos_all", "cos_prev", "dl_same", "dl_indep", "dl_rand_same",
          "dl_rand_indep"]


def _flat(tensors):
    import numpy as np

    return np.concatenate([np.ravel(np.asarray(t, "float64")) for t in tensors])


def _cos(a, b):
    import numpy as np

    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


class Probe:
    """Measures the meta-gradient of `model` at its current weights (see module doc)."""

    def __init__(self, model, data, batch_size, seed, validation=None):
        import numpy as np

        self.model, self.data, self.batch_size = model, data, batch_size
        # Validation batches come from `validation` (held-out images and
        # labels) when given, else from the training subset (the buffer's source).
        self.validation = validation or (data.x_train, data.y_train)
        self.rng = np.random.default_rng(1000 + seed)
        with self._restored():
            self.fixed = self._batches()  # the same probe batches at every probe (cos_prev)
        self.previous = None

    @contextlib.contextmanager
    def _restored(self):
        """Puts back every weight, optimizer slot and random stream on exit."""
        m = self.model
        saved = [(v, v.numpy()) for v in list(m.variables) + list(m.finder_optimizer.variables)]
        try:
            yield
        finally:
            for v, value in saved:
                v.assign(value)

    def _batches(self):
        """A real batch, synthetic draws and two disjoint validation batches."""
        n = len(self.data.y_train)
        x_val, y_val = self.validation
        order = self.rng.permutation(len(y_val))
        val = min(self.model.meta_batch_size, len(y_val) // 2)
        real = self.rng.choice(n, min(self.batch_size, n), replace=False)
        return ((self.data.x_train[real], self.data.y_train[real]),
                self.model.objective.draw(self.batch_size),
                (x_val[order[:val]], y_val[order[:val]]),
                (x_val[order[val:2 * val]], y_val[order[val:2 * val]]))

    def meta_gradient(self, real, draws, val):
        import numpy as np

        m = self.model
        state = [v.value for v in m.backbone.non_trainable_variables]
        grads, *_ = m.objective.meta_step_gradients(
            m.classifier_variables, state, m.finder.trainable_variables, real[0], real[1],
            draws, val[0], val[1], np.ones(len(val[1]), "float32"))
        return grads

    def lookahead_loss(self, real, draws, val):
        """CE_val(theta'(phi)) at the finder's current weights (forward only)."""
        import numpy as np
        import tensorflow as tf

        from keras_mgr import meta

        m = self.model
        theta = [tf.identity(v.value) for v in m.classifier_variables]
        state = [v.value for v in m.backbone.non_trainable_variables]
        phi = [v.value for v in m.finder.trainable_variables]
        with tf.GradientTape() as tape:
            tape.watch(theta)
            total, aux = m.objective.train_loss(theta, state, phi, real[0], real[1], draws)
        look = meta.lookahead(theta, tape.gradient(total, theta), m.optimizer.learning_rate)
        return float(m.objective.meta_loss(look, aux["real_state"], val[0], val[1],
                                 np.ones(len(val[1]), "float32")))

    def __call__(self):
        import numpy as np

        m = self.model
        with self._restored():
            real, draws, val1, val2 = self.fixed
            g1 = self.meta_gradient(real, draws, val1)
            f1, f2 = _flat(g1), _flat(self.meta_gradient(real, draws, val2))
            other_real, other_draws, other_val, _ = self._batches()
            f_all = _flat(self.meta_gradient(other_real, other_draws, other_val))
            row = {"cos_val": _cos(f1, f2), "cos_all": _cos(f1, f_all),
                   "cos_prev": "" if self.previous is None else _cos(f1, self.previous),
                   "meta_grad_norm": float(np.linalg.norm(f1))}
            self.previous = f1
            phi_vars = m.finder.trainable_variables
            phi0 = [v.numpy() for v in phi_vars]
            before = {k: self.lookahead_loss(real, draws, v)
                      for k, v in (("same", val1), ("indep", val2))}
            m.finder_optimizer.apply(g1, phi_vars)  # the update training would make
            step = [v.numpy() - p for v, p in zip(phi_vars, phi0)]
            for k, v in (("same", val1), ("indep", val2)):
                row[f"dl_{k}"] = self.lookahead_loss(real, draws, v) - before[k]
            norm = np.sqrt(sum(np.sum(s.astype("float64") ** 2) for s in step))
            noise = [self.rng.standard_normal(s.shape) for s in step]
            scale = norm / np.sqrt(sum(np.sum(n**2) for n in noise))
            for v, p, n in zip(phi_vars, phi0, noise):
                v.assign((p + scale * n).astype(p.dtype))
            for k, v in (("same", val1), ("indep", val2)):
                row[f"dl_rand_{k}"] = self.lookahead_loss(real, draws, v) - before[k]
            return row


def run(data, generator, seed, steps, probe_every, batch_size, options, on_probe):
    """Trains mgr on `data`, calling `on_probe(epoch, row)` at every probe.

    With `options["meta_validation_data"]`, the probes draw their validation
    batches from those held-out examples, as the meta step does.
    """
    import keras

    from keras_mgr.demo import build_classifier

    model = build_classifier(data, generator, "mgr", seed, 1e-3, **options)
    probe = Probe(model, data, batch_size, seed, options.get("meta_validation_data"))
    epochs = _common.epochs_for(len(data.y_train), batch_size, steps)
    history = {}

    class Callback(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            history[epoch + 1] = dict(logs or {})
            if (epoch + 1) % probe_every == 0 or epoch + 1 == epochs:
                row = probe()
                row["latent_shift"] = history[epoch + 1].get("latent_shift", 0.0)
                on_probe(epoch + 1, row)

    model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs, verbose=0,
              callbacks=[Callback()])
    return model


def summarize(rows):
    """Markdown: mean ± std over probes and seeds of every measure, per size and
    option set, for the first and the second half of training apart."""
    import numpy as np

    last_epoch = {}
    for r in rows:
        key = (r["per_class"], r["options"], r["seed"])
        last_epoch[key] = max(last_epoch.get(key, 0), int(r["epoch"]))
    for r in rows:
        half = 2 * int(r["epoch"]) <= last_epoch[(r["per_class"], r["options"], r["seed"])]
        r["phase"] = "first half" if half else "second half"
    lines = ["| images per class | options | training | probes | latent_shift (end) | cos_val "
             "| cos_all | cos_prev | dl_same | dl_rand_same | dl_indep | dl_rand_indep "
             "| P(dl_indep < dl_rand_indep) |", "|---|" + "---|" * 12]
    groups = sorted({(r["per_class"], r["options"], r["phase"]) for r in rows},
                    key=lambda g: (int(g[0]), g[1], g[2]))
    for per_class, options, phase in groups:
        group = [r for r in rows if (r["per_class"], r["options"], r["phase"]) == (
            per_class, options, phase)]

        def stat(field, fmt="{:+.3f}", group=group):
            values = [float(r[field]) for r in group if r[field] != ""]
            if not values:
                return "-"
            return f"{fmt.format(np.mean(values))} ± {fmt.format(np.std(values)).lstrip('+')}"

        ends = [float(r["latent_shift"]) for r in group
                if int(r["epoch"]) == last_epoch[(per_class, options, r["seed"])]]
        shift = f"{np.mean(ends):.2f}" if ends else "-"
        wins = np.mean([float(r["dl_indep"]) < float(r["dl_rand_indep"]) for r in group])
        lines.append(f"| {per_class} | {options} | {phase} | {len(group)} | {shift} | "
                     f"{stat('cos_val')} | {stat('cos_all')} | {stat('cos_prev')} | "
                     f"{stat('dl_same', '{:+.2e}')} | {stat('dl_rand_same', '{:+.2e}')} | "
                     f"{stat('dl_indep', '{:+.2e}')} | {stat('dl_rand_indep', '{:+.2e}')} | "
                     f"{wins:.2f} |")
    return lines


def load_run(per_class, seed):
    """`(data, generator, held)`: the subset, its cached generator and, with
    `--holdout`, the held-out split taken out of the subset (else None)."""
    from keras_mgr import datasets

    data = datasets.load(FLAGS.dataset, per_class=int(per_class), seed=seed,
                         image_size=FLAGS.image_size)
    generator, _ = _common.cached_generator(
        data, FLAGS.dataset, f"{per_class}pc", seed, FLAGS.gan_steps, FLAGS.cache)
    held = None
    if FLAGS.holdout:
        data, held = data.hold_out(FLAGS.holdout, seed)
    return data, generator, held


def main(argv):
    del argv

    options = _common.parse_options(FLAGS.options)
    if FLAGS.holdout:
        options["holdout"] = FLAGS.holdout  # recorded in the CSV; split per seed below
    path = os.path.join(FLAGS.out, FLAGS.name + ".csv")
    done = {(r["per_class"], r["seed"], r["options"])
            for r in _common.read_rows(path, key=None)}
    for per_class in FLAGS.per_class:
        for seed in map(int, FLAGS.seeds):
            tag = _common.options_string(options)
            if (per_class, str(seed), tag) in done:
                continue
            data, generator, held = load_run(per_class, seed)
            run_options = {k: v for k, v in options.items() if k != "holdout"}
            if held is not None:
                run_options["meta_validation_data"] = held
            rows = []

            def on_probe(epoch, row, rows=rows, per_class=per_class, seed=seed, tag=tag):
                row.update(dataset=FLAGS.dataset, per_class=per_class, seed=seed,
                           options=tag, epoch=epoch)
                rows.append(row)
                _common.log(f"{per_class}/class seed {seed} epoch {epoch}: " + ", ".join(
                    f"{k} {row[k]:.3g}" for k in FIELDS[5:] if row[k] != ""))

            run(data, generator, seed, FLAGS.steps, FLAGS.probe_every, FLAGS.batch_size,
                run_options, on_probe)
            for row in rows:  # a seed's probes land together (resume is per seed)
                _common.append_row(path, row, fields=FIELDS)
    _common.write_report(FLAGS.out, FLAGS.name, f"# Finder signal ({FLAGS.dataset}, mode mgr)",
                         "benchmarks/finder_signal.py",
                         summarize(_common.read_rows(path, key=None)))


if __name__ == "__main__":
    define_flags()
    app.run(main)
