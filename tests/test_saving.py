"""Saving, loading and resuming a wrapped model."""

import keras
import numpy as np
import pytest
import tiny

import keras_mgr
from keras_mgr import atomic_files
from keras_mgr.generators import GeneratorAdapter, conditional_generator


def build(mode, generator=None, **kwargs):
    if generator is None:
        keras.utils.set_random_seed(0)  # the generator's initialisation
        generator = conditional_generator(5, 3, (8, 8, 1), base_filters=4)
        generator.trainable = False
    return tiny.wrapped(mode, norm="keras", generator_=generator,
                        **{"meta_every": 1, **kwargs})


def optimizer_state(optimizer):
    return [v.numpy() for v in optimizer.variables]


@pytest.mark.parametrize("mode", keras_mgr.MODES)
def test_keras_round_trip_every_mode(mode, tmp_path):
    x, y = tiny.data(16)
    model = build(mode)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for a, b in zip(optimizer_state(loaded.optimizer), optimizer_state(model.optimizer)):
        np.testing.assert_array_equal(a, b)
    if model.uses_finder:
        assert loaded.finder_optimizer.iterations.numpy() == 1  # step 1: buffer empty
        for a, b in zip(optimizer_state(loaded.finder_optimizer),
                        optimizer_state(model.finder_optimizer)):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(loaded.finder.weights, model.finder.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    else:
        assert loaded.finder is None and loaded.finder_optimizer is None
    # Training goes on from the restored state identically.
    for m in (model, loaded):
        m.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_unserializable_generator_error_and_weights_only_path(tmp_path):
    source = conditional_generator(5, 3, (8, 8, 1), base_filters=4)
    generator = GeneratorAdapter(source, latent_dim=5, num_classes=3)
    model = build("mgr", generator=generator)
    x, y = tiny.data(16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="cannot be serialized.*save_weights_only=True"):
        model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    rebuilt = build("mgr", generator=GeneratorAdapter(
        conditional_generator(5, 3, (8, 8, 1), base_filters=4), latent_dim=5, num_classes=3))
    rebuilt.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_array_equal(rebuilt.predict(x, verbose=0), model.predict(x, verbose=0))
    checkpoint = keras.callbacks.ModelCheckpoint(tmp_path / "c.weights.h5",
                                                 save_weights_only=True)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[checkpoint])
    assert (tmp_path / "c.weights.h5").exists()


def test_checkpoints_without_the_generator(tmp_path):
    x, y = tiny.data(16)
    model = build("mgr", checkpoint_generator=False)
    with_generator = build("mgr")
    assert len(model.weights) == len(with_generator.weights) - len(model.generator.weights)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras_mgr.load_model(tmp_path / "m.keras", generator=model.generator)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.generator is model.generator


class Interrupt(keras.callbacks.Callback):
    def __init__(self, at_step):
        super().__init__()
        self.at_step, self.seen = at_step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at_step:
            raise RuntimeError("interrupted")


@pytest.mark.parametrize("mode", ["mgr", pytest.param("pcr", marks=pytest.mark.slow)])
def test_backup_and_restore_resumes_mid_epoch(mode, tmp_path):
    """Interrupted in epoch 2 at step 6, a fresh model resumes and ends with the
    weights of an uninterrupted run (CPU ops are deterministic here; rtol 1e-5)."""
    x, y = tiny.data(32)
    reference = build(mode)
    reference.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = build(mode)
    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                        callbacks=[backup, Interrupt(6)])
    resumed = build(mode)
    resumed.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    assert resumed.optimizer.iterations.numpy() == reference.optimizer.iterations.numpy()
    if mode == "mgr":
        assert (resumed.finder_optimizer.iterations.numpy()
                == reference.finder_optimizer.iterations.numpy() == 11)  # not step 1
    for a, b in zip(resumed.weights, reference.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)


