"""`AtomicBackup`: a backup that a kill at any moment cannot corrupt."""

import json
import os
import shutil

import keras

_WEIGHTS = "model.weights.h5"
_META = "training_metadata.json"


class AtomicBackup(keras.callbacks.Callback):
    """Resumes an interrupted `fit` from the last finished epoch.

    Like `keras.callbacks.BackupAndRestore(save_freq="epoch")`, except that
    each backup is written whole or not at all: weights and metadata go into
    a temporary folder, flushed to disk, which is then renamed (an atomic
    step on POSIX file systems) to `epoch-NNNNNN`; older backups are removed
    only after that. A kill during the write (where `BackupAndRestore`
    leaves a corrupt `.h5` that fails every restart) leaves the previous
    backup, and the unfinished folder is discarded on the next start.

    The weights include both optimizers, the finder, the lookahead's
    validation buffer and the seeded streams, so with `shuffle=False` (or a
    tf.data pipeline that is deterministic per epoch) the resumed run ends
    with the weights of an uninterrupted one. Backups are per epoch only:
    Keras restarts an epoch from its first batch, so a mid-epoch backup could
    not resume to the same weights.

    Args:
        backup_dir: folder of the backups (created; one per training run).
        delete_checkpoint: remove `backup_dir` when `fit` finishes.

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
        self.backup_dir = str(backup_dir)
        self.delete_checkpoint = bool(delete_checkpoint)

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
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(latest, _WEIGHTS))
        with open(os.path.join(latest, _META)) as fh:
            self.model._initial_epoch = int(json.load(fh)["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.backup_dir, exist_ok=True)
        final = os.path.join(self.backup_dir, f"epoch-{epoch + 1:06d}")
        temporary = final + ".tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        os.makedirs(temporary)
        self.model.save_weights(os.path.join(temporary, _WEIGHTS))
        with open(os.path.join(temporary, _META), "w") as fh:
            json.dump({"epoch": epoch + 1}, fh)
        for name in (_WEIGHTS, _META):
            _fsync(os.path.join(temporary, name))
        if os.path.isdir(final):  # the same epoch again; older backups still stand
            shutil.rmtree(final)
        os.replace(temporary, final)
        _fsync(self.backup_dir)
        for name in os.listdir(self.backup_dir):
            path = os.path.join(self.backup_dir, name)
            if name.startswith("epoch-") and path != final:
                shutil.rmtree(path, ignore_errors=True)

    def on_train_end(self, logs=None):
        if self.delete_checkpoint:
            shutil.rmtree(self.backup_dir, ignore_errors=True)


def _fsync(path):
    """Flushes a file (or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
