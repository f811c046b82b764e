"""`SampleGrid`: what the finder picks, beside uniform sampling, each epoch."""

import numbers
import os

import keras
import numpy as np

from keras_mgr import atomic_files
from keras_mgr.callbacks import grid as grid_lib


class SampleGrid(keras.callbacks.Callback):
    """Writes a per-class grid of synthetic samples to PNG and TensorBoard.

    One row per class. The left panel shows `G(z, y)` for fixed noise `z`
    (uniform sampling, what `pcr`/`gda` train on); in modes with a finder
    (`mgr`, `metagda`) the right panel shows `G(F(z, y), y)` for the *same*
    `z`, the samples the meta-learned finder picks. A fresh finder is the
    identity, so both panels start equal and drift apart as the finder
    learns. The noise is drawn once (from `seed`), so grids of different
    epochs are comparable.

    PNG files are written without matplotlib (`tf.io.encode_png`);
    `figure=True` writes an annotated figure instead (panel titles, class
    names, the mean latent shift), importing matplotlib only then. The grid
    goes to TensorBoard as an image summary under `log_dir/samples` (the
    `tf.summary.image` format, written without the `tensorboard` package).

    Args:
        directory: folder for `{name}_epoch{NNNN}.png` files, or None.
        log_dir: TensorBoard log folder (e.g. the one given to
            `keras.callbacks.TensorBoard`), or None.
        every: int, write every `every` epochs (and after the last epoch).
        samples_per_class: int, columns of each panel.
        classes: class ids to show, one row each; default: the first
            `min(num_classes, 10)` classes.
        class_names: names of all classes (row labels of `figure=True`).
        seed: int, seed of the fixed noise.
        figure: bool, write an annotated matplotlib figure as the PNG.
        scale: int, nearest-neighbour upscaling of the plain PNG.
        name: file prefix and TensorBoard tag.

    Attributes:
        paths: the PNG files written so far.
        last_grid: the latest grid, a float32 `(H, W, C)` array in `[0, 1]`.

    Example:

    ```python
    grid = keras_mgr.callbacks.SampleGrid(directory="samples", log_dir="logs")
    model.fit(x, y, epochs=30,
              callbacks=[grid, keras.callbacks.TensorBoard("logs")])
    grid.paths[-1]  # "samples/sample_grid_epoch0030.png"
    ```
    """

    def __init__(
        self,
        directory=None,
        log_dir=None,
        every=1,
        samples_per_class=8,
        classes=None,
        class_names=None,
        seed=0,
        figure=False,
        scale=1,
        name="sample_grid",
    ):
        super().__init__()
        if not (isinstance(every, numbers.Integral) and not isinstance(every, bool)
                and every >= 1):  # int(2.5) would silently write every 2 epochs
            raise ValueError(f"every must be >= 1, a whole number of epochs. "
                             f"Received: every={every!r}")
        if int(samples_per_class) < 1:
            raise ValueError(
                f"samples_per_class must be >= 1. Received: samples_per_class={samples_per_class}")
        if not isinstance(name, str) or name in ("", ".", "..") or any(
                sep in name for sep in ("/", "\\", os.sep)):
            raise ValueError("name is a file-name prefix inside `directory`: no path "
                             f"separators. Received: name={name!r}")
        self.directory = directory
        self.log_dir = log_dir
        self.every = int(every)
        self.samples_per_class = int(samples_per_class)
        self.classes = None if classes is None else [int(c) for c in classes]
        self.class_names = class_names
        self.seed = seed
        self.figure = bool(figure)
        self.scale = int(scale)
        self.name = name
        self.paths = []
        self.last_grid = None
        self._noise = None
        self._writer = None
        self._last_epoch = None

    # Sampling -----------------------------------------------------------
    def _fixed_noise(self):
        model = self.model
        classes = self.classes
        if classes is None:
            classes = list(range(min(model.num_classes, 10)))
        bad = [c for c in classes if not 0 <= c < model.num_classes]
        if bad:
            raise ValueError(
                f"classes must be in [0, {model.num_classes}). Received: classes={classes}")
        if self._noise is None or self._noise[2] != (model.latent_dim, tuple(classes)):
            rng = np.random.default_rng(self.seed)
            n = len(classes) * self.samples_per_class
            z = rng.standard_normal((n, model.latent_dim)).astype(keras.config.floatx())
            labels = np.repeat(np.asarray(classes, "int32"), self.samples_per_class)
            self._noise = (z, labels, (model.latent_dim, tuple(classes)))
        return self._noise[0], self._noise[1], list(classes)

    def sample(self):
        """Returns the panels: `{"uniform": ..., "finder": ...}` (finder modes).

        Each panel is a `(classes, samples_per_class, h, w, c)` array in
        `[0, 1]`; `"shift"` holds the mean `||F(z) - z||` of the finder panel.
        """
        z, labels, classes = self._fixed_noise()
        value_range = self.model.value_range  # the generator's, however wrap() learnt it
        shape = (len(classes), self.samples_per_class)
        panels = {}
        for key, use_finder in (("uniform", False), ("finder", True)):
            if use_finder and not self.model.uses_finder:
                continue
            images, shift = grid_lib.generate(self.model, z, labels, use_finder)
            images = grid_lib.to_unit_range(images, value_range)
            panels[key] = images.reshape(shape + images.shape[1:])
            if use_finder:
                panels["shift"] = float(np.mean(shift))
        return panels

    def grid(self):
        """The current grid, a float32 `(H, W, C)` array in `[0, 1]`."""
        panels = self.sample()
        return grid_lib.make_grid([panels[k] for k in ("uniform", "finder") if k in panels])

    # Writing ---------------------------------------------------------------
    def write(self, step):
        """Writes the grid of the current model at `step` (an epoch number)."""
        panels = self.sample()
        keys = [k for k in ("uniform", "finder") if k in panels]
        self.last_grid = grid_lib.make_grid([panels[k] for k in keys])
        if self.directory is not None:
            os.makedirs(self.directory, exist_ok=True)
            path = os.path.join(self.directory, f"{self.name}_epoch{step:04d}.png")
            with atomic_files.replacing(path) as temporary:  # whole or not at all
                if self.figure:
                    _, _, classes = self._fixed_noise()
                    names = self.class_names or [str(c) for c in range(self.model.num_classes)]
                    titles = ["uniform z"] + (
                        [f"finder F(z), mean shift {panels['shift']:.3f}"]
                        if "finder" in panels else [])
                    grid_lib.write_figure(
                        temporary, [panels[k] for k in keys], titles,
                        [names[c] for c in classes], title=f"{self.model.mode}, epoch {step}")
                else:
                    grid_lib.write_png(temporary, self.last_grid, self.scale)
            self.paths.append(path)
        if self.log_dir is not None:
            import tensorflow as tf

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(
                    os.path.join(self.log_dir, "samples"))
            with self._writer.as_default():
                grid_lib.write_image_summary(self.name, self.last_grid, step)
            self._writer.flush()

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "uses_finder"):
            raise ValueError(
                "SampleGrid needs a model built by keras_mgr.wrap() (an MGRModel). "
                f"Received: {type(self.model).__name__}")
        if self.figure and self.directory is not None:
            try:
                import matplotlib  # noqa: F401
            except ImportError as error:
                raise ImportError(
                    "SampleGrid(figure=True) draws with matplotlib, which is not "
                    "installed: `pip install matplotlib`, or use figure=False (a plain "
                    "PNG grid). Checked before training so no epoch is lost.") from error
        self._last_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch + 1
        if (epoch + 1) % self.every == 0:
            self.write(epoch + 1)

    def on_train_end(self, logs=None):
        epoch = self._last_epoch
        if epoch is not None and epoch % self.every != 0:
            self.write(epoch)  # the final state, whatever `every` is
        if self._writer is not None:
            self._writer.flush()
