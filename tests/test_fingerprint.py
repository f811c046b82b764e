"""Numbers that a refactor must keep: every mode's weights and logged losses
after 8 steps on tiny data, recorded from the implementation they guard.

Regenerate only for a deliberate change of the numerics (and say so in the
commit): the values are per-variable sums and sums of squares (compared as
sorted lists: where a variable lives may change, its value may not), and the
last epoch's logs.
"""

import warnings

import keras
import numpy as np
import pytest
import tiny

import keras_mgr

CASES = {
    "base": ("base", {}), "gda": ("gda", {}), "metagda": ("metagda", {}),
    "pcr": ("pcr", {}), "mgr": ("mgr", {}),
    "mgr_fd": ("mgr", {"meta_gradient": "finite_difference"}),
    "mgr_simsiam": ("mgr", {"consistency": "simsiam"}),
}

EXPECTED = {
    "base": (
        [
            (0.0, 0.0), (1.7876704, 1.4610379),
            (0.001061, 9e-07), (4.0015274, 4.0147302),
            (0.0083623, 0.0054319), (-0.0119487, 5.66e-05),
            (1.8141741, 0.8233614), (-1.4119926, 2.9898366),
            (0.0161488, 0.0011814), (-0.2203001, 0.0108754),
            (4.0562077, 17.2948764), (0.0, 0.0),
            (1.0, 1.0), (0.0, 0.0),
        ],
        {
            "accuracy": 0.75,
            "ce_loss": 0.9476355,
            "loss": 0.9476355,
        },
    ),
    "gda": (
        [
            (0.0, 0.0), (1.8480701, 1.4690165),
            (-0.0108088, 6.63e-05), (4.0263126, 4.0644694),
            (0.0416011, 0.0071265), (-0.0154471, 7.21e-05),
            (1.8151443, 0.8242215), (-1.4122417, 2.9725803),
            (-0.0373578, 0.0056036), (-0.2203001, 0.0108754),
            (4.0562077, 17.2948764), (0.0, 0.0),
            (1.0, 1.0), (8.0, 64.0),
        ],
        {
            "accuracy": 0.875,
            "ce_loss": 0.9447898,
            "gda_loss": 1.0964868,
            "loss": 2.0412765,
        },
    ),
    "metagda": (
        [
            (0.0, 0.0), (1.8482619, 1.4690317),
            (-0.0030703, 3.34e-05), (4.0262581, 4.0643573),
            (0.0417087, 0.0071136), (-0.0140172, 7.18e-05),
            (1.8151455, 0.8242225), (-1.4122658, 2.9725356),
            (-0.0373586, 0.0056037), (-0.2203001, 0.0108754),
            (4.0562077, 17.2948764), (0.0, 0.0),
            (1.9544579, 8.4191957), (-0.0091202, 5.2e-05),
            (6.9859673, 8.1982299), (-0.0008356, 2.35e-05),
            (-0.0905929, 0.0005178), (-0.0176158, 9.05e-05),
            (1.0, 1.0), (8.0, 64.0),
            (-41.8613048, 95.8698516), (7.0, 11.0),
            (8.0, 64.0),
        ],
        {
            "accuracy": 0.875,
            "ce_loss": 0.9447922,
            "gda_loss": 1.0965053,
            "latent_shift": 0.0225134,
            "loss": 2.0412974,
            "meta_grad_norm": 0.0003409,
            "meta_loss": 0.9374706,
        },
    ),
    "pcr": (
        [
            (0.0, 0.0), (1.5208544, 1.4405952),
            (-0.0132953, 6.68e-05), (3.9452152, 3.903341),
            (0.0017867, 0.0051688), (-0.0152817, 7.6e-05),
            (1.8121975, 0.8216), (-1.4004837, 2.9856046),
            (0.0161952, 0.0012065), (-0.2203001, 0.0108754),
            (4.0562077, 17.2948764), (0.0, 0.0),
            (17.0, 257.0), (8.0, 64.0),
        ],
        {
            "accuracy": 0.78125,
            "ce_loss": 0.9543567,
            "loss": 1.0045524,
            "pcr_loss": 0.0501957,
        },
    ),
    "mgr": (
        [
            (0.0, 0.0), (1.523329, 1.4406664),
            (-0.0123308, 4.03e-05), (3.9457102, 3.9043295),
            (0.0017942, 0.0051714), (-0.0151805, 7.91e-05),
            (1.8121981, 0.8216004), (-1.4004401, 2.9855978),
            (0.0161952, 0.0012065), (-0.2203001, 0.0108754),
            (4.0562077, 17.2948764), (0.0, 0.0),
            (2.0060066, 8.326101), (-0.0503505, 0.0033294),
            (6.9025258, 8.3164469), (0.0147429, 0.0036976),
            (0.519364, 0.0411645), (0.1213838, 0.0037638),
            (17.0, 257.0), (8.0, 64.0),
            (-41.8613048, 95.8698516), (7.0, 11.0),
            (8.0, 64.0),
        ],
        {
            "accuracy": 0.78125,
            "ce_loss": 0.9543542,
            "latent_shift": 0.163972,
            "loss": 1.0036881,
            "meta_grad_norm": 0.0006615,
            "meta_loss": 0.9480503,
            "pcr_loss": 0.0493339,
        },
    ),
    "mgr_fd": (
        [
            (0.0, 0.0), (1.5233425, 1.4406683),
            (-0.0118441, 5.13e-05), (3.9457172, 3.9043435),
            (0.0017971, 0.0051713), (-0.0150793, 7.42e-05),
            (1.8121982, 0.8216005), (-1.40044, 2.9855977),
            (0.0161952, 0.0012065), (-0.2203001, 0.0108754),
            (4.0562077, 17.2948764), (0.0, 0.0),
            (2.0009781, 8.3229037), (-0.0528262, 0.0033941),
            (6.8936426, 8.3110731), (0.0130397, 0.0037213),
            (0.5119479, 0.0409924), (0.1199077, 0.0036934),
            (17.0, 257.0), (8.0, 64.0),
            (-41.8613048, 95.8698516), (7.0, 11.0),
            (8.0, 64.0),
        ],
        {
            "accuracy": 0.78125,
            "ce_loss": 0.954354,
            "latent_shift": 0.163216,
            "loss": 1.0036817,
            "meta_grad_norm": 0.0006597,
            "meta_loss": 0.9480499,
            "pcr_loss": 0.0493277,
        },
    ),
    "mgr_simsiam": (
        [
            (0.0, 0.0), (1.8590874, 1.4785169),
            (-0.0096628, 0.0001377), (4.0935326, 4.202884),
            (-0.0041284, 0.0058079), (-0.0169193, 0.0001012),
            (1.815374, 0.8243885), (-1.4223683, 2.9948613),
            (0.01656, 0.0014508), (-0.2203001, 0.0108754),
            (4.0562077, 17.2948764), (0.0, 0.0),
            (3.5226908, 8.0472344), (-0.0074559, 0.0071742),
            (3.9674703, 8.0049499), (-0.0882294, 0.0083651),
            (-0.0400849, 0.041681), (0.0036329, 0.0040676),
            (17.0, 257.0), (0.3888024, 9.7085317),
            (257.0892134, 258.5534961), (1.0311802, 0.3823609),
            (192.6759931, 352.9996707), (0.9419774, 0.3797708),
            (-2.8371516, 130.72676), (64.0953956, 64.2853717),
            (0.3757853, 0.1043775), (53.421649, 127.5882546),
            (1.3210175, 0.5276442), (8.0, 64.0),
            (-41.8613048, 95.8698516), (7.0, 11.0),
            (8.0, 64.0),
        ],
        {
            "accuracy": 0.71875,
            "ce_loss": 0.9480582,
            "latent_shift": 0.1400019,
            "loss": 1.337208,
            "meta_grad_norm": 3.62e-05,
            "meta_loss": 0.941152,
            "pcr_loss": 0.3891498,
        },
    ),
}


