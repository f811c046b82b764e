"""Saving, loading and resuming a wrapped model."""

import keras
import numpy as np
import pytest
import tiny

import keras_mgr
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
from keras_mgr.generators import conditional_generator
backup_dir, crash_at, out, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
keras.utils.set_random_seed(0)
generator = conditional_generator(5, 3, (8, 8, 1), base_filters=4)
generator.trainable = False
model = keras_mgr.wrap(tiny.backbone(norm="keras"), generator, mode="mgr", seed=0,
                       meta_batch_size=8, finder_hidden_dim=8, meta_every=1)
model.compile()
save, calls = model.save_weights, []
def save_weights(*args, **kwargs):
    save(*args, **kwargs)
    path = args[0] if args else kwargs["filepath"]
    calls.append(path)
    if len(calls) == crash_at:  # killed half-way through writing this backup
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) // 2)
        os._exit(137)
model.save_weights = save_weights
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
    # Keras's own BackupAndRestore, killed at the same point, cannot restart:
    # the half-written latest.weights.h5 fails every load.
    assert _crash_run(tmp_path, "k", 2, "k.npz", kind="keras").returncode == 137
    failed = _crash_run(tmp_path, "k", 0, "k.npz", kind="keras")
    assert failed.returncode != 0 and "OSError" in failed.stderr


class CrashWhileSaving(keras.callbacks.Callback):
    """Makes the model's `save_weights` write half a file and then "die"
    (raise) on its `at`-th call: a crash in the middle of a backup."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def set_model(self, model):
        super().set_model(model)
        save = model.save_weights

        def save_weights(*args, **kwargs):
            save(*args, **kwargs)
            self.calls += 1
            if self.calls == self.at:
                path = args[0] if args else kwargs["filepath"]
                with open(path, "r+b") as fh:
                    fh.truncate(1000)
                raise SystemExit("killed while writing")

        model.save_weights = save_weights


def test_crash_during_the_backup_write_resumes_in_process(tmp_path):
    import os

    x, y = tiny.data(32)
    reference = build("mgr")
    reference.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
    backup_dir = str(tmp_path / "backup")
    crashed = build("mgr")
    with pytest.raises(SystemExit, match="killed while writing"):
        crashed.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                    callbacks=[CrashWhileSaving(2), keras_mgr.callbacks.AtomicBackup(backup_dir)])
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
