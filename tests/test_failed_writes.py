"""Failed writes (a file-size limit, as a full disk): no crash, an OSError
naming the file, and the previous file left byte-identical.

One child process (the limit is per process) writes good files, then sets
`RLIMIT_FSIZE` below their size and writes again; h5py used to die there
with SIGSEGV. Python ignores SIGXFSZ, so the limit comes back as EFBIG.
"""

import errno
import json
import os
import subprocess
import sys

import pytest
import tiny

CHILD = r"""
import json, os, resource, sys
import keras, numpy as np, tiny, keras_mgr

folder = sys.argv[1]
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
LIMIT = 4096  # bytes: below every file written here
results = {}


def limit(on):
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT if on else soft, hard))


def failure(write):
    limit(True)
    try:
        write()
        return None
    except OSError as error:
        return [error.errno, str(error)]
    finally:
        limit(False)


class LimitAtEpoch(keras.callbacks.Callback):
    # Sets the limit at the end of `epoch` (1-based), before the backup's write.
    def __init__(self, epoch, watched=None):
        super().__init__()
        self.epoch, self.watched, self.before = epoch, watched, None

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            if self.watched:
                with open(self.watched, "rb") as fh:
                    self.before = fh.read()
            limit(True)


def fit(model, callbacks, epochs=2):
    x, y = tiny.data(16)
    try:
        model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False,
                  callbacks=callbacks)
        return None
    except OSError as error:
        return [error.errno, str(error)]
    finally:
        limit(False)


# model.save and save_weights over good files.
model = tiny.wrapped("mgr")
keras_path = os.path.join(folder, "m.keras")
weights_path = os.path.join(folder, "m.weights.h5")
for path, write in ((keras_path, model.save), (weights_path, model.save_weights)):
    write(path)
    with open(path, "rb") as fh:
        good = fh.read()
    name = os.path.basename(path)
    results[name] = failure(lambda: write(path))
    with open(path, "rb") as fh:
        results[name + " unchanged"] = fh.read() == good
results["stray"] = [name for name in os.listdir(folder) if name.startswith(".tmp-")]

# AtomicBackup: epoch 1's backup is written, epoch 2's write fails, then a
# resume with the limit lifted ends with an uninterrupted run's weights.
reference = tiny.wrapped("base")
fit(reference, [])
backup_dir = os.path.join(folder, "backup")
results["backup"] = fit(tiny.wrapped("base"), [
    LimitAtEpoch(2), keras_mgr.callbacks.AtomicBackup(backup_dir)])
results["backup_left"] = sorted(os.listdir(backup_dir))
resumed = tiny.wrapped("base")
results["resume"] = fit(resumed, [keras_mgr.callbacks.AtomicBackup(backup_dir)])
results["resumed_steps"] = int(resumed.optimizer.iterations.numpy())
results["resumed_difference"] = max(
    float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in
    zip(resumed.weights, reference.weights) if "float" in str(a.dtype))
results["backup_removed"] = not os.path.exists(backup_dir)

# AtomicBackup on a plain Keras model: its own writer, not the model's save_weights.
plain = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64)])
plain.compile("adam", "mse")
plain_dir = os.path.join(folder, "plain_backup")
try:
    plain.fit(np.zeros((8, 64)), np.zeros((8, 64)), epochs=2, verbose=0,
              callbacks=[LimitAtEpoch(2), keras_mgr.callbacks.AtomicBackup(plain_dir)])
    results["plain_backup"] = None
except OSError as error:
    results["plain_backup"] = [error.errno, str(error)]
finally:
    limit(False)
results["plain_backup_left"] = sorted(os.listdir(plain_dir))

# Keras's BackupAndRestore writes through model.save_weights.
keras_backup = os.path.join(folder, "keras_backup")
watch = LimitAtEpoch(2, os.path.join(keras_backup, "latest.weights.h5"))
results["keras_backup"] = fit(tiny.wrapped("base"), [
    watch, keras.callbacks.BackupAndRestore(keras_backup)])
with open(watch.watched, "rb") as fh:
    results["keras_backup_unchanged"] = fh.read() == watch.before
results["keras_backup_left"] = sorted(os.listdir(keras_backup))
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    """The child's results and its folder, with the good files' bytes."""
    folder = tmp_path_factory.mktemp("failed_writes")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", CHILD, str(folder)], capture_output=True,
                         text=True, cwd=root, env=tiny.child_env(TF_CPP_MIN_LOG_LEVEL="3"),
                         timeout=300)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULTS ")]
    return run, json.loads(lines[-1][8:]) if lines else None, folder


def _results(child):
    run, results, _ = child
    # A negative return code is the signal that killed the child (-11: SIGSEGV).
    assert run.returncode == 0 and results is not None, (
        f"child exited with {run.returncode}: {run.stderr[-3000:]}")
    return results


def _failed_naming(result, path):
    assert result is not None, "the write under the limit did not fail"
    number, message = result
    assert number == errno.EFBIG
    assert "Could not write" in message and repr(str(path)) in message


def test_failed_model_save_keeps_the_previous_keras_file(child):
    results, folder = _results(child), child[2]
    _failed_naming(results["m.keras"], folder / "m.keras")
    assert results["m.keras unchanged"]  # byte-identical
    assert results["stray"] == []  # the temporary file removed


def test_failed_save_weights_keeps_the_previous_weights_file(child):
    results, folder = _results(child), child[2]
    _failed_naming(results["m.weights.h5"], folder / "m.weights.h5")
    assert results["m.weights.h5 unchanged"]
    assert results["stray"] == []


def test_failed_atomic_backup_keeps_the_previous_backup_then_resumes(child):
    results, folder = _results(child), child[2]
    number, message = results["backup"]
    assert number == errno.EFBIG
    assert "Could not write the backup of epoch 2" in message
    assert repr(str(folder / "backup" / "epoch-000002")) in message
    assert "epoch-000001" in message  # the backup kept
    assert results["backup_left"] == ["epoch-000001"]  # the unfinished folder removed
    assert results["resume"] is None
    assert results["resumed_steps"] == 4  # 2 epochs of 2 batches, epoch 1 restored
    assert results["resumed_difference"] < 1e-6
    assert results["backup_removed"]


def test_failed_atomic_backup_of_a_plain_keras_model(child):
    results, folder = _results(child), child[2]
    number, message = results["plain_backup"]
    assert number == errno.EFBIG
    assert repr(str(folder / "plain_backup" / "epoch-000002")) in message
    assert results["plain_backup_left"] == ["epoch-000001"]


def test_failed_backup_and_restore_write_keeps_its_previous_weights(child):
    results, folder = _results(child), child[2]
    _failed_naming(results["keras_backup"], folder / "keras_backup" / "latest.weights.h5")
    assert results["keras_backup_unchanged"]
    assert results["keras_backup_left"] == ["latest.weights.h5", "training_metadata.json"]


def test_replacing_leaves_the_previous_file_when_the_writer_fails(tmp_path):
    from keras_mgr import atomic_files

    path = tmp_path / "grid.png"
    path.write_bytes(b"good")
    with pytest.raises(OSError, match=r"No space left.*Received: filepath='.*grid.png'"):
        with atomic_files.replacing(path) as temporary:
            assert os.path.dirname(temporary) == str(tmp_path)
            assert temporary.endswith("grid.png")  # writers read the format from it
            with open(temporary, "wb") as fh:
                fh.write(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert path.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["grid.png"]
    atomic_files.write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["grid.png"]


def test_conditional_gan_saves_whole_or_not_at_all(tmp_path, monkeypatch):
    from keras_mgr import atomic_files
    from keras_mgr.generators import ConditionalGAN

    gan = ConditionalGAN(num_classes=2, image_shape=(16, 16, 1), latent_dim=4,
                         generator_filters=2, discriminator_filters=2)
    path = tmp_path / "gan.weights.h5"
    gan.save_weights(path)
    good = path.read_bytes()

    def no_space(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic_files, "_write_file", no_space)
    with pytest.raises(OSError, match="gan.weights.h5"):
        gan.save_weights(path)
    assert path.read_bytes() == good


def test_sample_grid_png_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    import keras_mgr
    from keras_mgr.callbacks import grid as grid_lib

    callback = keras_mgr.callbacks.SampleGrid(directory=str(tmp_path), samples_per_class=2)
    callback.set_model(tiny.wrapped("mgr"))
    callback.write(1)
    path = callback.paths[-1]
    with open(path, "rb") as fh:
        good = fh.read()

    def half_then_no_space(target, grid, scale=1):
        with open(target, "wb") as fh:
            fh.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(grid_lib, "write_png", half_then_no_space)
    with pytest.raises(OSError, match=r"No space left.*Received: filepath='.*epoch0001.png'"):
        callback.write(1)
    with open(path, "rb") as fh:
        assert fh.read() == good
    assert os.listdir(tmp_path) == [os.path.basename(path)]
