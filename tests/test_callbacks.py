"""SampleGrid and the TensorBoard scalars: grid layout, files, event tags, values."""

import glob
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny

import keras_mgr
from keras_mgr.callbacks import SampleGrid, make_grid


def build(mode="mgr", finder_optimizer="auto", **kwargs):
    return tiny.wrapped(mode, optimizer=keras.optimizers.Adam(1e-2),
                        compile={"finder_optimizer": finder_optimizer},
                        **{"meta_every": 1, **kwargs})


def read_events(directory):
    """`{tag: [(step, value), ...]}` from the event files in `directory`."""
    events = {}
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                events.setdefault(value.tag, []).append((event.step, value))
    return events


def test_make_grid_places_every_tile_at_its_documented_offset():
    rng = np.random.default_rng(0)
    rows, cols, h, w, c, pad, sep = 3, 4, 5, 6, 1, 2, 3
    panels = [rng.uniform(0.1, 0.4, (rows, cols, h, w, c)) for _ in range(2)]
    grid = make_grid(panels, padding=pad, separator=sep, pad_value=1.0, separator_value=0.5)
    panel_width = pad + cols * (w + pad)
    assert grid.shape == (pad + rows * (h + pad), 2 * panel_width + sep, c)
    covered = np.zeros(grid.shape[:2], bool)
    for p, panel in enumerate(panels):
        for r in range(rows):
            for j in range(cols):
                top = pad + r * (h + pad)
                left = p * (panel_width + sep) + pad + j * (w + pad)
                np.testing.assert_allclose(grid[top:top + h, left:left + w], panel[r, j],
                                           rtol=1e-6)
                covered[top:top + h, left:left + w] = True
    strip = grid[:, panel_width:panel_width + sep]
    np.testing.assert_array_equal(strip, 0.5)
    covered[:, panel_width:panel_width + sep] = True
    np.testing.assert_array_equal(grid[~covered], 1.0)  # the rest is padding
    with pytest.raises(ValueError, match="same shape"):
        make_grid([panels[0], panels[1][:, :2]])


def test_panels_map_the_models_value_range_to_the_unit_range():
    """A generator that declares no range, with the backbone's input_range
    (-2, 2) in wrap(): the grid maps (-2, 2), not a default (-1, 1), to (0, 1)."""
    generator = tiny.generator(output_range=None)
    model = build("pcr", generator_=generator, input_range=(-2.0, 2.0))
    assert model.value_range == (-2.0, 2.0)
    callback = SampleGrid(samples_per_class=2, classes=[1], seed=0)
    callback.set_model(model)
    z = np.random.default_rng(0).standard_normal((2, model.latent_dim)).astype("float32")
    expected = (np.asarray(generator([z, np.array([1, 1], "int32")])) + 2) / 4
    np.testing.assert_allclose(callback.sample()["uniform"], expected.reshape(1, 2, 8, 8, 1),
                               atol=1e-6)


def test_fresh_finder_column_equals_uniform_then_follows_the_finder():
    model = build("mgr")
    callback = SampleGrid(samples_per_class=4, classes=[2, 0], seed=3)
    callback.set_model(model)
    panels = callback.sample()
    assert panels["uniform"].shape == (2, 4, 8, 8, 1)
    # A fresh finder is the identity: both panels are the same images.
    np.testing.assert_array_equal(panels["finder"], panels["uniform"])
    assert panels["shift"] == 0.0

    # Rows are classes, columns samples: the uniform panel is G(z, y) for the
    # callback's fixed noise, mapped from (-1, 1) to (0, 1).
    z = np.random.default_rng(3).standard_normal((8, model.latent_dim)).astype("float32")
    labels = np.array([2, 2, 2, 2, 0, 0, 0, 0], "int32")
    expected = (np.asarray(model.generator([z, labels])) + 1) / 2
    np.testing.assert_allclose(panels["uniform"], expected.reshape(2, 4, 8, 8, 1), atol=1e-6)

    # Moved finder: F(z) = z + b, so every sample shifts by exactly ||b||.
    bias = np.linspace(0.5, -0.5, model.latent_dim).astype("float32")
    model.finder.out.bias.assign(bias)
    panels = callback.sample()
    expected = (np.asarray(model.generator([z + bias, labels])) + 1) / 2
    np.testing.assert_allclose(panels["finder"], expected.reshape(2, 4, 8, 8, 1), atol=1e-6)
    assert not np.allclose(panels["finder"], panels["uniform"])
    np.testing.assert_allclose(panels["shift"], np.linalg.norm(bias), rtol=1e-5)
    assert callback.grid().shape == (2 + 2 * 10, 2 * (2 + 4 * 10) + 4, 1)