CRASH_SCRIPT = """
import os, sys
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
import keras, numpy as np, tiny, keras_mgr
from keras_mgr import atomic_files
from keras_mgr.generators import conditional_generator
backup_dir, crash_at, out, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
keras.utils.set_random_seed(0)
generator = conditional_generator(5, 3, (8, 8, 1), base_filters=4)
generator.trainable = False
model = keras_mgr.wrap(tiny.backbone(norm="keras"), generator, mode="mgr", seed=0,
                       meta_batch_size=8, finder_hidden_dim=8, meta_every=1)
model.compile()
write, calls = atomic_files._write_file, []
def write_file(path, data):
    if path.endswith("weights.h5"):
        calls.append(path)
        if len(calls) == crash_at:  # killed half-way through writing this backup
            with open(path, "wb") as fh:
                fh.write(bytes(data)[:len(data) // 2])
            os._exit(137)
    write(path, data)
atomic_files._write_file = write_file
backup = (keras_mgr.callbacks.AtomicBackup(backup_dir) if kind == "atomic"
          else keras.callbacks.BackupAndRestore(backup_dir))
x, y = tiny.data(32)
model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False, callbacks=[backup])
np.savez(out, *[v.numpy() for v in model.weights])
"""


def _crash_run(tmp_path, backup_dir, crash_at, out, kind="atomic"):
    import os
    import subprocess
    import sys

    env = tiny.child_env(TF_CPP_MIN_LOG_LEVEL="3")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path / backup_dir), str(crash_at),
         str(tmp_path / out), kind], capture_output=True, text=True, env=env, cwd=root)


@pytest.mark.slow  # five fresh processes; the in-process test below is the fast check
def test_kill_during_the_backup_write_resumes_to_the_uninterrupted_weights(tmp_path):
    import os

    assert _crash_run(tmp_path, "ref", 0, "ref.npz").returncode == 0
    # Killed while writing the epoch-2 backup: epoch 1's stands, epoch 2's is partial.
    assert _crash_run(tmp_path, "b", 2, "x.npz").returncode == 137
    assert sorted(os.listdir(tmp_path / "b")) == ["epoch-000001", "epoch-000002.tmp"]
    resumed = _crash_run(tmp_path, "b", 0, "resumed.npz")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference, got = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "resumed.npz")
    assert len(reference.files) == len(got.files) > 20
    for key in reference.files:
        np.testing.assert_array_equal(got[key], reference[key], err_msg=key)
    assert not os.path.exists(tmp_path / "b")  # delete_checkpoint after a finished fit
    # Keras's BackupAndRestore, killed at the same point, restarts too: an
    # MGRModel's save_weights replaces latest.weights.h5 only when whole.
    assert _crash_run(tmp_path, "k", 2, "k.npz", kind="keras").returncode == 137
    restarted = _crash_run(tmp_path, "k", 0, "k.npz", kind="keras")
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    got = np.load(tmp_path / "k.npz")
    for key in reference.files:
        np.testing.assert_array_equal(got[key], reference[key], err_msg=key)


def crash_while_writing(monkeypatch, at):
    """Makes keras_mgr's `at`-th weights file write half its bytes and then
    "die" (raise SystemExit): a crash in the middle of a backup."""
    write, calls = atomic_files._write_file, []

    def write_file(path, data):
        if path.endswith("weights.h5"):
            calls.append(path)
            if len(calls) == at:
                with open(path, "wb") as fh:
                    fh.write(bytes(data)[:len(data) // 2])
                raise SystemExit("killed while writing")
        write(path, data)

    monkeypatch.setattr(atomic_files, "_write_file", write_file)


def test_crash_during_the_backup_write_resumes_in_process(tmp_path, monkeypatch):
    import os

    x, y = tiny.data(32)
    reference = build("mgr")
    reference.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
    backup_dir = str(tmp_path / "backup")
    crashed = build("mgr")
    crash_while_writing(monkeypatch, 2)
    with pytest.raises(SystemExit, match="killed while writing"):
        crashed.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                    callbacks=[keras_mgr.callbacks.AtomicBackup(backup_dir)])
    monkeypatch.undo()
    assert sorted(os.listdir(backup_dir)) == ["epoch-000001", "epoch-000002.tmp"]
    resumed = build("mgr")
    resumed.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                callbacks=[keras_mgr.callbacks.AtomicBackup(backup_dir)])
    assert int(resumed.optimizer.iterations) == 12 and int(
        resumed.finder_optimizer.iterations) == 11
    for a, b in zip(resumed.weights, reference.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)


