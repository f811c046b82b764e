"""`AtomicBackup`: a backup that a kill at any moment cannot corrupt."""

import json
import os
import shutil
import warnings

import keras

from keras_mgr import atomic_files

_WEIGHTS = "model.weights.h5"
_META = "training_metadata.json"


class AtomicBackup(keras.callbacks.Callback):
    """Resumes an interrupted `fit` from the last finished epoch.

    Like `keras.callbacks.BackupAndRestore(save_freq="epoch")`, except that
    each backup is written whole or not at all: weights and metadata go into
    a temporary folder, flushed to disk, which is then renamed (an atomic
    step on POSIX file systems) to `epoch-NNNNNN`; older backups are removed
    only after that. A kill during the write leaves the previous backup, and
    the unfinished folder is discarded on the next start (`BackupAndRestore`
    writes its weights and its epoch count as two files, and on a plain
    Keras model can leave a corrupt `.h5` that fails every restart).

    The weights include both optimizers, the finder, the lookahead's
    validation buffer and the seeded streams, so with `shuffle=False` (or a
    tf.data pipeline that is deterministic per epoch) the resumed run ends
    with the weights of an uninterrupted one. Backups are per epoch only:
    Keras restarts an epoch from its first batch, so a mid-epoch backup could
    not resume to the same weights.

    A failed write (a full disk, a file-size limit) removes the unfinished
    folder and stops `fit` with an `OSError` naming it; the previous backup
    stands, so the same `fit` line resumes from it once there is room.

    A backup from a longer run (its epoch past the `epochs` of this `fit`) is
    refused with a ValueError, and kept: resuming from it would train 0
    epochs and return a model trained longer than asked. A backup of exactly
    `epochs` (a run killed after its last backup) is restored and `fit`
    trains no further, with a warning.

    Args:
        backup_dir: folder of the backups (created; one per training run).
        delete_checkpoint: True or False: remove `backup_dir` when `fit`
            finishes.

    Example:

    ```python
    model.fit(x, y, epochs=30, shuffle=False,
              callbacks=[keras_mgr.callbacks.AtomicBackup("backup")])
    # killed? run the same line again: it resumes after the last whole epoch
    ```
    """

    def __init__(self, backup_dir, delete_checkpoint=True):
        super().__init__()
        if not backup_dir:
            raise ValueError(f"backup_dir must be a folder path. Received: {backup_dir!r}")
        if not isinstance(delete_checkpoint, bool):
            raise ValueError("delete_checkpoint must be True or False. Received: "
                             f"delete_checkpoint={delete_checkpoint!r}")
        self.backup_dir = str(backup_dir)
        self.delete_checkpoint = delete_checkpoint

    def latest(self):
        """Path of the newest finished backup, or None."""
        if not os.path.isdir(self.backup_dir):
            return None
        done = sorted(name for name in os.listdir(self.backup_dir)
                      if name.startswith("epoch-") and not name.endswith(".tmp"))
        return os.path.join(self.backup_dir, done[-1]) if done else None

    def on_train_begin(self, logs=None):
        if os.path.isdir(self.backup_dir):
            for name in os.listdir(self.backup_dir):
                if name.endswith(".tmp"):  # a write that a crash cut short
                    shutil.rmtree(os.path.join(self.backup_dir, name), ignore_errors=True)
        latest = self.latest()
        if latest is None:
            return
        with open(os.path.join(latest, _META)) as fh:
            epoch = int(json.load(fh)["epoch"])
        epochs = self.params.get("epochs") if self.params else None
        if epochs is not None and epoch > epochs:
            raise ValueError(
                f"The backup {latest} is of epoch {epoch}, past the {epochs} epochs this "
                "fit asks for: it comes from a longer run, and resuming would train 0 "
                "epochs. It is kept; delete it (or pass another backup_dir) to start "
                f"afresh, or fit to epochs >= {epoch} to go on from it. Received: "
                f"epochs={epochs}, backup_dir={self.backup_dir!r}")
        if epochs is not None and epoch == epochs:
            warnings.warn(
                f"The backup {latest} is of the last epoch ({epoch}) of this fit: its "
                "weights are restored and no epoch is trained. Received: "
                f"epochs={epochs}, backup_dir={self.backup_dir!r}", stacklevel=2)
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(latest, _WEIGHTS))
        self.model._initial_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        final = os.path.join(self.backup_dir, f"epoch-{epoch + 1:06d}")
        temporary = final + ".tmp"
        try:
            os.makedirs(self.backup_dir, exist_ok=True)
            shutil.rmtree(temporary, ignore_errors=True)
            os.makedirs(temporary)
            # Each file is written whole (no HDF5 on the disk: no crash when it fails).
            atomic_files.save_weights(self.model, os.path.join(temporary, _WEIGHTS))
            atomic_files.write_bytes(os.path.join(temporary, _META),
                                     json.dumps({"epoch": epoch + 1}).encode())
            if os.path.isdir(final):  # the same epoch again; older backups still stand
                shutil.rmtree(final)
            os.replace(temporary, final)
            atomic_files.fsync_folder(self.backup_dir)
        except OSError as error:
            shutil.rmtree(temporary, ignore_errors=True)
            reason = error.strerror or str(error)
            raise OSError(error.errno, (
                f"Could not write the backup of epoch {epoch + 1} ({reason}); the "
                f"previous backup {self.latest()} is kept, and running the same fit again "
                f"resumes from it. Received: backup={final!r}")) from error
        for name in os.listdir(self.backup_dir):
            path = os.path.join(self.backup_dir, name)
            if name.startswith("epoch-") and path != final:
                shutil.rmtree(path, ignore_errors=True)

    def on_train_end(self, logs=None):
        if self.delete_checkpoint:
            shutil.rmtree(self.backup_dir, ignore_errors=True)
