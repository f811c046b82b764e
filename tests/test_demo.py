"""`python -m keras_mgr.demo` (what `make demo` runs), shrunk to a few epochs."""

import subprocess
import sys

import keras

from keras_mgr import demo


def test_demo_announces_phases_shows_progress_and_ends_with_a_table():
    cmd = [sys.executable, "-m", "keras_mgr.demo", "--gan_epochs=4", "--epochs=4",
           "--image_size=16", "--seeds=1", "--modes=base,pcr", "--progress_lines=2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Expected: about" in out and "idle 2-core CPU" in out
    backend = keras.backend.backend()  # the child's too (KERAS_BACKEND, set by conftest)
    assert (f"the {backend} backend is slower" in out) == (backend != "tensorflow")
    assert "generator: 4 GAN epochs on the training images only (about" in out
    assert "  pcr: 4 epochs (about" in out
    # Two progress lines per phase (epochs 2 and 4), with the time left.
    assert out.count("epoch    2/4  d_loss") == 1 and out.count("epoch    4/4  loss") == 2
    assert "0 s left" in out
    assert "Test accuracy (%) on 539 test images (one image = 0.19 points):" in out
    assert "One seed: no spread" in out  # the two-seed table: test_results_table_...


def test_results_table_spread_only_with_two_seeds():
    one = demo.results_table({"base": [0.5], "mgr": [0.75]}, num_test=200)
    assert "one image = 0.50 points" in one
    rows = one.splitlines()[1:3]
    assert rows == ["  base      50.00", "  mgr       75.00"]  # no spread, no mean
    assert "One seed: no spread" in one
    two = demo.results_table({"base": [0.5, 0.6], "mgr": [0.75, 0.65]}, num_test=200)
    # mgr: mean 70, sample std 7.07; paired differences +25, +5 -> +15 ± 14.14.
    assert "mean 70.00 ± 7.07" in two and "vs base +15.00 ± 14.14" in two
    assert "One seed" not in two


def test_help_text_is_readable():
    result = subprocess.run([sys.executable, "-m", "keras_mgr.demo", "--help"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1)  # absl exits 1 after --help
    assert "stratified tenth of scikit-learn's handwritten digits" in result.stdout
    assert "--progress_lines" in result.stdout