def test_atomic_backup_arguments():
    with pytest.raises(ValueError, match="backup_dir must be a folder path. Received: ''"):
        keras_mgr.callbacks.AtomicBackup("")


# checkpoint_generator=False ---------------------------------------------------
def _h5_datasets(source):
    import h5py

    names = []
    with h5py.File(source, "r") as fh:
        fh.visititems(lambda name, item: names.append(name)
                      if isinstance(item, h5py.Dataset) else None)
    return names


def test_checkpoint_generator_false_files_hold_no_generator(tmp_path):
    import io
    import json
    import zipfile

    full, without = build("mgr"), build("mgr", checkpoint_generator=False)
    counts = {}
    for name, model in (("full", full), ("without", without)):
        model.save_weights(tmp_path / f"{name}.weights.h5")
        model.save(tmp_path / f"{name}.keras")
        counts[name] = _h5_datasets(tmp_path / f"{name}.weights.h5")
        with zipfile.ZipFile(tmp_path / f"{name}.keras") as archive:
            in_keras = _h5_datasets(io.BytesIO(archive.read("model.weights.h5")))
            config = json.loads(archive.read("config.json"))["config"]
        assert len(in_keras) == len(counts[name])
    assert len(counts["without"]) == len(counts["full"]) - len(full.generator.weights)
    assert not [name for name in counts["without"] if "generator" in name]
    assert config["generator"] is None  # not even its architecture
    assert "generator" not in dir(without)  # how: Keras's saver walks dir(model)


def test_plain_load_model_refuses_a_checkpoint_without_generator(tmp_path):
    build("mgr", checkpoint_generator=False).save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match=(
            r"saved without its generator.*keras_mgr.load_model\(path, generator=generator\)")):
        keras.models.load_model(tmp_path / "m.keras")


def test_load_model_leaves_the_supplied_generator_untouched(tmp_path):
    x, _ = tiny.data(16)
    model = build("mgr", checkpoint_generator=False)
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    keras.utils.set_random_seed(1)  # other weights than the saved model's generator
    supplied = conditional_generator(5, 3, (8, 8, 1), base_filters=4)
    supplied.trainable = False
    before = [w.numpy() for w in supplied.weights]
    loaded = keras_mgr.load_model(tmp_path / "m.keras", generator=supplied)
    assert loaded.generator is supplied
    loaded.load_weights(tmp_path / "m.weights.h5")
    for a, b in zip(supplied.weights, before):
        np.testing.assert_array_equal(a.numpy(), b)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # Another architecture with the same inputs and outputs loads too: its
    # weights are not in the file.
    wider = conditional_generator(5, 3, (8, 8, 1), base_filters=8)
    wider.trainable = False
    assert keras_mgr.load_model(tmp_path / "m.keras", generator=wider).generator is wider


def test_load_model_checks_the_supplied_generator(tmp_path):
    build("mgr", checkpoint_generator=False).save(tmp_path / "m.keras")
    path = tmp_path / "m.keras"
    cases = [
        ((6, 3, (8, 8, 1)), r"latents of size 6.*latent_dim=5. Received"),
        ((5, 4, (8, 8, 1)), r"has 4 classes.*num_classes=3. Received"),
        ((5, 3, (8, 8, 3)), r"does not match the backbone input.*channel counts differ"),
    ]
    for shape, message in cases:
        generator = conditional_generator(*shape, base_filters=4)
        generator.trainable = False
        with pytest.raises(ValueError, match=message):
            keras_mgr.load_model(path, generator=generator)
    trainable = conditional_generator(5, 3, (8, 8, 1), base_filters=4)
    with pytest.raises(ValueError, match="must be frozen"):
        keras_mgr.load_model(path, generator=trainable)
    ranged = conditional_generator(5, 3, (8, 8, 1), base_filters=4, output_range=(0.0, 1.0))
    ranged.trainable = False
    with pytest.raises(ValueError, match=r"outputs values in \(0.0, 1.0\)"):
        keras_mgr.load_model(path, generator=ranged)