def test_finder_panel_is_what_training_synthesizes_in_w_space():
    """With latent_space="w" the finder moves mapping(z, y): the panel must be
    exactly `MGRModel.synthesis`, the images the training step uses."""
    from test_generator_protocol import MappedGenerator

    model = keras_mgr.wrap(tiny.backbone(), MappedGenerator(), latent_space="w", seed=0,
                           meta_batch_size=8, finder_hidden_dim=8, meta_every=1)
    model.finder.out.bias.assign(np.full((7,), 0.3, "float32"))
    callback = SampleGrid(samples_per_class=2, seed=1)
    callback.set_model(model)
    panels = callback.sample()
    z, labels, _ = callback._fixed_noise()
    phi = [v.value for v in model.finder.trainable_variables]
    draws = {"z": keras.ops.convert_to_tensor(z), "labels": keras.ops.convert_to_tensor(labels)}
    images = keras.ops.convert_to_numpy(model.synthesis(phi, draws))
    np.testing.assert_allclose(panels["finder"].reshape(images.shape), (images + 1) / 2,
                               atol=1e-6)
    np.testing.assert_allclose(panels["shift"], 0.3 * np.sqrt(7), rtol=1e-5)


def test_mode_without_finder_shows_the_uniform_panel_only():
    callback = SampleGrid(samples_per_class=2)
    callback.set_model(build("pcr"))
    panels = callback.sample()
    assert set(panels) == {"uniform"}
    assert panels["uniform"].shape == (3, 2, 8, 8, 1)  # all 3 classes (<= 10)
    assert callback.grid().shape == (2 + 3 * 10, 2 + 2 * 10, 1)


def test_png_files_and_tensorboard_images_each_epoch(tmp_path):
    x, y = tiny.data(16)
    callback = SampleGrid(directory=str(tmp_path / "png"), log_dir=str(tmp_path / "logs"),
                          every=2, samples_per_class=3)
    build("mgr").fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[callback])
    # every=2: epoch 2, and the last epoch (3) whatever `every` says.
    names = sorted(os.listdir(tmp_path / "png"))
    assert names == ["sample_grid_epoch0002.png", "sample_grid_epoch0003.png"]
    assert callback.paths == [str(tmp_path / "png" / n) for n in names]
    png = tf.io.decode_png(tf.io.read_file(callback.paths[-1])).numpy()
    np.testing.assert_array_equal(png, np.round(callback.last_grid * 255).astype("uint8"))
    assert png.shape == (2 + 3 * 10, 2 * (2 + 3 * 10) + 4, 1)

    events = read_events(str(tmp_path / "logs" / "samples"))
    assert [step for step, _ in events["sample_grid"]] == [2, 3]
    value = events["sample_grid"][-1][1]
    assert value.metadata.plugin_data.plugin_name == "images"
    width, height, encoded = tf.make_ndarray(value.tensor)
    assert (int(width), int(height)) == (png.shape[1], png.shape[0])
    np.testing.assert_array_equal(tf.io.decode_png(encoded).numpy(), png)


def test_figure_png_is_written_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    callback = SampleGrid(directory=str(tmp_path), figure=True, samples_per_class=2,
                          class_names=["a", "b", "c"])
    callback.set_model(build("mgr"))
    callback.write(7)
    png = tf.io.decode_png(tf.io.read_file(str(tmp_path / "sample_grid_epoch0007.png")))
    assert png.shape[0] > 50 and png.shape[1] > 50  # an annotated figure, not the raw grid


def test_invalid_arguments():
    with pytest.raises(ValueError, match="every must be >= 1"):
        SampleGrid(every=0)
    callback = SampleGrid(classes=[0, 5])
    callback.set_model(build("mgr"))
    with pytest.raises(ValueError, match=r"classes must be in \[0, 3\)"):
        callback.sample()
    callback = SampleGrid()
    callback.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    with pytest.raises(ValueError, match="MGRModel"):
        callback.on_train_begin()


