"""Ablation of the options the paper leaves open (docs/method.md), mode mgr.

Each variant changes one `wrap()` option from a centre configuration
(meta_every=5, see CENTRE); all run on the same subsets, generators (shared
cache with accuracy.py) and seeds.

    python benchmarks/ablation.py                    # 10% digits, seeds 0,1,2
    python benchmarks/ablation.py --variants=cosine,meta_every_5

Writes `<out>/ablation.csv` (resumable), `<out>/ablation.md` and `.png`.
Runs that accuracy.py already made with identical settings (wrap()'s
defaults) are copied from its CSV rather than re-run.

The validation batch source: wrap()'s default is the rolling buffer of the
most recent real training examples; `holdout_25` instead holds a stratified
25% of the training subset out of the cross-entropy and passes it as
`meta_validation_data` (benchmark option `meta_validation_fraction`);
`drop_25` discards the same 25% (validation from the buffer), separating the
validation source from the smaller cross-entropy set.
"""

import os

import _common
import accuracy  # defines the shared flags
from absl import app, flags

FLAGS = flags.FLAGS

# Every variant changes one option from a centre configuration, written out
# in full so that a row means the same whatever wrap()'s defaults are. The
# centre is the first round's: meta_every=5 (a meta_every=1 mgr run costs
# about 2.5x as much on 2 CPU cores), finder lr 1e-3, no trust region.
# wrap()'s "auto" settings for mgr (meta_every 5, finder lr 1e-2, no trust
# region) are the variant `finder_lr_1e-2`, chosen from this table.
CENTRE = {"meta_every": 5, "finder_learning_rate": 1e-3, "finder_max_shift": None}
CHANGES = {
    "meta_every_5": {},
    "cosine": {"consistency": "cosine"},
    "simsiam": {"consistency": "simsiam"},
    "finder_lr_1e-2": {"finder_learning_rate": 1e-2},
    "pcr_weight_0.3": {"pcr_weight": 0.3},
    "pcr_weight_3": {"pcr_weight": 3.0},
    # Added after the first variants: a faster-learning finder helped.
    "finder_lr_1e-1": {"finder_learning_rate": 1e-1},
    "simsiam_finder_lr_1e-2": {"consistency": "simsiam", "finder_learning_rate": 1e-2},
    "finite_difference": {"meta_gradient": "finite_difference"},
    "meta_batch_32": {"meta_batch_size": 32},
    "finder_lr_1e-4": {"finder_learning_rate": 1e-4},
    # Added with the finder's trust region and the held-out validation source.
    "max_shift_2": {"finder_max_shift": 2.0},
    "max_shift_0.5": {"finder_max_shift": 0.5},
    "finder_lr_1e-2_max_shift_0.5": {"finder_learning_rate": 1e-2, "finder_max_shift": 0.5},
    "holdout_25": {"meta_validation_fraction": 0.25},
    "drop_25": {"drop_fraction": 0.25},  # holdout_25's control: same split, no holdout
    "meta_every_1": {"meta_every": 1},
}
# name -> wrap() options.
VARIANTS = {name: dict(CENTRE, **change) for name, change in CHANGES.items()}
flags.DEFINE_list("variants", list(VARIANTS), f"Variants, from {list(VARIANTS)}.")
flags.DEFINE_string("ablation_mode", "mgr", "Mode every variant runs in.")
flags.DEFINE_string("reuse", "benchmarks/results/accuracy.csv",
                    "CSV whose runs with identical settings are copied, not re-run.")


def run_ablation(s, variant_names, mode="mgr", reuse=None):
    """Runs variant by variant (all seeds of one before the next); returns rows."""
    path = os.path.join(s["out"], s["name"] + ".csv")
    for name in variant_names:
        if name not in VARIANTS:
            raise ValueError(f"Unknown variant {name!r}. Known: {list(VARIANTS)}")
        variant = [(name, mode, VARIANTS[name])]
        if reuse:
            _copy_identical(reuse, path, s, variant)
        accuracy.run_grid(s, variants=variant)
    return _common.read_rows(path)


def _copy_identical(source, path, s, variant):
    """Copies rows of `source` whose run key this variant would produce."""
    (name, mode, opts), = variant
    have = {row["key"] for row in _common.read_rows(path)}
    for row in _common.read_rows(source):
        if row["key"] in have or row["mode"] != mode:
            continue
        if row["options"] == _common.options_string(opts) and row["ratio"] in {
            str(float(r)) for r in s["ratios"]
        } and row["seed"] in {str(int(x)) for x in s["seeds"]}:
            _common.append_row(path, dict(row, config=name))


def main(argv):
    del argv
    s = accuracy.settings_from_flags()
    if not FLAGS["name"].present:
        s["name"] = "ablation_quick" if FLAGS.quick else "ablation"
    if not FLAGS["ratios"].present and not FLAGS.quick:
        s["ratios"] = ["0.1"]
    if FLAGS.report_only:
        rows = _common.read_rows(os.path.join(s["out"], s["name"] + ".csv"))
    else:
        rows = run_ablation(s, FLAGS.variants, FLAGS.ablation_mode, FLAGS.reuse)
    print(accuracy.write_report(rows, s["out"], s["name"],
                                f"Ablation, mode {FLAGS.ablation_mode}, {s['dataset']}",
                                reference=(FLAGS.variants[0], FLAGS.ablation_mode)))


if __name__ == "__main__":
    app.run(main)