def test_load_model_refuses_a_generator_for_a_checkpoint_holding_one(tmp_path):
    model = build("mgr")
    model.save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match="saved with its generator.*Received: generator="):
        keras_mgr.load_model(tmp_path / "m.keras", generator=model.generator)


# AtomicBackup's options -------------------------------------------------------
def test_atomic_backup_refuses_a_non_bool_delete_checkpoint():
    with pytest.raises(ValueError, match=(
            "delete_checkpoint must be True or False. Received: delete_checkpoint='no'")):
        keras_mgr.callbacks.AtomicBackup("backup", delete_checkpoint="no")


def test_atomic_backup_from_a_longer_run_is_refused_and_kept(tmp_path):
    import os

    x, y = tiny.data(16)
    backup_dir = str(tmp_path / "backup")
    longer = tiny.wrapped("base")
    longer.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
               callbacks=[keras_mgr.callbacks.AtomicBackup(backup_dir, delete_checkpoint=False)])
    shorter = tiny.wrapped("base")
    with pytest.raises(ValueError, match=(
            r"backup .*epoch-000003 is of epoch 3, past the 2 epochs.*It is kept.*"
            r"Received: epochs=2, backup_dir='.*backup'")):
        shorter.fit(x, y, batch_size=8, epochs=2, verbose=0,
                    callbacks=[keras_mgr.callbacks.AtomicBackup(backup_dir)])
    assert os.listdir(backup_dir) == ["epoch-000003"]
    assert int(shorter.optimizer.iterations) == 0  # nothing restored, nothing trained
    # A run killed after its last backup: restored, nothing more trained.
    same = tiny.wrapped("base")
    with pytest.warns(UserWarning, match="last epoch \\(3\\) of this fit"):
        same.fit(x, y, batch_size=8, epochs=3, verbose=0,
                 callbacks=[keras_mgr.callbacks.AtomicBackup(backup_dir)])
    assert int(same.optimizer.iterations) == int(longer.optimizer.iterations) == 6
    for a, b in zip(same.weights, longer.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not os.path.exists(backup_dir)  # used, then deleted as asked


def test_load_model_checks_the_supplied_generators_values(tmp_path):
    """A generator whose images leave the saved model's value range is refused."""
    model = tiny.wrapped("pcr", checkpoint_generator=False)
    model.save(tmp_path / "m.keras")
    loud = tiny.generator()
    loud.output_range = None  # declares nothing, produces 0..255
    scaled = keras.Model(loud.inputs, keras.layers.Rescaling(127.5, 127.5)(loud.output))
    scaled.latent_dim, scaled.num_classes, scaled.trainable = 5, 3, False
    with pytest.raises(ValueError, match=r"saved model's value range \[-1, 1\].*Received: "
                                         r"generator output"):
        keras_mgr.load_model(tmp_path / "m.keras", generator=scaled)


def _with_config(path, target, **changes):
    """A copy of the `.keras` file `path` at `target` with `changes` in the
    model's saved config (a hand-edited or corrupted file)."""
    import json
    import zipfile

    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as copy:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                saved = json.loads(data)
                saved["config"].update(changes)
                data = json.dumps(saved)
            copy.writestr(item, data)
    return target


@pytest.mark.parametrize("value_range", ["ab", [-1.0, "x"], None, [1.0], [-1.0, 1.0, 3.0],
                                         "12", [2.0, -2.0], [float("nan"), 1.0]])
def test_a_saved_value_range_is_checked_when_loading(tmp_path, value_range):
    build("gda").save(tmp_path / "m.keras")
    path = _with_config(tmp_path / "m.keras", tmp_path / "bad.keras", value_range=value_range)
    with pytest.raises(ValueError, match=r"value_range.*Received: value_range="):
        keras_mgr.load_model(path)


def test_a_saved_unknown_mode_is_named_when_loading(tmp_path):
    build("gda").save(tmp_path / "m.keras")
    path = _with_config(tmp_path / "m.keras", tmp_path / "bad.keras", mode="MGR")
    with pytest.raises(ValueError, match=r"mode must be one of .*Received: mode='MGR'"):
        keras_mgr.load_model(path)
