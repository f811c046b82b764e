"""Writing a file whole or not at all.

Every file keras_mgr writes whole (models, weights, backups, sample grids;
not TensorBoard's append-only event files) goes to a temporary name in the
target's folder, is flushed to disk, and is renamed over the target only when complete (a
rename is atomic on POSIX file systems), then the folder entry is flushed too.
A failed write (a full disk, a file-size limit) raises an `OSError` naming the
target and leaves the previous file byte-identical; a kill leaves it too.

Keras's own `.keras` and `.weights.h5` writers are not used on the disk: HDF5
crashes the process (SIGSEGV) when a write fails under it. The model is
serialized into memory by Keras instead, and those bytes are written here by
Python, which reports the failure as an ordinary `OSError`.
"""

import contextlib
import errno
import io
import os
import secrets

from keras.src.saving import saving_lib
from keras.src.utils import file_utils, io_utils


@contextlib.contextmanager
def replacing(filepath):
    """Yields a temporary path to write; on success it replaces `filepath`.

    The temporary file is in the same folder (so the rename is atomic) and
    keeps the name's ending (so writers that read the format from it work).
    On an `OSError` it is removed and an `OSError` naming `filepath` is
    raised (the original chained); on any other exception it is removed and
    the exception goes on.

    Example:

    ```python
    with replacing("grid.png") as temporary:
        figure.savefig(temporary)
    ```
    """
    filepath = os.fspath(filepath)
    folder = os.path.dirname(os.path.abspath(filepath))
    temporary = os.path.join(
        folder, f".tmp-{secrets.token_hex(4)}-{os.path.basename(filepath)}")
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, filepath)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        if isinstance(error, OSError):
            raise failed_write(error, filepath) from error
        raise
    fsync_folder(folder)


def write_bytes(filepath, data):
    """Writes `data` (bytes-like) to `filepath` whole or not at all.

    Example: `write_bytes("meta.json", json.dumps(meta).encode())`.
    """
    with replacing(filepath) as temporary:
        _write_file(temporary, data)


def failed_write(error, filepath):
    """The `OSError` (same errno, so the same subclass) reporting that
    `filepath` could not be written because of `error`."""
    reason = error.strerror or str(error) or type(error).__name__
    message = (f"Could not write the file ({reason}); nothing was replaced: any previous "
               f"file at that path is unchanged. Received: filepath={filepath!r}")
    return OSError(message) if error.errno is None else OSError(error.errno, message)


def model_bytes(model):
    """The `.keras` archive of `model`, serialized in memory by Keras."""
    buffer = io.BytesIO()
    # A file object makes Keras keep the weights' HDF5 in memory too.
    saving_lib.save_model(model, buffer)
    return buffer.getbuffer()


def weights_bytes(model):
    """The `.weights.h5` file of `model` (what `save_weights` writes), in memory."""
    if not model.built:
        raise ValueError(
            "Cannot save the weights of a model that has not been built: call it on "
            f"some data or build() it first. Received: model {model.name!r}")
    buffer = io.BytesIO()
    store = saving_lib.H5IOStore(buffer, mode="w")
    try:
        saving_lib._save_state(model, weights_store=store, assets_store=None,
                               inner_path="", visited_saveables=set())
    finally:
        store.close()
    return buffer.getbuffer()


def save_weights(model, filepath):
    """`model.save_weights(filepath)`, written whole or not at all (any model)."""
    write_bytes(filepath, weights_bytes(model))


class AtomicSaving:
    """Mixin for `keras.Model` subclasses: `save` and `save_weights` write the
    file whole or not at all, and raise an `OSError` naming it when they fail.

    Covers local `.keras` files and unsharded `.weights.h5` files, hence also
    `ModelCheckpoint` and `BackupAndRestore`; other targets (legacy `.h5`,
    `zipped=False`, sharded or remote files) go to Keras unchanged.

    Example:

    ```python
    class MyModel(AtomicSaving, keras.Model):
        ...
    MyModel().save("m.keras")  # a failed write leaves the previous m.keras
    ```
    """

    def save(self, filepath, overwrite=True, zipped=None, **kwargs):
        if kwargs or zipped is False or not _local_file(filepath, ".keras"):
            return super().save(filepath, overwrite=overwrite, zipped=zipped, **kwargs)
        if _may_write(filepath, overwrite):
            write_bytes(filepath, model_bytes(self))

    def save_weights(self, filepath, overwrite=True, max_shard_size=None):
        if max_shard_size is not None or not _local_file(filepath, ".weights.h5"):
            return super().save_weights(filepath, overwrite=overwrite,
                                        max_shard_size=max_shard_size)
        if _may_write(filepath, overwrite):
            save_weights(self, filepath)


def _local_file(filepath, ending):
    return (isinstance(filepath, (str, os.PathLike)) and str(filepath).endswith(ending)
            and not file_utils.is_remote_path(str(filepath)))


def _may_write(filepath, overwrite):
    """Keras's rule: with `overwrite=False`, ask before replacing a file."""
    return (overwrite or not os.path.exists(filepath)
            or io_utils.ask_to_proceed_with_overwrite(str(filepath)))


def _write_file(path, data):
    with open(path, "xb") as fh:
        fh.write(data)


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder):
    """Flushes a folder's entries (a rename in it) to disk, where the system can."""
    if os.name != "posix":
        return
    try:
        _fsync(folder)
    except OSError as error:  # some file systems cannot flush a folder
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
