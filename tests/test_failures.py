"""A non-finite loss term stops training before it reaches any weight."""

import keras
import numpy as np
import pytest
import tiny

import keras_mgr


class NaNAfter(keras.layers.Layer):
    """Identity until `armed` is set, then multiplies by NaN."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.armed = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, x):
        return x * keras.ops.where(self.armed > 0, np.nan, 1.0)


def poisoned_generator():
    generator = tiny.generator()
    z, y = generator.inputs
    layer = NaNAfter()
    model = keras.Model([z, y], layer(generator([z, y])))
    model.latent_dim, model.num_classes, model.trainable = 5, 3, False
    return model, layer


@pytest.mark.parametrize("mode, term", [
    ("pcr", "pcr_loss"), ("gda", "gda_loss"),
    # mgr's plain step is pcr's with the finder; its meta step has a fast test below.
    pytest.param("mgr", "pcr_loss", marks=pytest.mark.slow)])
def test_nonfinite_synthetic_term_stops_before_update(mode, term):
    generator, poison = poisoned_generator()
    model = keras_mgr.wrap(tiny.backbone(norm="keras"), generator, mode=mode, seed=0,
                           meta_batch_size=8)
    model.compile()
    x, y = tiny.data(16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    before = [v.numpy() for v in model.weights]
    poison.armed.assign(1.0)
    with pytest.raises(FloatingPointError, match=f"Non-finite {term} at training step 3"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after = [v.numpy() for v in model.weights]
    assert all(np.all(np.isfinite(a)) for a in after if a.dtype.kind == "f")
    # BN statistics and the finder kept their values; no NaN anywhere.
    for v, a, b in zip(model.weights, before, after):
        if "moving" in v.path or "finder" in v.path:
            np.testing.assert_array_equal(a, b)


def test_nonfinite_ce_names_the_term():
    model = keras_mgr.wrap(tiny.backbone(), tiny.generator(), mode="base")
    model.compile()
    x, y = tiny.data(8)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="Non-finite ce_loss at training step 1"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert all(np.all(np.isfinite(v.numpy())) for v in model.trainable_weights)


def test_out_of_range_label_in_tf_data():
    import tensorflow as tf

    model = keras_mgr.wrap(tiny.backbone(), tiny.generator(), mode="base")
    model.compile()
    x, y = tiny.data(8)
    y[3] = 7
    # Caught on the first batch, before the graph runs, quoting the range.
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\).*\[0, 7\]"):
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), verbose=0)
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\).*\[0, 7\]"):
        model.fit(x, y, verbose=0)


def test_nonfinite_meta_loss_stops_before_the_finder_moves():
    model = keras_mgr.wrap(tiny.backbone(norm="keras"), tiny.generator(), mode="mgr", seed=0,
                           meta_batch_size=8, meta_every=1)
    model.compile()
    x, y = tiny.data(16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    before = [v.numpy() for v in model.weights]
    # The lookahead's validation batch (the previous real batch) turns NaN: the
    # current batch's ce_loss and pcr_loss stay finite, only meta_loss is not.
    model.validation.images.assign(np.full(model.validation.images.shape, np.nan, "float32"))
    with pytest.raises(FloatingPointError, match="Non-finite meta_loss at training step 3"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    trainable = {v.path for v in model.trainable_weights}
    checked = 0
    for v, a in zip(model.weights, before):
        if "finder" in v.path or "moving" in v.path or v.path in trainable:
            np.testing.assert_array_equal(v.numpy(), a, err_msg=v.path)
            checked += 1
    assert checked > len(model.finder.weights)


def test_rejected_batch_never_enters_the_validation_buffer():
    # A NaN image makes its step non-finite: nothing of that batch may reach
    # the lookahead's rolling buffer, so a later fit on clean data trains on.
    model = keras_mgr.wrap(tiny.backbone(), tiny.generator(), mode="mgr", seed=0,
                           meta_batch_size=8, meta_every=1)
    model.compile()
    x, y = tiny.data(8)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    held = model.validation
    buffer = held.images.numpy(), held.labels.numpy(), int(held.count)
    bad = x.copy()
    bad[2, 0, 0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="Non-finite ce_loss at training step 2"):
        model.fit(bad, (y + 1) % 3, batch_size=8, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.validation.images.numpy(), buffer[0])
    np.testing.assert_array_equal(model.validation.labels.numpy(), buffer[1])
    assert int(model.validation.count) == buffer[2]
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)  # no "Non-finite meta_loss"
    assert np.all(np.isfinite(model.validation.images.numpy()))


class WeightsFinite(keras.callbacks.Callback):
    """Records, after each batch, whether every weight and optimizer slot is finite."""

    def __init__(self):
        super().__init__()
        self.finite = []

    def on_train_batch_end(self, batch, logs=None):
        state = self.model.weights + self.model.optimizer.variables
        self.finite.append(all(np.all(np.isfinite(v.numpy())) for v in state
                               if v.dtype.startswith("float")))


def test_update_that_breaks_the_weights_stops_at_that_step():
    """Finite losses and gradients near 1e30 overflow Adam's second moment to
    inf, and the next update makes NaN weights: the step that broke them is
    named, and no message claims that weights are finite when they are not."""
    model = keras_mgr.wrap(tiny.backbone(norm="keras"), tiny.generator(), mode="pcr",
                           pcr_weight=1e30, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = tiny.data(32)
    watch = WeightsFinite()
    with pytest.raises(FloatingPointError) as error:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[watch])
    state = model.weights + model.optimizer.variables
    finite = all(np.all(np.isfinite(v.numpy())) for v in state if v.dtype.startswith("float"))
    message = str(error.value)
    if "no weight took a NaN" in message:
        assert finite, message
    else:
        assert not finite
        # The batch that broke them ran no callback: stopped right after it.
        step = len(watch.finite) + 1
        assert f"after the update of training step {step}," in message
        assert all(watch.finite)
