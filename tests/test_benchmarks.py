"""Smoke tests of benchmarks/: CSV rows, resume, reports, paper.py on mock TFDS.

Correctness only, never timing; every configuration is shrunk to a few steps.
"""

import csv
import os
import subprocess
import sys

import _common  # benchmarks/ is importable: pytest's pythonpath in pyproject.toml
import accuracy
import numpy as np
import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks")


def _settings(tmp_path, **overrides):
    s = {"dataset": "digits", "data_dir": None, "ratios": ["0.1"], "seeds": ["0"],
         "modes": ["base", "gda"], "gan_steps": 2, "steps": 2, "batch_size": 16,
         "image_size": 16, "learning_rate": 1e-3, "options": [], "config": None,
         "out": str(tmp_path), "name": "acc", "cache": str(tmp_path / "gen")}
    s.update(overrides)
    return s


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow  # trains GANs, a judge and classifiers; the pieces have fast tests below
def test_accuracy_quick_cli_writes_csv_table_and_plot(tmp_path):
    """`accuracy.py --quick`, shrunk further by flags (ratio, modes, steps)."""
    out = tmp_path / "out"
    cmd = [sys.executable, os.path.join(BENCHMARKS, "accuracy.py"), "--quick",
           "--ratios=0.1,0.5", "--modes=base,mgr", "--gan_steps=2", "--steps=3",
           "--image_size=16", "--judge_steps=4", f"--out={out}",
           f"--cache={tmp_path / 'gen'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _read(out / "accuracy_quick.csv")
    assert sorted((r["ratio"], r["mode"]) for r in rows) == sorted(
        (r, m) for r in ("0.1", "0.5") for m in ("base", "mgr"))
    for row in rows:
        assert set(_common.FIELDS) <= set(row)
        assert 0.0 <= float(row["accuracy"]) <= 1.0
        assert row["seed"] == "0" and row["steps"] == "3"
    assert int(rows[0]["epochs"]) >= 1
    table = (out / "accuracy_quick.md").read_text()
    assert "| mode | 10% data | 50% data |" in table
    assert "| mgr | " in table and "(n=1)" in table
    assert (out / "accuracy_quick.png").stat().st_size > 1000
    # One generator per (ratio, seed), shared by the modes, and one judge.
    assert len(os.listdir(tmp_path / "gen")) == 3
    quality = _read(out / "accuracy_quick_generators.csv")
    assert sorted(r["ratio"] for r in quality) == ["0.1", "0.5"]
    for row in quality:
        assert 0.0 <= float(row["accuracy"]) <= 1.0 and float(row["fid"]) > 0.0
    assert "| generated-sample accuracy | " in table and "| FID vs real test | " in table


def _child(code, tag, env=None):
    """Runs `code` in a fresh Python in benchmarks/ (TensorFlow's allocator is
    chosen when it loads); returns the fields of its line starting with `tag`,
    and its whole output."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env or dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                         cwd=BENCHMARKS, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return [line.split() for line in out.stdout.splitlines() if line.startswith(tag)][0], (
        out.stdout)


def _no_gan(monkeypatch):
    """Training is faked in the resume tests (the CLI test trains for real)."""
    monkeypatch.setattr(_common, "cached_generator", lambda *a, **k: (None, 0.0))


def test_resume_skips_finished_runs(tmp_path, monkeypatch):
    _no_gan(monkeypatch)
    s = _settings(tmp_path)
    monkeypatch.setattr("keras_mgr.demo.train_classifier", lambda *a, **k: 0.25)
    rows = accuracy.run_grid(s)
    assert [(r["mode"], r["accuracy"]) for r in rows] == [("base", "0.2500"),
                                                          ("gda", "0.2500")]

    def fail(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("keras_mgr.demo.train_classifier", fail)
    assert len(accuracy.run_grid(s)) == 2  # nothing re-run, nothing appended
    # A new seed or option is a new run; the finished ones still are skipped.
    calls = []
    monkeypatch.setattr("keras_mgr.demo.train_classifier",
                        lambda *a, **k: calls.append((a[2], a[3], k)) or 0.5)
    rows = accuracy.run_grid(dict(s, seeds=["0", "1"], options=["pcr_weight=0.5"]))
    assert sorted(c[:2] for c in calls) == [("base", 0), ("base", 1), ("gda", 0), ("gda", 1)]
    assert all(c[2] == {"pcr_weight": 0.5} for c in calls)
    assert len(rows) == 6
    assert {r["config"] for r in rows} == {"defaults", "pcr_weight=0.5"}
    table = accuracy.write_report(rows, s["out"], "acc")
    assert "gda [pcr_weight=0.5]" in table and "50.00 ± 0.00 (n=2)" in table


def test_generator_quality_recorded_once_per_subset_with_a_cached_judge(tmp_path,
                                                                          monkeypatch):
    import tiny

    from keras_mgr.datasets import Dataset

    x, y = tiny.data(30)
    data = Dataset(x, y, x, y)
    monkeypatch.setattr("keras_mgr.datasets.load", lambda *a, **k: data)  # the whole pool
    s = _settings(tmp_path, image_size=8)
    path = str(tmp_path / "q.csv")
    for _ in range(2):  # the second call finds the subset scored and skips it
        _common.record_generator_quality(path, tiny.generator(), data, s, "per_class", 10,
                                         0, judge_steps=2)
    rows = _read(path)
    assert len(rows) == 1 and rows[0]["per_class"] == "10" and rows[0]["ratio"] == ""
    assert 0.0 <= float(rows[0]["accuracy"]) <= 1.0 and float(rows[0]["fid"]) >= 0.0
    assert os.listdir(tmp_path / "gen") == ["judge_digits_i8_j2.weights.h5"]


def test_per_class_sizes_with_their_own_step_budgets(tmp_path, monkeypatch):
    _no_gan(monkeypatch)
    calls = []

    def train(data, generator, mode, seed, epochs, batch_size, learning_rate, **kwargs):
        calls.append((len(data.y_train), epochs))
        return 0.5 if len(data.y_train) == 50 else 0.75

    s = _settings(tmp_path, per_class=["5", "10"], size_steps=["8", "21"], modes=["base"])
    rows = accuracy.run_grid(s, train=train)
    # 5/class: 50 images, 4 steps an epoch -> 2 epochs; 10/class: 7 an epoch -> 3.
    assert calls == [(50, 2), (100, 3)]
    assert [(r["per_class"], r["ratio"], r["steps"]) for r in rows] == [
        ("5", "", "8"), ("10", "", "21")]
    assert "per_class=5" in rows[0]["key"] and "ratio" not in rows[0]["key"]
    table = accuracy.write_report(rows, s["out"], "acc")
    assert "| mode | 5/class | 10/class |" in table
    assert "| base | 50.00 ± 0.00 (n=1) | 75.00 ± 0.00 (n=1) |" in table
    with pytest.raises(ValueError, match=r"one value per size \(2\)"):
        accuracy.run_grid(dict(s, size_steps=["8"]), train=train)


def _train_kwargs(tmp_path, monkeypatch, option):
    """`(keyword arguments train() received, CSV rows)` of an mgr run with `option`."""
    _no_gan(monkeypatch)
    seen = []

    def train(data, generator, mode, seed, epochs, batch_size, learning_rate, **kwargs):
        seen.append(kwargs)
        return 0.5

    rows = accuracy.run_grid(_settings(tmp_path, modes=["mgr"], options=[option]), train=train)
    return seen, rows


def test_finder_optimizer_option_reaches_compile(tmp_path, monkeypatch):
    seen, rows = _train_kwargs(tmp_path, monkeypatch, "finder_optimizer=adam:0.01:1e-6")
    optimizer = seen[0].pop("finder_optimizer")
    assert seen == [{}]
    assert type(optimizer).__name__ == "Adam" and optimizer.epsilon == 1e-6
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    assert rows[0]["options"] == "finder_optimizer=adam:0.01:1e-6"
    assert type(_common.finder_optimizer("sgd:100")).__name__ == "SGD"
    with pytest.raises(ValueError, match=r"'adam:LR:EPS' or 'norm:LR'. Received: 'sgd'"):
        _common.finder_optimizer("sgd")


def test_normalized_finder_optimizer_steps_by_learning_rate():
    # Gradients (3, 0) and (4,): global norm 5, so a step of 0.5 moves the
    # variables by -0.5 * (0.6, 0) and -0.5 * 0.8, whatever the gradient's scale.
    import keras

    optimizer = _common.finder_optimizer("norm:0.5")
    a, b = keras.Variable([1.0, 1.0]), keras.Variable([2.0])
    optimizer.apply([keras.ops.array([3e-6, 0.0]), keras.ops.array([4e-6])], [a, b])
    np.testing.assert_allclose(a.numpy(), [0.7, 1.0], rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), [1.6], rtol=1e-6)


def test_view_strength_option_reaches_wrap(tmp_path, monkeypatch):
    seen, rows = _train_kwargs(tmp_path, monkeypatch, "view_strength=2")
    (views,) = [kw.pop("augmentation") for kw in seen]
    assert seen == [{}] and rows[0]["options"] == "view_strength=2"
    assert (views.translate, views.brightness, views.contrast) == (0.25, 0.2, 0.2)
    with pytest.raises(ValueError, match=r"view_strength must be in \(0, 8\). Received: 0"):
        _common.view_augmentation(0, (-1.0, 1.0), 0)


def test_confidence_interval_by_hand():
    # mean 2, sample std 1, t(0.975, 2) = 4.3027, half-width 4.3027 / sqrt(3) = 2.4841
    mean, low, high = _common.confidence_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert low == pytest.approx(2 - 2.4841, abs=1e-4)
    assert high == pytest.approx(2 + 2.4841, abs=1e-4)


def test_report_paired_intervals_to_base_and_pcr(tmp_path):
    accuracies = {"base": [0.70, 0.72, 0.74], "pcr": [0.71, 0.74, 0.74],
                  "mgr": [0.73, 0.75, 0.78]}
    rows = [{"config": "defaults", "mode": mode, "ratio": "", "per_class": "10",
             "seed": str(seed), "accuracy": str(a)}
            for mode, values in accuracies.items() for seed, a in enumerate(values)]
    table = accuracy.write_report(rows, str(tmp_path), "r", also=[("defaults", "pcr")])
    # mgr - base per seed: 3, 3, 4 -> mean 3.33, std 0.577, half-width 4.3027 * 0.577 / 1.732
    assert "Paired difference to base" in table and "Paired difference to pcr" in table
    assert "| mgr | +3.33 [+1.90, +4.77] (n=3) |" in table
    # mgr - pcr per seed: 2, 1, 4 -> mean 2.33, std 1.528, half-width 3.795
    assert "| mgr | +2.33 [-1.46, +6.13] (n=3) |" in table


def test_holdout_option_moves_a_stratified_part_to_meta_validation(tmp_path, monkeypatch):
    _no_gan(monkeypatch)
    calls = []

    def train(data, generator, mode, seed, epochs, batch_size, learning_rate, **kwargs):
        calls.append((len(data.y_train), epochs, kwargs))
        return 0.5

    s = _settings(tmp_path, modes=["mgr"], steps=20, options=["meta_validation_fraction=0.25"])
    accuracy.run_grid(s, train=train)
    (n_train, epochs, kwargs), = calls
    x_held, y_held = kwargs.pop("meta_validation_data")
    assert kwargs == {}  # the benchmark-only option is not passed to wrap()
    # digits at 10%: 10 classes; a quarter of each class is held out.
    assert sorted(set(y_held.tolist())) == list(range(10))
    assert n_train + len(y_held) == 128 and 0.2 < len(y_held) / 128 < 0.3
    assert epochs == -(-20 // -(-n_train // 16))  # the step budget is kept
    assert x_held.shape[1:] == (16, 16, 1)
    rows = _read(tmp_path / "acc.csv")
    assert rows[0]["options"] == "meta_validation_fraction=0.25"
    assert rows[0]["num_train"] == str(n_train) and rows[0]["epochs"] == str(epochs)
    # The control drops the same examples and passes nothing to wrap().
    calls.clear()
    accuracy.run_grid(dict(s, options=["drop_fraction=0.25"]), train=train)
    assert calls == [(n_train, epochs, {})]


def test_summary_mean_and_std():
    rows = [{"mode": "mgr", "accuracy": a} for a in ("0.9", "0.8", "1.0")]
    mean, std, n = _common.summarize(rows, ["mode"])[("mgr",)]
    assert mean == pytest.approx(0.9) and std == pytest.approx(0.1) and n == 3  # n - 1


def test_parse_options():
    assert _common.parse_options(["consistency=cosine", "meta_every=5",
                                  "finder_learning_rate=1e-2"]) == {
        "consistency": "cosine", "meta_every": 5, "finder_learning_rate": 0.01}
    with pytest.raises(ValueError, match="name=value"):
        _common.parse_options(["cosine"])


def test_ablation_copies_identical_runs_and_runs_variants(tmp_path, monkeypatch):
    import ablation

    _no_gan(monkeypatch)
    s = _settings(tmp_path, name="abl")
    source = tmp_path / "acc.csv"
    options = _common.options_string(ablation.VARIANTS["meta_every_1"])
    key = _common.run_key(dataset="digits", ratio=0.1, seed=0, mode="mgr",
                          options=options, steps=2, gan_steps=2, batch_size=16,
                          image_size=16, learning_rate=1e-3, backbone="small_cnn")
    _common.append_row(str(source), {"key": key, "mode": "mgr", "options": options,
                                     "ratio": 0.1, "seed": 0, "accuracy": 0.75})
    calls = []
    monkeypatch.setattr("keras_mgr.demo.train_classifier",
                        lambda *a, **k: calls.append((a[2], k)) or 0.5)
    rows = ablation.run_ablation(s, ["meta_every_5", "meta_every_1"], reuse=str(source))
    # Variants are written out in full, independent of wrap()'s defaults.
    assert ablation.VARIANTS["meta_every_5"] == {
        "meta_every": 5, "finder_learning_rate": 1e-3, "finder_max_shift": None}
    assert calls == [("mgr", ablation.VARIANTS["meta_every_5"])]  # the other one copied
    assert {r["config"]: float(r["accuracy"]) for r in rows} == {
        "meta_every_5": 0.5, "meta_every_1": 0.75}
    with pytest.raises(ValueError, match="Unknown variant"):
        ablation.run_ablation(s, ["no_such_variant"])


@pytest.mark.slow  # times real steps; test_speed_parse_config is the fast check
def test_speed_quick_cli(tmp_path):
    cmd = [sys.executable, os.path.join(BENCHMARKS, "speed.py"), "--quick",
           "--configs=base,mgr:inf,mgr", "--throughput=base", "--steps=1",
           "--image_size=16", "--batch_size=8", f"--out={tmp_path}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    md = (tmp_path / "speed_cpu_xlaoff_quick.md").read_text()
    for line in ("| base | ", "| mgr:inf | ", "| mgr | ",
                 "| meta step (mgr:1 - mgr:inf) |", "| PCR: two views, forward + backward |",
                 "## fit throughput"):
        assert line in md, (line, md, result.stdout[-2000:])
    assert os.path.exists(tmp_path / "speed_cpu_xlaoff_quick.json")
    assert "## Machine" in md and "TensorFlow oneDNN:" in md


def test_speed_parse_config():
    import speed

    assert speed.parse_config("mgr:5+pool@16") == ("mgr", 5, True, 16)
    assert speed.parse_config("base") == ("base", 1, False, None)
    assert speed.parse_config("mgr:inf")[1] == 10**9
    assert speed.parse_config("mgr:5/fd") == ("mgr", 5, False, None)
    assert speed.parse_config("mgr:auto/mbauto") == ("mgr", "auto", False, None)
    assert speed.config_options("mgr:auto/mbauto")["meta_microbatches"] == "auto"
    assert speed.config_options("mgr")["fused_batchnorm"] == "auto"
    assert speed.config_options("mgr/kerasbn")["fused_batchnorm"] is False


@pytest.mark.slow  # resnet18 in two modes; test_paper_backbones is the fast check
def test_paper_end_to_end_on_mock_tfds(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    import paper

    s = _settings(tmp_path, ratios=["1.0"], modes=["base", "mgr"], image_size=16,
                  batch_size=8, steps=2, gan_steps=2, name="paper")
    with tfds.testing.mock_data(num_examples=24):
        tables = paper.run(s, ["pets", "aircraft"], "resnet18", width=4,
                           gan_image_size=8)
    assert list(tables) == ["pets"]  # aircraft: not in TFDS, skipped without a folder
    rows = _read(tmp_path / "paper_pets.csv")
    assert [r["mode"] for r in rows] == ["base", "mgr"]
    assert {r["backbone"] for r in rows} == {"resnet18_w4"}
    assert "gan_image_size=8" in rows[0]["key"]
    assert "| mgr | " in (tmp_path / "paper.md").read_text()
    assert (tmp_path / "paper_pets.png").exists()


def test_paper_backbones():
    import paper

    net = paper.make_backbone("MobileNetV3Small", (32, 32, 3), weights=None)
    assert len(net.output_shape) == 2
    assert paper.make_backbone("resnet18", (16, 16, 3), width=4).output_shape == (None, 32)
    # keras-cv (a test extra): its generic ResNetBackbone, built offline.
    pytest.importorskip("keras_cv")
    net = paper.make_backbone(
        "keras_cv:ResNetBackbone", (32, 32, 3), stackwise_filters=[64, 128],
        stackwise_blocks=[1, 1], stackwise_strides=[1, 2], block_type="basic_block",
        include_rescaling=False)
    assert net.output_shape == (None, 128) and net.name == "keras_cv_ResNetBackbone"
    with pytest.raises(ValueError, match="Unknown backbone 'NoSuchNet'"):
        paper.make_backbone("NoSuchNet", (32, 32, 3))


@pytest.mark.slow  # a CLI process (28 s); the probe has the fast test below
def test_finder_signal_end_to_end(tmp_path):
    cmd = [sys.executable, os.path.join(BENCHMARKS, "finder_signal.py"), "--dataset=digits",
           "--per_class=10", "--seeds=0", "--steps=14", "--probe_every=1", "--gan_steps=2",
           "--image_size=16", "--batch_size=16", f"--out={tmp_path}",
           f"--cache={tmp_path / 'gen'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _read(tmp_path / "finder_signal.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]  # 14 steps = 2 epochs of 7
    for row in rows:
        for field in ("cos_val", "cos_all", "dl_same", "dl_indep", "dl_rand_indep"):
            assert np.isfinite(float(row[field])), (field, row)
        assert -1.0 <= float(row["cos_val"]) <= 1.0
    assert rows[0]["cos_prev"] == "" and rows[1]["cos_prev"] != ""
    md = (tmp_path / "finder_signal.md").read_text()
    assert "| 10 | defaults | first half | 1 | - |" in md  # epoch 1 of 2
    assert "| 10 | defaults | second half | 1 | " in md


def _trained_mgr():
    """A tiny mgr model after one epoch (its buffer full), and its data."""
    import tiny

    import keras_mgr
    from keras_mgr.datasets import Dataset

    x, y = tiny.data(24)
    data = Dataset(x, y, x, y)
    model = keras_mgr.wrap(tiny.backbone(), tiny.generator(), num_classes=3, seed=0,
                           meta_every=1, meta_batch_size=4, finder_hidden_dim=8)
    model.compile(optimizer="adam")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    return model, data


def test_finder_signal_probe_leaves_the_run_untouched():
    """A probe restores every weight, optimizer slot and random stream it touched."""
    import finder_signal
    model, data = _trained_mgr()
    variables = list(model.variables) + list(model.finder_optimizer.variables)
    before = [v.numpy().copy() for v in variables]
    row = finder_signal.Probe(model, data, batch_size=8, seed=0)()
    assert row["meta_grad_norm"] > 0 and np.isfinite(row["dl_indep"])
    for v, value in zip(variables, before):
        np.testing.assert_array_equal(v.numpy(), value, err_msg=v.path)
    # Held-out validation (--holdout): the probe's validation batches come from it.
    import tiny

    x_held, y_held = tiny.data(8, seed=5)
    probe = finder_signal.Probe(model, data, batch_size=8, seed=0, validation=(x_held, y_held))
    _, _, (x1, _), (x2, _) = probe.fixed
    held = {row.tobytes() for row in x_held}
    assert len(x1) == len(x2) == 4  # meta_batch_size 4, disjoint halves of 8
    assert {row.tobytes() for row in np.concatenate([x1, x2])} == held


def test_signal_curve_averages_groups_of_k_and_leaves_the_run_untouched(monkeypatch):
    """cos of group means, by hand: g = [1,0], [0,1] | [1,0], [1,1] (max k = 2).
    k = 1: (cos(g0, g2) + cos(g1, g3)) / 2 = (1 + 0.7071) / 2; k = 2:
    cos([.5, .5], [1, .5]) = 0.75 / (0.7071 * 1.1180) = 0.9487. Then a real probe
    restores every weight it touched and gives finite numbers."""
    import signal_curve
    model, data = _trained_mgr()
    curve = signal_curve.Curve(model, data, 8, 0, None, ["all"], [1, 2], 0.05)
    fake = iter([[np.array([1.0, 0.0])], [np.array([0.0, 1.0])], [np.array([1.0, 0.0])],
                 [np.array([1.0, 1.0])]])
    with monkeypatch.context() as patch:
        patch.setattr(curve, "meta_gradient", lambda *args: next(fake))
        patch.setattr(curve, "_loss_change", lambda *args: 0.0)
        rows = curve()
    assert [(r["k"], r["pairs"]) for r in rows] == [(1, 2), (2, 1)]
    np.testing.assert_allclose([r["cos"] for r in rows], [(1 + 0.5**0.5) / 2, 0.9486833],
                               rtol=1e-6)
    variables = list(model.variables) + list(model.finder_optimizer.variables)
    before = [v.numpy().copy() for v in variables]
    rows = signal_curve.Curve(model, data, 8, 0, None, [4, "all"], [1, 2], 0.05)()
    assert len(rows) == 4 and all(-1 <= r["cos"] <= 1 and np.isfinite(r["dl"]) for r in rows)
    for v, value in zip(variables, before):
        np.testing.assert_array_equal(v.numpy(), value, err_msg=v.path)


def test_speed_measures_memory_on_a_fresh_machine():
    # speed.py turns on TensorFlow's CPU allocator statistics before TF loads.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    code = ("import os, resource, speed; rss, warmup = {}, {}; "
            "s, m, _, _ = speed.measure(['base'], (8, 8, 1), 2, 1, 8, rss=rss, warmup=warmup); "
            "print('MEMORY', m['base'], os.environ['TF_CPU_ALLOCATOR_USE_BFC'], "
            "rss['steps_peak'], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "
            "warmup['base'])")
    line, _ = _child(code, "MEMORY", env)
    assert float(line[1]) > 0 and line[2] == "true"
    # The peak over the timed steps (mark reset after the warm-up): at least
    # TensorFlow's own footprint, at most the whole process's peak (getrusage's
    # peak lags the kernel's VmHWM by a few pages: 1% slack).
    assert 100 * 2**20 < int(line[3]) <= 1.01 * int(line[4])
    assert float(line[5]) > 0  # the warm-up (tracing) is timed


def test_speed_without_allocator_statistics_fails_loudly(monkeypatch):
    import speed

    def unavailable(device):
        raise ValueError("Allocator stats not available")

    monkeypatch.setattr(speed.tf.config.experimental, "get_memory_info", unavailable)
    with pytest.raises(RuntimeError, match=r"no peak memory: on CPU set "
                                           r"TF_CPU_ALLOCATOR_USE_BFC=true.*Allocator stats"):
        speed._memory()


def test_speed_with_the_default_allocator_reports_no_memory_column(monkeypatch):
    # TF_CPU_ALLOCATOR_USE_BFC=false (process RSS against another framework):
    # the allocator column is "-", never a 0.
    import speed

    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", "false")
    monkeypatch.setattr(speed.tf.config, "list_physical_devices", lambda kind=None: [])
    assert speed._memory() == ("CPU:0", None)
    f = {"batch_size": 8, "synthetic_batch_size": 0, "image_size": 8, "channels": 1,
         "steps": 1, "rounds": 1, "jit_compile": False, "networks": "peer"}
    md = speed.report(f, {"base": 0.5}, {"base": None}, {}, {}, "CPU:0", 3 * 2**20)
    assert "| base | 500.0 | 1.00 | - | - | - |" in md and "Process peak RSS: 3 MiB." in md


def test_gpu_check_relative_difference_and_report_by_hand():
    import gpu_check

    # Per array max|a - b| / max(max|a|, max|b|): 0.1 / 2.0 = 0.05 and 0.01 / 0.02.
    assert gpu_check.max_relative_difference(
        [np.array([1.0, 2.0]), np.array([0.0, 0.01])],
        [np.array([1.1, 2.0]), np.array([0.0, 0.02])]) == pytest.approx(0.5)
    assert gpu_check.max_relative_difference([np.array([1.0, 2.0])],
                                             [np.array([1.1, 2.0])]) == pytest.approx(0.05)
    assert gpu_check.max_relative_difference([], []) == 0.0
    results = {
        "device": "GPU:0", "tiny": False, "image_shape": (32, 32, 1), "batch": 32,
        "seconds": 200.0, "realistic_size": (96, 64),
        "agreement": {"mgr": {"classifier": 3e-6, "finder": 1e-2,
                              "losses": {"loss": (1.5, 1.5000001)}}},
        "cost": {"False": {"mgr": (0.030, 100.0)}, "True": {"mgr": (0.012, 80.0)}},
        "realistic": {"False": (0.2, 900.0), "True": (0.1, 700.0)},
    }
    text = gpu_check.report(results)
    assert "| mgr | 3.00e-06 | 1.00e-02 | 1.50000 / 1.50000 |" in text
    assert "| mgr | 30.0 | 12.0 | 2.50x | 100.0 | 80.0 |" in text
    assert "| XLA speed-up | 2.00x | |" in text
    # JAX without XLA has no compiled step, so no memory: "-", never 0.
    results["backend"] = "jax"
    results["cost"]["False"]["mgr"] = (0.030, None)
    results["realistic"]["False"] = (0.2, None)
    text = gpu_check.report(results)
    assert "# GPU check on GPU:0, jax" in text
    assert "| mgr | 30.0 | 12.0 | 2.50x | - | 80.0 |" in text and "| no XLA | 200.0 | - |" in text


@pytest.mark.slow  # compiles every mode with XLA on CPU; the test above checks the tables
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_gpu_check_tiny_cli(tmp_path, backend):
    """The GPU check runs on each backend; on JAX without TensorFlow's
    allocator (the GPU machine has no TensorFlow)."""
    cmd = [sys.executable, os.path.join(BENCHMARKS, "gpu_check.py"), "--tiny",
           f"--out={tmp_path}", "--check_modes=base,mgr", f"--backend={backend}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=backend)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    suffix = "" if backend == "tensorflow" else "_jax"
    text = (tmp_path / f"gpu_check_cpu{suffix}_tiny.md").read_text()
    assert "## Machine" in text and "- CPU: " in text
    rows = [line for line in text.splitlines() if line.startswith("| mgr |")]
    assert len(rows) == 2  # agreement and cost
    # XLA agrees with the plain step: losses to round-off; weights within what
    # Adam's normalisation makes of round-off in near-zero gradients (2e-4 here).
    cells = rows[0].split("|")
    assert float(cells[2]) < 1e-2
    plain, xla = map(float, cells[4].split("/"))
    assert xla == pytest.approx(plain, rel=1e-4)


def test_peer_networks_match_the_reference_parameter_counts():
    # speed.py --networks=peer: the PyTorch reference step's networks, same sizes.
    from peer_networks import count, peer_backbone, peer_generator, peer_wrap_options

    import keras_mgr

    backbone, generator = peer_backbone((32, 32, 1)), peer_generator()
    model = keras_mgr.wrap(backbone, generator, seed=0, **peer_wrap_options())
    assert count(backbone.trainable_weights) == 306_784
    # PyTorch counts BatchNorm's scale and offset, not its moving statistics.
    assert count([w for w in generator.weights if "moving" not in w.path]) == 427_585
    assert count(model.head.trainable_weights) == 1_290
    assert count(model.finder.trainable_weights) == 16_576  # one hidden layer of 128
    assert len(model.finder.hidden) == 1 and not model.finder.conditional
    assert generator(
        [np.zeros((2, 64), "float32"), np.array([0, 9], "int32")]).shape == (2, 32, 32, 1)


def test_speed_builds_the_peer_networks():
    import speed

    generator = speed.make_generator("peer", (32, 32, 1))
    mgr = speed.build("mgr:5", (32, 32, 1), generator, 4, 0, False, networks="peer")
    pcr = speed.build("pcr", (32, 32, 1), generator, 4, 0, False, networks="peer")
    assert (mgr.backbone.name, mgr.generator.name, mgr.meta_every) == (
        "peer_backbone", "peer_generator", 5)
    assert len(mgr.finder.hidden) == 1 and mgr.regularizer.augmentation.brightness == 0.0
    assert pcr.finder is None and pcr.regularizer.augmentation.brightness == 0.0


@pytest.mark.slow  # a process timing a step; test_speed_builds_the_peer_networks is the fast check
def test_speed_times_the_peer_networks():
    code = ("import speed; s, m, models, _ = speed.measure(['mgr'], (32, 32, 1), 1, 1, 4,"
            " networks='peer'); mgr = models['mgr'];"
            " print('PEER', mgr.backbone.name, mgr.generator.name, len(mgr.finder.hidden),"
            " mgr.regularizer.augmentation.brightness, s['mgr'] > 0, m['mgr'] > 0)")
    line, _ = _child(code, "PEER")
    assert line[1:] == ["peer_backbone", "peer_generator", "1", "0.0", "True", "True"]


def test_against_torch_report_pairs_each_mode_with_the_reference(tmp_path):
    import json

    import against_torch

    folder = tmp_path / "against_torch"
    modes = list(against_torch.MODES.items())
    references = list(dict.fromkeys(m for _, m in modes))  # /mb4 shares its mode
    for r, scale in ((1, 1.0), (2, 2.0)):
        (folder / f"keras_r{r}").mkdir(parents=True)
        torch = {"info": {"torch": "2.13.0+cpu", "threads": 2, "cpu": "Old CPU", "cpus": 2},
                 "eager": [{"mode": m, "median_s": 0.1 * (i + 1), "peak_rss_mb": 100.0 * (i + 1)}
                           for i, m in enumerate(references)]}
        (folder / f"torch_r{r}.json").write_text(json.dumps(torch))
        keras = {"seconds_per_step": {c: scale * 0.05 * (i + 1) for i, (c, _) in enumerate(modes)}}
        (folder / f"keras_r{r}" / "speed_cpu_xlaoff_peer.json").write_text(json.dumps(keras))
    (folder / "keras_rss_mgr").mkdir()
    (folder / "keras_rss_mgr" / "speed_cpu_xlaoff_peer.json").write_text(
        json.dumps({"seconds_per_step": {}, "process_peak_rss_bytes": 600 * 2**20,
                    "steps_peak_rss_bytes": 550 * 2**20}))
    md = against_torch.report(str(folder), rounds=2)
    # keras 0.05 (x1, x2) against torch 0.1: ratios 0.50 and 1.00.
    assert "| base (base) | 0.100 / 0.100 | 0.050 / 0.100 | 0.50 / 1.00 | 100 / - |" in md
    assert "| mgr (mgr k=1) | 0.500 / 0.500 | 0.250 / 0.500 | 0.50 / 1.00 | 500 / 550 (600) |" in md
    # meta_microbatches=4 is timed against the same reference mode.
    assert "| mgr/mb4 (mgr k=1) | 0.500 / 0.500 | 0.350 / 0.700 | 0.70 / 1.40 | 500 / - |" in md
    assert "Peak RSS over the steps" in md
    import shutil

    shutil.rmtree(folder / "keras_rss_mgr")  # a --norss run says so
    md = against_torch.report(str(folder), rounds=2)
    assert "peak RSS was not measured" in md and "Peak RSS over the steps" not in md
    # keras_mgr's runs recorded no machine: the CPU the reference recorded, said so.
    machine = "\n".join(against_torch.machine_section(str(folder)))
    assert "as the PyTorch reference recorded it: Old CPU, 2 CPUs" in machine


def test_against_torch_runs_keras_mgr_under_each_environment_in_every_round(monkeypatch,
                                                                           tmp_path):
    import json
    import types

    import against_torch

    calls = []
    monkeypatch.setattr(against_torch, "_run",
                        lambda cmd, cwd=None, env=None: calls.append((cmd, env)))
    f = types.SimpleNamespace(torch_python="py", rounds=2, torch_args="", backend="tensorflow",
                              batch_size=64, jit_compile=False, steps=10, speed_rounds=3,
                              rss=False, keras_envs=["TF_ENABLE_ONEDNN_OPTS=0 A=b"])
    against_torch.measure(str(tmp_path), "/elsewhere/torch_mgr_step.py", f)
    # torch, keras as it is, keras under the setting; twice.
    outs = [next((a for a in c if a.startswith("--out=")), "torch") for c, _ in calls]
    assert [o.rsplit("/", 1)[-1] for o in outs] == [
        "torch", "keras_r1", "keras_r1_env1", "torch", "keras_r2", "keras_r2_env1"]
    assert calls[2][1]["TF_ENABLE_ONEDNN_OPTS"] == "0" and calls[2][1]["A"] == "b"
    assert "A" not in calls[1][1]  # the setting is not the plain run's
    with pytest.raises(ValueError, match="NAME=VALUE.*Received: 'ONEDNN'"):
        against_torch.environment("ONEDNN")

    # The report: a table for the setting, its ratios against the same torch runs.
    modes = list(against_torch.MODES.items())
    references = list(dict.fromkeys(m for _, m in modes))
    for r in (1, 2):
        torch = {"info": {"torch": "2.13.0+cpu", "threads": 2},
                 "eager": [{"mode": m, "median_s": 0.1 * (i + 1), "peak_rss_mb": 1.0}
                           for i, m in enumerate(references)]}
        (tmp_path / f"torch_r{r}.json").write_text(json.dumps(torch))
        for name, scale in ((f"keras_r{r}", 1.0), (f"keras_r{r}_env1", 3.0 * r)):
            (tmp_path / name).mkdir()
            keras = {"seconds_per_step": {c: scale * 0.05 * (i + 1)
                                          for i, (c, _) in enumerate(modes)},
                     "machine": {"cpu": "Test CPU", "extensions": ["avx2"], "logical_cpus": 2,
                                 "usable_cpus": 2, "onednn": True, "onednn_isa_cap": "",
                                 "intra_op_threads": 0, "inter_op_threads": 0,
                                 "versions": {}, "onednn_choice": "because"}}
            (tmp_path / name / "speed_cpu_xlaoff_peer.json").write_text(json.dumps(keras))
    md = against_torch.report(str(tmp_path), rounds=2, keras_envs=f.keras_envs)
    table = md.split("keras_mgr with `TF_ENABLE_ONEDNN_OPTS=0 A=b`")[1]
    # 0.05 x 3 and x 6 against torch's 0.1: 1.50 and 3.00.
    assert "| base (base) | 0.100 / 0.100 | 0.150 / 0.300 | 1.50 / 3.00 |" in table
    # The machine is keras_mgr's process's, not the driver's.
    machine = "\n".join(against_torch.machine_section(str(tmp_path)))
    assert "Test CPU" in machine and "oneDNN: on (keras_mgr at import: because)" in machine


def test_against_torch_reference_writes_into_the_results_folder(monkeypatch, tmp_path):
    import against_torch

    calls = []
    monkeypatch.setattr(against_torch, "_run",
                        lambda cmd, cwd=None, env=None: calls.append((cmd, cwd)))
    monkeypatch.chdir(tmp_path)
    import types

    f = types.SimpleNamespace(torch_python="py", rounds=1, torch_args="", backend="tensorflow",
                              batch_size=64, jit_compile=False, steps=10, speed_rounds=3,
                              rss=True, keras_envs=[])
    against_torch.measure("results/against_torch", "/elsewhere/torch_mgr_step.py", f)
    cmd, cwd = calls[0]
    # The reference runs from its own folder: a relative --json path would
    # land there (or fail, read-only), not in the results folder.
    assert cwd == "/elsewhere"
    assert cmd[cmd.index("--json") + 1] == str(tmp_path / "results/against_torch/torch_r1.json")
    timed = [a for c, _ in calls if "--rounds=3" in c for a in c if a.startswith("--configs=")]
    assert "mgr/mb4" in timed[0].split("=")[1].split(",")  # timed beside the reference
    assert any("--configs=mgr/mb4" in c for c, _ in calls)  # and alone, for its RSS


def test_against_commit_quotes_bad_input(tmp_path):
    import against_commit

    with pytest.raises(ValueError, match=r"takes mode, :k and @s only\. Received: 'mgr/mb4'"):
        against_commit.build(None, "then", "mgr/mb4", (8, 8, 1), None, 4, "small_cnn")
    with pytest.raises(ValueError, match="git archive failed for commit 'no-such-commit'"):
        against_commit.extract("no-such-commit", str(tmp_path), str(tmp_path))


@pytest.mark.slow  # a child process timing two packages; its bad input has the fast test above
def test_against_commit_times_an_earlier_package_beside_the_working_tree(tmp_path):
    """A repository whose one commit holds a copy of keras_mgr with a marker:
    its configs run that copy (`keras_mgr_then`), the others the working
    tree's, interleaved; the report sets each beside the commit's same
    schedule."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(os.path.join(os.path.dirname(BENCHMARKS), "keras_mgr"), repo / "keras_mgr",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(repo / "keras_mgr" / "__init__.py", "a") as fh:
        fh.write("\nTHEN_MARKER = 'from the commit'\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "keras_mgr"], ["commit", "-q", "-m", "then"]):
        subprocess.run(git + args, cwd=repo, check=True)
    code = (
        "import sys, against_commit as a; "
        f"r, models = a.measure(['base', 'mgr'], ['base', 'mgr/mb2'], 'HEAD', (8, 8, 1), 2, 1, "
        f"4, repository={str(repo)!r}); "
        "then = sys.modules['keras_mgr_then']; "
        "print('MARK', then.THEN_MARKER.replace(' ', '_'), "
        "type(models[('then', 'mgr')]).__module__, type(models[('now', 'mgr/mb2')]).__module__, "
        "models[('now', 'mgr/mb2')].meta_microbatches, "
        "all(s > 0 and m > 0 for s, m in r.values())); "
        "print(a.report(r, 'HEAD', 'flags'))")
    mark, stdout = _child(code, "MARK")
    assert mark[1:] == ["from_the_commit", "keras_mgr_then.mgr_model", "keras_mgr.mgr_model",
                        "2", "True"]
    rows = {line.split("|")[2].strip(): line for line in stdout.splitlines()
            if line.startswith("| now") or line.startswith("| commit")}
    assert set(rows) == {"base", "mgr", "mgr/mb2"}
    assert rows["mgr"].split("|")[4].strip() == "1.00"  # the commit's own schedule
    assert rows["mgr/mb2"].split("|")[4].strip() not in ("", "-")  # set beside it


def test_machine_section_by_hand():
    import machine

    here = machine.Machine(cpu="Some CPU", extensions=("avx2", "fma"), logical_cpus=4,
                           usable_cpus=2, onednn=True, onednn_isa_cap="AVX2",
                           intra_op_threads=0, inter_op_threads=1,
                           versions={"keras": "3.0"})
    assert machine.markdown(here) == [
        "", "## Machine", "",
        "- CPU: Some CPU; 4 logical CPUs, 2 usable by this process",
        "- vector extensions: avx2, fma",
        "- TensorFlow oneDNN: on, ISA capped at AVX2",
        "- thread pools: intra-op one per usable core, inter-op 1",
        "- versions: keras 3.0"]
    found = machine.describe()  # this process: oneDNN as TensorFlow reports it
    from tensorflow.python.util import _pywrap_util_port

    assert found.onednn == bool(_pywrap_util_port.IsMklEnabled())
    assert found.cpu and 1 <= found.usable_cpus <= found.logical_cpus
    assert "keras" in found.versions


def test_regimes_train_the_generator_on_the_pool_and_start_from_pretrained_weights(
        tmp_path, monkeypatch):
    """--gan_data=pool: one generator (seed 0) on the whole pool for every
    seed; --backbone_init=simsiam_pool: train() gets the pretrained backbone;
    each is part of the run key, so a regime never reuses another's rows."""
    import pretrain

    generators = []
    monkeypatch.setattr(_common, "cached_generator", lambda data, dataset, ratio, seed, *a:
                        generators.append((len(data.y_train), ratio, seed)) or (None, 0.0))
    monkeypatch.setattr(pretrain, "pretrained_backbone",
                        lambda *a, **k: ("pretrained-backbone", 0.0))
    seen = []

    def train(data, generator, mode, seed, *args, **kwargs):
        seen.append((mode, seed, kwargs.get("backbone")))
        return 0.5

    s = _settings(tmp_path, seeds=["0", "1"], modes=["base"], generator_quality=False)
    pool = dict(s, gan_data="pool")
    rows = accuracy.run_grid(pool, train=train)
    full = len(__import__("keras_mgr").datasets.load("digits", image_size=16).y_train)
    assert generators == [(full, "pool", 0), (full, "pool", 0)]  # the pool, seed 0, per seed
    assert all("gan_data=pool" in r["key"] for r in rows) and len(rows) == 2
    assert seen == [("base", 0, None), ("base", 1, None)]
    seen.clear()
    rows = accuracy.run_grid(dict(s, backbone_init="simsiam_pool", pretrain_steps=7),
                             train=train)
    assert seen == [("base", 0, "pretrained-backbone"), ("base", 1, "pretrained-backbone")]
    assert sum("backbone_init=simsiam_pool_7" in r["key"] for r in rows) == 2
    assert len(rows) == 4  # the pool rows stay; none is reused
    assert [g[1:] for g in generators[2:]] == [(0.1, 0), (0.1, 1)]  # the subset's, per seed


def test_backends_report_pairs_each_round():
    import backends

    seconds = {"tensorflow": {"base": [1.0, 2.0, 3.0], "mgr": [4.0, 4.0, 4.0]},
               "jax": {"base": [0.5, 4.0, 1.5], "mgr": [2.0, 6.0, 8.0]},
               "torch": {"base": [3.0, 2.0, 1.0], "mgr": [4.0, 2.0, 1.0]}}
    table = backends.report(seconds, {"tensorflow": "CPU:0", "jax": "TFRT_CPU_0",
                                      "torch": "cpu"}, 6, 32)
    assert table.startswith("# The step on JAX and PyTorch and on TensorFlow (CPU:0, ")
    # JAX: base ratios 0.5, 2.0, 0.5 -> median 0.50; mgr 0.5, 1.5, 2.0 -> 1.50.
    # PyTorch: base 3.0, 1.0, 0.33 -> 1.00; mgr 1.0, 0.5, 0.25 -> 0.50.
    assert "| config | tensorflow ms / step | jax ms / step | torch ms / step | " \
           "JAX / TensorFlow | PyTorch / TensorFlow |" in table
    assert "| base | 2000.0 | 1500.0 | 2000.0 | 0.50 | 1.00 |" in table
    assert "| mgr | 4000.0 | 6000.0 | 2000.0 | 1.50 | 0.50 |" in table


def test_backends_keeps_each_process_machine(monkeypatch):
    """The machine of a table is the TensorFlow child's (its oneDNN switch is
    set by keras_mgr in that process), never the driver's."""
    import backends

    def one_run(run, configs, steps, batch_size):
        return ({c: 0.1 for c in configs}, "CPU:0", {"onednn": run == "tensorflow", "run": run})

    monkeypatch.setattr(backends, "one_run", one_run)
    _, _, machines = backends.measure(["tensorflow", "jax"], ["base"], 1, 1, 32)
    assert machines["tensorflow"] == {"onednn": True, "run": "tensorflow"}
    assert machines["jax"]["run"] == "jax"
    from machine import Machine, describe

    recorded = dict(describe()._asdict(), onednn=True, cpu="the child's CPU")
    assert backends.table_machine({"tensorflow": recorded, "jax": {}}) == Machine(**recorded)


def test_cpu_breakdown_reports_each_part_per_setting_beside_the_reference():
    import cpu_breakdown

    def parts(scale, step):
        return {"forward": 10.0 * scale, "forward_backward": 30.0 * scale, "adam": 1.0,
                "step": step * scale}

    def run(scale, onednn):
        result = {"parts": {"fused": parts(scale, 32.0), "keras": parts(scale, 40.0)},
                  "machine": {"onednn": onednn}}
        if onednn:
            result["parts"]["keras_nchw"] = parts(scale, 48.0)
        else:
            result["unsupported"] = {"keras_nchw": "Conv2D takes NHWC only on the CPU"}
        return result

    results = {"runs": {"": [run(1, True), run(3, True)],  # median of 1x and 3x: 2x
                        "TF_ENABLE_ONEDNN_OPTS=0": [run(4, False)] * 2},
               "jax": [{"parts": {"keras": parts(5, 32.0)}, "jax": "0.10.2"}] * 2,
               "torch": [{"parts": {"torch": {"forward": 20.0, "forward_backward": 50.0,
                                              "adam": 2.0, "step": 64.0}},
                          "torch": "2.13.0", "threads": 2}] * 2}
    md = cpu_breakdown.report(results)
    # forward 20, forward + backward 60, backward 40, Adam 1, step 64 (1.00x PyTorch's 64).
    assert ("| TensorFlow as keras_mgr runs | fused | 20.0 | 60.0 | 40.0 | 1.0 | 64.0 | 1.00 "
            "| on |") in md
    assert ("| TensorFlow as keras_mgr runs | keras | 20.0 | 60.0 | 40.0 | 1.0 | 80.0 | 1.25 "
            "| on |") in md
    assert ("| TensorFlow as keras_mgr runs | keras, NCHW | 20.0 | 60.0 | 40.0 | 1.0 | 96.0 "
            "| 1.50 | on |") in md
    assert ("| TensorFlow, `TF_ENABLE_ONEDNN_OPTS=0` | fused | 40.0 | 120.0 | 80.0 | 1.0 | "
            "128.0 | 2.00 | off |") in md
    assert ("| TensorFlow, `TF_ENABLE_ONEDNN_OPTS=0` | keras, NCHW | unsupported: Conv2D "
            "takes NHWC only on the CPU |") in md
    assert ("| JAX 0.10.2 (XLA) | keras | 50.0 | 150.0 | 100.0 | 1.0 | 160.0 | 2.50 "
            "| XLA's own |") in md
    assert ("| PyTorch 2.13.0, 2 threads | torch (NCHW) | 20.0 | 50.0 | 30.0 | 2.0 | 64.0 "
            "| 1.00 |") in md
    older = dict(results, runs={"": [run(1, True)]})  # a JSON written before JAX rows
    del older["jax"]
    assert "JAX" not in cpu_breakdown.report(older)
    with pytest.raises(ValueError, match="NAME=VALUE.*Received: 'TF_ENABLE_ONEDNN_OPTS'"):
        cpu_breakdown.environment("TF_ENABLE_ONEDNN_OPTS")


@pytest.mark.slow  # two processes building and timing a ResNet; the report has a fast test
def test_cpu_breakdown_times_every_part_in_a_process_per_setting():
    import cpu_breakdown

    results = cpu_breakdown.measure(["", "TF_ENABLE_ONEDNN_OPTS=0"], rounds=1, repeats=1,
                                    jax=True)
    on, off = (results["runs"][s][0] for s in ("", "TF_ENABLE_ONEDNN_OPTS=0"))
    (jax_run,) = results["jax"]
    assert off["machine"]["onednn"] is False
    # TensorFlow's own CPU convolutions take NHWC only: the NCHW pass is
    # recorded as unsupported there, never timed as something else.
    assert set(off["parts"]) == {"fused", "keras"} and set(off["unsupported"]) == {"keras_nchw"}
    assert set(jax_run["parts"]) == {"keras", "keras_nchw"}
    assert set(on["parts"]) == {"fused", "keras", "keras_nchw"}  # oneDNN takes NCHW
    for run in (on, off, jax_run):
        assert all(run["parts"][name][part] > 0 for name in run["parts"]
                   for part in cpu_breakdown.PARTS)
