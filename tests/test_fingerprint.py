"""Numbers that a refactor must keep, on any CPU: every mode's weights and
logged losses after 8 steps on tiny data, recorded from the implementation
they guard.

The quantities are chosen to depend on the code, not on the CPU's rounding:
plain SGD for both optimizers (Adam divides a gradient by its own size, so
a true-zero gradient's rounding noise becomes a whole step), no bias before
BatchNorm (its true gradient is zero), and per variable only positive,
well-conditioned sums: `||w||^2` and `||w - w_0||` (the update's size).
They hold within `RTOL` with oneDNN on and off, 1 or 2 threads and
oneDNN's ISA capped (`python tests/test_fingerprint.py --check` runs those
settings), and each deliberate change of the numerics tried moved some by
far more (docs/benchmarks.md, "The fingerprint").

Regenerate only for a deliberate change of the numerics (and say so in the
commit): `python tests/test_fingerprint.py` prints `EXPECTED`.
"""

import json
import os
import subprocess
import sys
import warnings
from typing import NamedTuple

import keras
import numpy as np
import pytest
import tiny

import keras_mgr

CASES = {
    "base": ("base", {}),
    "gda": ("gda", {}),
    "metagda": ("metagda", {}),
    "pcr": ("pcr", {}),
    "mgr": ("mgr", {}),
    "mgr_fd": ("mgr", {"meta_gradient": "finite_difference"}),
    "mgr_simsiam": ("mgr", {"consistency": "simsiam"}),
    "mgr_microbatches": ("mgr", {"meta_microbatches": 2}),
}
RTOL = 1e-4  # measured spread across the settings of --check: below 1e-5
ATOL = 1e-7  # exact zeros (a frozen generator's update) stay exact

