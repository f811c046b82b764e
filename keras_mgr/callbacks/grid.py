"""Pure helpers of `SampleGrid`: generate, tile and write sample grids."""

import struct
import zlib

import numpy as np
from keras import ops

from keras_mgr import synthetic


def generate(model, z, labels, use_finder):
    """Images `G(z, y)`, or `G(F(z, y), y)` with `use_finder`, as NumPy.

    `keras_mgr.synthetic.generate` (as the training step, `latent_space="w"`
    included) with the current finder weights, outside any training step.

    Args:
        model: an `MGRModel`.
        z: `(n, latent_dim)` float noise.
        labels: `(n,)` int class ids.
        use_finder: bool, pass the latents through `model.finder` first.

    Returns:
        `(images, shift)`: float32 images `(n, h, w, c)` and the per-sample
        latent shift `||F(z) - z||` (zeros without the finder).
    """
    finder = None
    if use_finder:
        def finder(latents, labels):
            return model.finder([latents, labels], training=False)
    images, found, start = synthetic.generate(model.generator, z, labels, finder,
                                              model.latent_space)
    shift = synthetic.latent_shift(found, start)
    return (np.asarray(ops.convert_to_numpy(images), "float32"),  # (PyTorch: detached)
            np.asarray(ops.convert_to_numpy(shift), "float32"))


def to_unit_range(images, value_range):
    """Maps images from `value_range` to `[0, 1]` (clipped) for display.

    Images with a channel count an image summary cannot show (not 1, 3 or 4)
    are averaged to one channel.
    """
    low, high = (float(v) for v in value_range)
    images = np.clip((np.asarray(images, "float32") - low) / (high - low), 0.0, 1.0)
    if images.shape[-1] not in (1, 3, 4):
        images = images.mean(axis=-1, keepdims=True)
    return images


def make_grid(panels, padding=2, separator=4, pad_value=1.0, separator_value=0.5):
    """Tiles same-shaped panels of images side by side into one image.

    Each panel is `(rows, cols, h, w, c)`; inside a panel every tile has
    `padding` pixels of `pad_value` on each side (shared between
    neighbours), and panels are separated by a `separator`-pixel strip of
    `separator_value`. Tile `(r, j)` of panel `p` starts at row
    `padding + r * (h + padding)` and column
    `p * (panel_width + separator) + padding + j * (w + padding)`, with
    `panel_width = padding + cols * (w + padding)`.

    Args:
        panels: list of arrays `(rows, cols, h, w, c)` in `[0, 1]`.
        padding: int, pixels between tiles.
        separator: int, pixels between panels.
        pad_value: float, value of the padding.
        separator_value: float, value of the separator strip.

    Returns:
        Float32 array `(rows * (h + padding) + padding, width, c)`.

    Example:

    >>> panel = np.zeros((2, 3, 4, 4, 1))
    >>> make_grid([panel, panel], padding=1, separator=2).shape
    (11, 34, 1)
    """
    rows, cols, h, w, c = panels[0].shape
    height = padding + rows * (h + padding)
    width = padding + cols * (w + padding)
    strips = []
    for index, panel in enumerate(panels):
        if panel.shape != panels[0].shape:
            raise ValueError(
                "All panels must have the same shape. Received: "
                f"{[tuple(p.shape) for p in panels]}")
        canvas = np.full((height, width, c), pad_value, "float32")
        for r in range(rows):
            for j in range(cols):
                top, left = padding + r * (h + padding), padding + j * (w + padding)
                canvas[top:top + h, left:left + w] = panel[r, j]
        if index:
            strips.append(np.full((height, separator, c), separator_value, "float32"))
        strips.append(canvas)
    return np.concatenate(strips, axis=1)


def write_png(path, grid, scale=1):
    """Writes a `[0, 1]` grid `(H, W, C)` as an 8-bit PNG (no matplotlib,
    no TensorFlow: the standard library's zlib)."""
    image = np.round(np.clip(grid, 0.0, 1.0) * 255).astype("uint8")
    if scale > 1:
        image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    with open(path, "wb") as fh:
        fh.write(encode_png(image))


def encode_png(image):
    """PNG bytes of a uint8 image `(H, W, C)`, C in 1 (grey), 3 (RGB) or 4 (RGBA)."""
    height, width, channels = image.shape
    colour_type = {1: 0, 3: 2, 4: 6}[channels]

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = np.concatenate([np.zeros((height, 1), "uint8"),  # filter type 0 per row
                           np.ascontiguousarray(image).reshape(height, width * channels)], 1)
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes())) + chunk(b"IEND", b""))


def write_image_summary(tag, grid, step):
    """`tf.summary.image` of one `[0, 1]` grid, written with TensorFlow alone.

    Same event format as TensorBoard's `tf.summary.image` (plugin "images":
    width, height, PNG bytes), but it does not need the `tensorboard` package,
    which TensorFlow 2.21 no longer installs; only viewing needs it.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    image = np.round(np.clip(grid, 0.0, 1.0) * 255).astype("uint8")
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"))
    tensor = tf.stack([tf.as_string(image.shape[1]), tf.as_string(image.shape[0]),
                       tf.constant(encode_png(image))])
    return tf.summary.write(tag, tensor, step=step, metadata=metadata)


def write_figure(path, panels, titles, row_labels, title=None, dpi=100):
    """Writes an annotated figure: one titled subplot per panel (matplotlib).

    Uses `matplotlib.figure.Figure` without pyplot, so it changes no
    backend and works in notebooks and headless runs alike.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "SampleGrid(figure=True) needs matplotlib: `pip install matplotlib`, "
            "or use figure=False for a plain PNG grid.") from error
    rows, cols, h, w, c = panels[0].shape
    figure = Figure(figsize=(1.0 + 0.45 * cols * len(panels), 0.6 + 0.45 * rows),
                    layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel, panel_title in zip(axes, panels, titles):
        grid = make_grid([panel], padding=1)
        ax.imshow(grid[..., 0] if c == 1 else grid, cmap="gray" if c == 1 else None,
                  vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(panel_title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([1 + r * (h + 1) + h / 2 for r in range(rows)])
        ax.set_yticklabels(row_labels, fontsize=8)
        ax.tick_params(length=0)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=dpi)