def test_runs_without_matplotlib_keras_cv_or_tensorboard(tmp_path):
    """The optional packages are optional: blocked, keras_mgr and a plain-PNG
    SampleGrid still work, and figure=True says what to install."""
    code = (
        "import sys\n"
        "for name in ('matplotlib', 'keras_cv', 'tensorboard'):\n"
        "    sys.modules[name] = None  # any import of it raises ImportError\n"
        "import tiny, keras_mgr\n"
        "m = keras_mgr.wrap(tiny.backbone(), tiny.generator(), meta_batch_size=8)\n"
        f"c = keras_mgr.callbacks.SampleGrid(directory={str(tmp_path)!r}, "
        f"log_dir={str(tmp_path)!r})\n"
        "c.set_model(m); c.write(1)\n"
        "c.figure = True\n"
        "try:\n"
        "    c.write(2)\n"
        "except ImportError as e:\n"
        "    assert 'pip install matplotlib' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('figure=True without matplotlib did not raise')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(__file__))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.path.exists(tmp_path / "sample_grid_epoch0001.png")
    assert read_events(str(tmp_path / "samples"))["sample_grid"][0][0] == 1


# TensorBoard scalars ----------------------------------------------------------
@pytest.mark.parametrize("mode, terms", [
    ("mgr", ["loss", "ce_loss", "pcr_loss", "meta_loss", "meta_grad_norm", "latent_shift"]),
    ("metagda", ["loss", "ce_loss", "gda_loss", "meta_loss", "meta_grad_norm",
                 "latent_shift"]),
    ("pcr", ["loss", "ce_loss", "pcr_loss"]),
])
def test_tensorboard_event_files_hold_every_loss_term(tmp_path, mode, terms):
    # keras.callbacks.TensorBoard needs the tensorboard package, which
    # TensorFlow 2.21 no longer installs: a test requirement, not skipped.
    import tensorboard  # noqa: F401
    x, y = tiny.data(16)
    history = build(mode).fit(
        x, y, batch_size=8, epochs=2, verbose=0,
        callbacks=[keras.callbacks.TensorBoard(str(tmp_path))]).history
    events = read_events(str(tmp_path / "train"))
    scalars = {tag[len("epoch_"):] for tag in events if tag.startswith("epoch_")}
    assert scalars == set(terms) | {"accuracy", "learning_rate"}
    for term in terms:
        logged = [float(tf.make_ndarray(v.tensor)) for _, v in events[f"epoch_{term}"]]
        np.testing.assert_allclose(logged, history[term], rtol=1e-6)
        assert [s for s, _ in events[f"epoch_{term}"]] == [0, 1]


def test_meta_grad_norm_is_the_norm_of_the_finder_gradient(float64):
    """With SGD(1) for the finder, its update is minus the meta-gradient.

    Step 1 meets an empty validation buffer (all weights 0): meta-gradient 0,
    no finder update. Step 2 updates the finder by -g, so the epoch mean of
    `meta_grad_norm` is ||g|| / 2. The finder was the identity in both steps,
    so `latent_shift` is 0.
    """
    x, y = tiny.data(16)
    model = build("mgr", finder_optimizer=keras.optimizers.SGD(1.0))
    before = [v.numpy() for v in model.finder.trainable_variables]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False).history
    after = [v.numpy() for v in model.finder.trainable_variables]
    norm = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(after, before)))
    assert norm > 0
    np.testing.assert_allclose(history["meta_grad_norm"][0], norm / 2, rtol=1e-5)
    assert history["latent_shift"][0] == 0.0


def test_latent_shift_is_the_mean_distance_of_finder_latents():
    """F(z) = z + b shifts every latent by exactly ||b||."""
    x, y = tiny.data(16)
    model = build("mgr", finder_optimizer=keras.optimizers.SGD(0.0))
    bias = np.linspace(-1.0, 2.0, model.latent_dim).astype("float32")
    model.finder.out.bias.assign(bias)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    np.testing.assert_allclose(history["latent_shift"][0], np.linalg.norm(bias), rtol=1e-5)
    assert history["meta_grad_norm"][0] > 0


def test_sample_grid_refuses_paths_in_its_name(tmp_path):
    for name in ("../../x", "a/b", "..", ""):
        with pytest.raises(ValueError, match=rf"no path separators. Received: name={name!r}"):
            SampleGrid(directory=str(tmp_path), name=name)


def test_sample_grid_figure_without_matplotlib_fails_before_training(tmp_path, monkeypatch):
    model = build(mode="mgr")
    x, y = tiny.data(8)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    grid = SampleGrid(directory=str(tmp_path), figure=True)
    with pytest.raises(ImportError, match=r"figure=True\) draws with matplotlib"):
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[grid], verbose=0)
    assert int(model.optimizer.iterations) == 0 and not os.listdir(tmp_path)
