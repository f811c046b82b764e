"""Callbacks that show what MGR does while it trains.

`SampleGrid` writes, each epoch, a per-class grid of the synthetic samples the
finder picks beside uniformly drawn ones, as PNG and to TensorBoard. The
losses (`loss`, `ce_loss`, `pcr_loss` / `gda_loss`, `meta_loss`) and the
finder's diagnostics (`meta_grad_norm`, `latent_shift`) are training metrics,
so `keras.callbacks.TensorBoard` logs them as scalars without any help.
`AtomicBackup` resumes a killed `fit` from its last whole epoch (a kill
during the write cannot corrupt it, unlike `keras.callbacks.BackupAndRestore`).

Example:

```python
log_dir = "logs/mgr"
model.fit(x, y, epochs=30, callbacks=[
    keras_mgr.callbacks.SampleGrid(directory="samples", log_dir=log_dir),
    keras.callbacks.TensorBoard(log_dir),
])
```
"""

from keras_mgr.callbacks.backup import AtomicBackup
from keras_mgr.callbacks.grid import make_grid
from keras_mgr.callbacks.sample_grid import SampleGrid

__all__ = ["AtomicBackup", "SampleGrid", "make_grid"]