EXPECTED = {
    "base": (
        [
            (0.0, 0.0),
            (0.0, 0.0),
            (0.0, 0.0),
            (6.3841015e-05, 0.0079900572),
            (0.00038989135, 0.019745667),
            (0.0013472648, 0.036705105),
            (0.010875356, 0.0),
            (0.82742998, 1.0910341),
            (1.395002, 0.46903431),
            (3.1295145, 0.20005702),
            (4.0577532, 0.03767575),
            (17.294876, 0.0),
        ],
        {
            "accuracy": [0.34375, 0.6875],
            "ce_loss": [1.0849632, 0.89241803],
            "loss": [1.0849632, 0.89241803],
        },
    ),
    "gda": (
        [
            (0.0, 0.0),
            (0.0, 0.0),
            (6.3052323e-05, 0.0079405493),
            (0.0010621712, 0.032590968),
            (0.0013014128, 0.036075099),
            (0.010875356, 0.0),
            (0.82699924, 1.0912525),
            (1.3926588, 0.46515538),
            (3.1273074, 0.2006038),
            (4.053127, 0.038659099),
            (17.294876, 0.0),
            (64.0, 8.0),
        ],
        {
            "accuracy": [0.375, 0.84375],
            "ce_loss": [1.0870582, 0.89438117],
            "gda_loss": [1.0980844, 1.09705],
            "loss": [2.1851425, 1.9914314],
        },
    ),
    "metagda": (
        [
            (0.0, 0.0),
            (0.0, 0.0),
            (1.8460192e-06, 0.0013586829),
            (3.7814877e-06, 0.0019446048),
            (6.3093633e-05, 0.0079431501),
            (0.0010630184, 0.032603962),
            (0.0012860316, 0.035861283),
            (0.0015887827, 0.039859537),
            (0.008442621, 0.091883737),
            (0.010875356, 0.0),
            (0.82701879, 1.0912412),
            (1.3926383, 0.46529121),
            (3.1272909, 0.20075731),
            (4.0528317, 0.038610402),
            (8.1954628, 0.0039750933),
            (8.4205955, 0.0055001842),
            (11.0, 3.3166248),
            (17.294876, 0.0),
            (64.0, 8.0),
            (64.0, 8.0),
            (95.869852, 9.7913151),
        ],
        {
            "accuracy": [0.375, 0.84375],
            "ce_loss": [1.0870621, 0.89432728],
            "gda_loss": [1.0980734, 1.0971465],
            "latent_shift": [0.023653943, 0.090270899],
            "loss": [2.1851354, 1.9914739],
            "meta_grad_norm": [0.0029286977, 0.0027021621],
            "meta_loss": [0.74221218, 0.85630083],
        },
    ),
    "mgr": (
        [
            (0.0, 0.0),
            (0.0, 0.0),
            (3.5884776e-05, 0.0059903903),
            (4.147715e-05, 0.0064402756),
            (0.00010937117, 0.010458067),
            (0.00041328022, 0.020329295),
            (0.001099046, 0.033151863),
            (0.010875356, 0.0),
            (0.018586998, 0.13633414),
            (0.11243841, 0.33531837),
            (0.8200268, 1.0949584),
            (1.3946337, 0.40280773),
            (3.1243562, 0.17658594),
            (4.0025644, 0.02251123),
            (8.2291119, 0.019036511),
            (8.4544938, 0.029015244),
            (11.0, 3.3166248),
            (17.294876, 0.0),
            (64.0, 8.0),
            (64.0, 8.0),
            (95.869852, 9.7913151),
            (257.0, 16.0),
        ],
        {
            "accuracy": [0.40625, 0.65625],
            "ce_loss": [1.0789623, 0.90479505],
            "latent_shift": [0.046444371, 0.17417175],
            "loss": [1.0977305, 0.95410621],
            "meta_grad_norm": [0.003101663, 0.012009513],
            "meta_loss": [0.73450434, 0.879071],
            "pcr_loss": [0.018768162, 0.049311139],
        },
    ),
    "mgr_fd": (
        [
            (0.0, 0.0),
            (0.0, 0.0),
            (3.4763594e-05, 0.005896066),
            (4.1475283e-05, 0.0064401307),
            (0.00010701382, 0.010344748),
            (0.00041327841, 0.02032925),
            (0.0010989479, 0.033150383),
            (0.010875356, 0.0),
            (0.018382558, 0.13558229),
            (0.11186941, 0.33446884),
            (0.82002673, 1.0949585),
            (1.3946366, 0.40280197),
            (3.1243552, 0.17658552),
            (4.0025616, 0.022512855),
            (8.2288797, 0.018823142),
            (8.4542621, 0.02872719),
            (11.0, 3.3166248),
            (17.294876, 0.0),
            (64.0, 8.0),
            (64.0, 8.0),
            (95.869852, 9.7913151),
            (257.0, 16.0),
        ],
        {
            "accuracy": [0.40625, 0.65625],
            "ce_loss": [1.0789623, 0.90479678],
            "latent_shift": [0.046187632, 0.17354256],
            "loss": [1.0977304, 0.95411289],
            "meta_grad_norm": [0.0031010774, 0.011982235],
            "meta_loss": [0.73450422, 0.87907386],
            "pcr_loss": [0.018768061, 0.049316071],
        },
    ),
    "mgr_microbatches": (
        [
            (0.0, 0.0),
            (0.0, 0.0),
            (2.6007367e-05, 0.0050997418),
            (4.0432833e-05, 0.0063586817),
            (7.4333043e-05, 0.0086216612),
            (0.00041313738, 0.020325781),
            (0.0010828081, 0.03290605),
            (0.010875356, 0.0),
            (0.017026753, 0.1304866),
            (0.10928465, 0.33058228),
            (0.81968141, 1.09514),
            (1.3946567, 0.40169159),
            (3.1232437, 0.17548762),
            (4.0009739, 0.022072388),
            (8.2203781, 0.018473512),
            (8.4457307, 0.02686251),
            (11.0, 3.3166248),
            (17.294876, 0.0),
            (64.0, 8.0),
            (64.0, 8.0),
            (95.869852, 9.7913151),
            (257.0, 16.0),
        ],
        {
            "accuracy": [0.4375, 0.65625],
            "ce_loss": [1.0794218, 0.90588796],
            "latent_shift": [0.047028556, 0.17565101],
            "loss": [1.0994124, 0.95519686],
            "meta_grad_norm": [0.0040925359, 0.012355305],
            "meta_loss": [0.73512518, 0.88015044],
            "pcr_loss": [0.019990729, 0.0493089],
        },
    ),
    "mgr_simsiam": (
        [
            (0.0, 0.0),
            (0.0, 0.0),
            (7.1894201e-05, 0.0084790448),
            (0.00037117879, 0.019266001),
            (0.0004116507, 0.020289177),
            (0.00085622639, 0.029261346),
            (0.00086892136, 0.029477472),
            (0.0028896274, 0.053755255),
            (0.0076950766, 0.087721586),
            (0.010076692, 0.10038273),
            (0.010875356, 0.0),
            (0.014432059, 0.12013351),
            (0.10785626, 0.32841477),
            (0.15981761, 0.39977194),
            (0.8301272, 1.0895222),
            (1.4055766, 0.48402283),
            (3.136334, 0.1984588),
            (4.0611655, 0.037350781),
            (7.8471951, 0.16382655),
            (7.9969351, 0.033862969),
            (8.0459073, 0.044418895),
            (11.0, 3.3166248),
            (17.294876, 0.0),
            (63.987363, 0.024238708),
            (64.0, 8.0),
            (64.0, 8.0),
            (95.869852, 9.7913151),
            (102.34148, 0.53816452),
            (103.16237, 0.2413676),
            (255.99156, 0.019401421),
            (256.11414, 0.30134335),
            (257.0, 16.0),
        ],
        {
            "accuracy": [0.40625, 0.71875],
            "ce_loss": [1.0795431, 0.88541836],
            "latent_shift": [0.32285035, 0.61924541],
            "loss": [2.8403614, 2.2851245],
            "meta_grad_norm": [0.017833954, 0.0050874501],
            "meta_loss": [0.73717117, 0.8533473],
            "pcr_loss": [1.7608184, 1.3997061],
        },
    ),
    "pcr": (
        [
            (0.0, 0.0),
            (0.0, 0.0),
            (4.1353982e-05, 0.0064307062),
            (0.00041313262, 0.020325664),
            (0.0010986024, 0.033145171),
            (0.010875356, 0.0),
            (0.82001536, 1.0949645),
            (1.3946058, 0.40093961),
            (3.1242779, 0.17652614),
            (4.0015541, 0.022318909),
            (17.294876, 0.0),
            (64.0, 8.0),
            (257.0, 16.0),
        ],
        {
            "accuracy": [0.40625, 0.65625],
            "ce_loss": [1.0789495, 0.90491378],
            "loss": [1.0977705, 0.9554112],
            "pcr_loss": [0.018820973, 0.050497472],
        },
    ),
}