def fingerprint(mode, options):
    keras.utils.set_random_seed(0)
    finder = dict(meta_every=1, meta_batch_size=8, finder_hidden_dim=8) if mode in (
        "mgr", "metagda") else {}
    model = keras_mgr.wrap(tiny.backbone(norm="keras"), tiny.generator(), mode=mode, seed=0,
                           **finder, **options)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = tiny.data(32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BatchNorm after 8 steps
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history
    weights = [(float(np.sum(v.numpy(), dtype="float64")),
                float(np.sum(np.square(v.numpy(), dtype="float64")))) for v in model.weights]
    return weights, {k: float(v[-1]) for k, v in sorted(history.items())}


@pytest.mark.parametrize("case", sorted(CASES))
def test_numbers_are_those_recorded(case):
    weights, logs = fingerprint(*CASES[case])
    expected_weights, expected_logs = EXPECTED[case]
    assert len(weights) == len(expected_weights)
    # Sorted: moving a variable into another layer may change the order only.
    np.testing.assert_allclose(sorted(weights), sorted(map(tuple, expected_weights)),
                               rtol=1e-4, atol=1e-6)
    assert logs.keys() == expected_logs.keys()
    np.testing.assert_allclose([logs[k] for k in logs], [expected_logs[k] for k in logs],
                               rtol=1e-4, atol=1e-6)