class Fingerprint(NamedTuple):
    """`weights`: sorted `(||w||^2, ||w - w_0||)` per variable (where a
    variable lives may change, its value may not); `logs`: every epoch's."""

    weights: list
    logs: dict


def fingerprint(mode, options):
    keras.utils.set_random_seed(0)
    finder = (
        dict(meta_every=1, meta_batch_size=8, finder_hidden_dim=8)
        if mode in ("mgr", "metagda")
        else {}
    )
    backbone = tiny.backbone(norm="keras", use_bias=False)
    model = keras_mgr.wrap(backbone, tiny.generator(), mode=mode, seed=0, **finder, **options)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        finder_optimizer=keras.optimizers.SGD(10.0) if finder else "auto",
    )
    initial = [np.array(v.numpy(), "float64") for v in model.weights]
    x, y = tiny.data(32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BatchNorm after 8 steps
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history
    weights = sorted(
        (_digits(np.sum(np.square(w))), _digits(np.linalg.norm(w - w0)))
        for w, w0 in ((np.array(v.numpy(), "float64"), w0) for v, w0 in zip(model.weights, initial))
    )
    logs = {k: [_digits(v) for v in values] for k, values in sorted(history.items())}
    return Fingerprint(weights, logs)


def _digits(value):
    """8 significant digits: more than the tolerance needs, short to record."""
    return float(f"{float(value):.8g}")


def assert_matches(case, actual, rtol=RTOL):
    expected = Fingerprint(*EXPECTED[case])
    assert len(actual.weights) == len(expected.weights)
    assert actual.logs.keys() == expected.logs.keys()
    # Logs first: a changed loss says more than a changed weight sum.
    for key in actual.logs:
        np.testing.assert_allclose(
            actual.logs[key], expected.logs[key], rtol=rtol, atol=ATOL, err_msg=f"{case}: log {key}"
        )
    np.testing.assert_allclose(
        actual.weights, expected.weights, rtol=rtol, atol=ATOL, err_msg=f"{case}: weights"
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_numbers_are_those_recorded(case):
    assert_matches(case, fingerprint(*CASES[case]))


# The settings `--check` runs each in a fresh process: the oneDNN switch, the
# thread pools, and oneDNN's instruction-set cap (other kernels, other sums).
SETTINGS = {
    "onednn=0": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "onednn=1": {"TF_ENABLE_ONEDNN_OPTS": "1"},
    "threads=1": {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"},
    "threads=2": {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "2"},
    "isa=sse41": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def _spread(fingerprints):
    """Largest relative difference of any recorded number from `EXPECTED`."""
    worst = 0.0
    for case, actual in fingerprints.items():
        expected = Fingerprint(*EXPECTED[case])
        pairs = [
            (a, e) for key in actual.logs for a, e in zip(actual.logs[key], expected.logs[key])
        ]
        pairs += [
            (a, e)
            for row, row_e in zip(actual.weights, expected.weights)
            for a, e in zip(row, row_e)
        ]
        worst = max([worst] + [abs(a - e) / max(abs(e), ATOL / RTOL) for a, e in pairs])
    return worst


def _all():
    return {case: fingerprint(*CASES[case]) for case in sorted(CASES)}


if __name__ == "__main__":
    if "--one" in sys.argv:  # a child of --check: print this process's numbers
        import tensorflow as tf

        threads = os.environ.get("TF_NUM_INTRAOP_THREADS")  # also set through the API
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        print(json.dumps({c: [f.weights, f.logs] for c, f in _all().items()}))
    elif "--check" in sys.argv:
        for label, variables in SETTINGS.items():
            out = subprocess.run(
                [sys.executable, __file__, "--one"],
                check=True,
                text=True,
                capture_output=True,
                env=tiny.child_env(**variables),
            ).stdout
            found = {c: Fingerprint(*v) for c, v in json.loads(out.splitlines()[-1]).items()}
            print(f"{label:12s} largest relative difference {_spread(found):.2e}")
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        print("EXPECTED = {")
        for case, found in _all().items():
            print(f"    {case!r}: ({found.weights!r},\n        {found.logs!r}),")
        print("}")
