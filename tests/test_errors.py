"""Bad input fails early with a message quoting what was received."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny

import keras_mgr


def wrap(backbone=None, generator=None, **kwargs):
    return keras_mgr.wrap(backbone or tiny.backbone(), generator or tiny.generator(),
                          **kwargs)


def test_generator_shape_mismatch_and_resize_option():
    generator = tiny.generator(image_shape=(6, 6, 1))
    with pytest.raises(ValueError, match=r"output shape \(6, 6, 1\).*\(8, 8, 1\).*resize"):
        wrap(generator=generator)
    model = wrap(generator=generator, resize_synthetic=True)
    phi = [v.value for v in model.finder.trainable_variables]
    assert model.synthesis(phi, model.objective.draw(2)).shape == (2, 8, 8, 1)
    with pytest.raises(ValueError, match=r"channel counts differ.*\(8, 8, 3\)"):
        wrap(generator=tiny.generator(image_shape=(8, 8, 3)), resize_synthetic=True)


def test_value_range_mismatch():
    with pytest.raises(ValueError, match=r"outputs values in \(-1.0, 1.0\).*\(0, 255\)"):
        wrap(input_range=(0, 255))
    backbone = tiny.backbone()
    backbone.input_range = (0.0, 1.0)
    with pytest.raises(ValueError, match=r"expects \(0.0, 1.0\)"):
        wrap(backbone)
    wrap(input_range=(-1, 1))  # equal ranges are fine


def test_num_classes_mismatch():
    with pytest.raises(ValueError, match="num_classes=5 passed to wrap.*num_classes=3"):
        wrap(num_classes=5)


def test_label_format_and_range():
    model = wrap()
    model.compile()
    x, y = tiny.data(6)
    with pytest.raises(ValueError, match=r"one-hot of shape \(n, 3\).*shape \(6, 4\)"):
        model.fit(x, np.eye(4)[y], verbose=0)
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\).*\[0, 7\]"):
        model.fit(x, np.array([0, 1, 2, 7, 0, 1]), verbose=0)
    with pytest.raises(ValueError, match=r"integer class ids.*\[0.5\]"):
        model.fit(x, np.array([0, 1, 2, 0.5, 0, 1]), verbose=0)
    with pytest.raises(ValueError, match=r"shape \(None, 2, 2\)"):
        model.fit(tf.data.Dataset.from_tensor_slices(
            (np.zeros((8, 8, 8, 1), "float32"), np.zeros((8, 2, 2)))).batch(4), verbose=0)


def test_trainable_generator():
    generator = tiny.generator()
    generator.trainable = True
    with pytest.raises(ValueError, match=r"generator.trainable = False.*\d+ trainable"):
        wrap(generator=generator)


def test_unpooled_backbone():
    inputs = keras.Input((8, 8, 1))
    backbone = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match=r"pooled.*\(None, 6, 6, 4\)"):
        wrap(backbone)


def test_empty_data():
    model = wrap()
    model.compile()
    with pytest.raises(ValueError, match=r"empty.*\(0, 8, 8, 1\)"):
        model.fit(np.zeros((0, 8, 8, 1), "float32"), np.zeros((0,), "int32"), verbose=0)
    empty = tf.data.Dataset.from_tensor_slices(
        (np.zeros((0, 8, 8, 1), "float32"), np.zeros((0,), "int32"))).batch(4)
    with pytest.raises(ValueError, match="empty.*cardinality 0"):
        model.fit(empty, verbose=0)


def test_image_shape_mismatch_in_fit():
    model = wrap()
    model.compile()
    with pytest.raises(ValueError, match=r"\(8, 8, 1\) were expected.*\(4, 9, 9, 1\)"):
        model.fit(np.zeros((4, 9, 9, 1), "float32"), np.zeros(4, "int32"), verbose=0)


@pytest.mark.tensorflow_only("TensorFlow's RandomHue has no image gradient; JAX's has one")
def test_non_differentiable_augmentation():
    rgb = {"backbone": tiny.backbone((8, 8, 3)), "generator": tiny.generator(image_shape=(8, 8, 3))}
    with pytest.raises(ValueError, match="not differentiable.*RandomHue"):
        wrap(augmentation=keras.layers.RandomHue(0.2, value_range=(-1, 1)), **rgb)
    wrap(augmentation=keras.layers.RandomFlip())  # differentiable: accepted


def test_invalid_options():
    with pytest.raises(ValueError, match="mode must be one of.*'foo'"):
        wrap(mode="foo")
    with pytest.raises(ValueError, match="consistency must be one of.*'l1'"):
        wrap(consistency="l1")
    with pytest.raises(ValueError, match="meta_gradient must be one of.*'first_order'"):
        wrap(meta_gradient="first_order")
    with pytest.raises(ValueError, match="meta_every must be an integer >= 1.*0"):
        wrap(meta_every=0)


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy",
                                  keras.losses.sparse_categorical_crossentropy])
def test_crossentropy_by_name_trains_on_logits(loss):
    # The head outputs logits: a cross-entropy given by name must read them as
    # logits. On logits read as probabilities the loss below would differ.
    model = wrap(mode="base")
    model.compile(loss=loss)
    x, y = tiny.data(6)
    logits = model(x)
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    np.testing.assert_allclose(float(model._ce(keras.ops.array(y), logits)),
                               float(expected), rtol=1e-6)


def test_probability_losses_and_softmax_backbones_are_refused():
    model = wrap(mode="base")
    with pytest.raises(ValueError, match="expects probabilities.*Received: "
                                         "SparseCategoricalCrossentropy with from_logits=False"):
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy())
    with pytest.raises(ValueError, match=r"must be one of.*Received: loss='mse'"):
        model.compile(loss="mse")
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    for top in (keras.layers.Dense(3, activation="softmax", name="probs"),
                keras.layers.Softmax(name="probs")):
        backbone = keras.Model(inputs, top(features))
        with pytest.raises(ValueError, match="features, not probabilities.*last layer "
                                             "'probs'"):
            wrap(backbone)


@pytest.mark.parametrize("name, value, message", [
    ("meta_batch_size", 0, "an integer >= 1"),
    ("pcr_weight", -1.0, "a number >= 0"),
    ("gda_weight", -0.5, "a number >= 0"),
    ("finder_learning_rate", -1e-3, "a number > 0"),
    ("finder_learning_rate", 0.0, "a number > 0"),
    ("meta_every", 2.7, "an integer >= 1"),
    ("synthetic_batch_size", 0, "an integer >= 1 or None"),
    ("finite_difference_epsilon", 0.0, "a number > 0"),
    ("pcr_weight", float("nan"), "a number >= 0"),
])
def test_invalid_option_values_quote_the_value(name, value, message):
    mode = "metagda" if name == "gda_weight" else "mgr"
    with pytest.raises(ValueError, match=rf"{name} must be {message}\. "
                                         rf"Received: {name}={value!r}"):
        wrap(mode=mode, **{name: value})


def test_options_the_mode_does_not_use_are_named():
    with pytest.warns(UserWarning, match=r"mode='base' does not use consistency, "
                                         r"meta_every: ignored. Received: "
                                         r"consistency='simsiam', meta_every=3"):
        wrap(mode="base", consistency="simsiam", meta_every=3)
    with pytest.warns(UserWarning, match=r"mode='pcr' does not use gda_weight"):
        wrap(mode="pcr", gda_weight=2.0)
    with pytest.warns(UserWarning, match=r"mode='pcr' has no finder: finder_optimizer "
                                         r"ignored. Received: 'sgd'"):
        wrap(mode="pcr").compile(finder_optimizer="sgd")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        wrap(mode="mgr", pcr_weight=2.0, meta_every=3)  # all used: no warning


def _ds(x, y, batch=4):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _bad_inputs():
    """(case, x, y, message) for fit: each on the NumPy and the tf.data path."""
    x, y = tiny.data(8)
    soft = np.full((8, 3), 1 / 3, "float32")
    return [
        ("float labels", x, y + 0.5, r"integer class ids.*non-integer values such as \[0.5"),
        ("soft labels", x, soft, r"look one-hot but rows are not one-hot.*first row \[0.33"),
        ("string labels", x, np.array(["cat"] * 8), r"not strings.*Received: .*labels"),
        ("0..255 images", (x + 1) * 127.5, y,
         r"value range \[-1, 1\].*Received: .* values in \[\d.*, 2\d\d\.?\d*\]"),
        ("wrong image size", np.zeros((8, 9, 9, 1), "float32"), y, r"\(8, 8, 1\).*9, 9, 1"),
        ("labels out of range", x, np.full(8, 5), r"class ids in \[0, 3\).*\[5, 5\]"),
    ]


@pytest.mark.parametrize("path", ["numpy", "tf.data"])
@pytest.mark.parametrize("case", range(6))
def test_bad_fit_inputs_on_both_paths(case, path):
    name, x, y, message = _bad_inputs()[case]
    model = wrap(mode="mgr", meta_every=1)
    model.compile()
    with pytest.raises(ValueError, match=message):
        if path == "numpy":
            model.fit(x, y, batch_size=4, verbose=0)
        else:
            model.fit(_ds(x, y), verbose=0)
    assert int(model.optimizer.iterations) == 0, name  # failed before any step


def test_dataset_structure_errors():
    model = wrap(mode="pcr")
    model.compile()
    x, y = tiny.data(8)
    cases = [
        (tf.data.Dataset.from_tensor_slices(x).batch(4), r"\(images, labels\).*element_spec"),
        (tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).batch(4),
         r"map dicts.*'image'"),
        (tf.data.Dataset.from_tensor_slices((x, y)), r"batch it.*images \(8, 8, 1\)"),
        (_ds(x, y).filter(lambda a, b: False), "empty: it yielded no batch"),
    ]
    for ds, message in cases:
        with pytest.raises(ValueError, match=message):
            model.fit(ds, verbose=0)
    with pytest.raises(ValueError, match=r"needs labels.*x of shape \(8, 8, 8, 1\) and y=None"):
        model.fit(x, verbose=0)


def test_value_range_is_not_checked_where_no_synthetic_image_is_used():
    # base never sees a generator image: its inputs may use any range.
    model = wrap(mode="base")
    model.compile()
    x, y = tiny.data(8)
    model.fit(x * 100.0, y, batch_size=8, verbose=0)
    assert int(model.optimizer.iterations) == 1


def test_wrap_refuses_gans_bad_generator_signatures_and_dynamic_sizes():
    from keras_mgr.generators import ConditionalGAN

    gan = ConditionalGAN(num_classes=3, image_shape=(8, 8, 1), latent_dim=5,
                         generator_filters=4, discriminator_filters=4)
    with pytest.raises(ValueError, match=r"not the whole GAN: pass `gan.generator`.*"
                                         r"ConditionalGAN"):
        wrap(generator=gan)

    class ZOnly(keras.Model):  # call(z): the protocol's [z, labels] does not fit
        latent_dim, num_classes, output_range = 5, 3, (-1.0, 1.0)

        def call(self, z, labels):
            return keras.ops.zeros((keras.ops.shape(z)[0], 8, 8, 1))

    with pytest.raises(ValueError, match=r"generator\(\[z, labels\], training=False\).*"
                                         r"Received: calling 'z_only' that way raised"):
        wrap(generator=ZOnly(name="z_only"))
    inputs = keras.Input((None, None, 1))
    dynamic = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3)(inputs)))
    with pytest.raises(ValueError, match=r"fixed input size.*\(None, None, None, 1\)"):
        wrap(dynamic)


def test_unserializable_model_with_keras_checkpoint_fails_before_training(tmp_path):
    from keras_mgr.generators import GeneratorAdapter

    fn = lambda z, y: keras.ops.tanh(keras.ops.reshape(  # noqa: E731
        keras.ops.tile(z[:, :1], (1, 64)), (-1, 8, 8, 1)))
    model = wrap(generator=GeneratorAdapter(fn, latent_dim=5, num_classes=3), mode="pcr")
    model.compile()
    x, y = tiny.data(8)
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "m.keras"))
    with pytest.raises(ValueError, match=r"ModelCheckpoint\('.*m.keras'\) saves the whole "
                                         r"model.*Received: serializing raised"):
        model.fit(x, y, batch_size=4, callbacks=[checkpoint], verbose=0)
    assert int(model.optimizer.iterations) == 0
    weights = keras.callbacks.ModelCheckpoint(str(tmp_path / "m.weights.h5"),
                                              save_weights_only=True)
    model.fit(x, y, batch_size=4, callbacks=[weights], verbose=0)  # the suggested fix
    assert (tmp_path / "m.weights.h5").exists()


def test_out_of_memory_names_what_lowers_the_peak(monkeypatch):
    """TensorFlow's ResourceExhaustedError, XLA's RESOURCE_EXHAUSTED error on
    JAX, or torch's OutOfMemoryError, re-raised as the same type with what
    lowers the peak."""
    if keras.backend.backend() == "torch":
        import torch

        error_type, original = torch.OutOfMemoryError, "CUDA out of memory. Tried to allocate"
        error = error_type(original)
    elif keras.backend.backend() == "jax":
        import jax

        error_type = jax.errors.JaxRuntimeError
        original = "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.00GiB"
        error = error_type(original)
    else:
        error_type, original = tf.errors.ResourceExhaustedError, "OOM when allocating tensor"
        error = error_type(None, None, original)

    def out_of_memory(*args, **kwargs):
        raise error

    monkeypatch.setattr(keras.Model, "fit", out_of_memory)  # what MGRModel.fit calls
    x, y = tiny.data(8)
    cases = [
        ({"mode": "mgr"}, r"meta_microbatches=4\) runs it over 4 slices.*Received: "
         r"meta_gradient='second_order', meta_microbatches='auto' \(1 slice\(s\)\), "
         r"synthetic batch 4 per replica"),
        ({"mode": "mgr", "meta_microbatches": 2}, r"a larger meta_microbatches.*"
         r"meta_microbatches=2 \(2 slice\(s\)\), synthetic batch 4"),
        ({"mode": "mgr", "synthetic_batch_size": 32}, r"a larger meta_microbatches.*"
         r"meta_microbatches='auto' \(4 slice\(s\)\), synthetic batch 32"),
        ({"mode": "metagda", "meta_gradient": "finite_difference"},
         r"mode='metagda'.*lower the batch_size or the synthetic_batch_size"),
        ({"mode": "pcr"}, r"mode='pcr'.*synthetic_batch_size\. Received: synthetic batch 4"),
        ({"mode": "base"}, r"mode='base'.*lower the batch_size\."),
    ]
    for options, message in cases:
        if options["mode"] != "base":
            options.setdefault("synthetic_batch_size", 4)
        model = wrap(**options)
        model.compile()
        with pytest.raises(error_type, match=message) as info:
            model.fit(x, y, batch_size=4, verbose=0)
        assert original in str(info.value)  # the original message kept
    # Any other error passes through untouched.
    monkeypatch.setattr(keras.Model, "fit", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("RESOURCE_ELSEWHERE")))
    with pytest.raises(RuntimeError, match="^RESOURCE_ELSEWHERE$"):
        model.fit(x, y, batch_size=4, verbose=0)


# Issue 24: traps that trained silently wrong, and cryptic errors made clear ---
def _features(inputs):
    return keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))


def test_softmax_followed_only_by_layers_that_keep_probabilities_is_refused():
    inputs = keras.Input((8, 8, 1))
    probs = keras.layers.Dense(3, activation="softmax", name="probs")(_features(inputs))
    dropped = keras.layers.Dropout(0.2, name="drop")(probs)
    linear = keras.layers.Activation("linear", name="lin")(dropped)
    with pytest.raises(ValueError, match=r"features, not probabilities.*Received: a backbone "
                                         r"whose layer 'probs' \(Dense\) applies a softmax, "
                                         r"followed only by layers that keep probabilities: "
                                         r"'drop' \(Dropout\), 'lin' \(Activation\)$"):
        wrap(keras.Model(inputs, linear))
    pooled = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                               keras.layers.Softmax(name="map"),
                               keras.layers.GlobalAveragePooling2D(name="pool")])
    with pytest.raises(ValueError, match=r"layer 'map' \(Softmax\) applies a softmax, followed "
                                         r"only by .*'pool'"):
        wrap(pooled)
    nested = keras.Sequential([keras.Model(inputs, probs), keras.layers.Dropout(0.1, name="d")])
    with pytest.raises(ValueError, match=r"layer 'probs' \(Dense\).*'d' \(Dropout\)$"):
        wrap(nested)
    # A layer that computes something after the softmax ends the search.
    relu = keras.layers.Dense(3, activation="relu")(dropped)
    wrap(keras.Model(inputs, relu), meta_batch_size=8, finder_hidden_dim=8)


@pytest.mark.tensorflow_only("the fused BatchNorm kernel is TensorFlow's")
def test_a_failed_wrap_leaves_the_backbone_unchanged(monkeypatch):
    from keras_mgr import mgr_model
    from keras_mgr.batchnorm import batchnorm_layers
    from keras_mgr.batchnorm.fused import is_fused

    backbone = tiny.backbone(norm="keras", momentum=0.99)
    (layer,) = batchnorm_layers(backbone)
    with pytest.raises(ValueError, match="pcr_weight must be"):  # checked by wrap first
        wrap(backbone, batchnorm_momentum=0.9, pcr_weight=-1.0)
    assert layer.momentum == 0.99 and not is_fused(layer)

    def fails(*args, **kwargs):
        raise RuntimeError("out of memory")

    # A failure inside MGRModel, after the momentum is set and the layers fused.
    monkeypatch.setattr(mgr_model, "ValidationBuffer", fails)
    with pytest.raises(RuntimeError, match="out of memory"):
        wrap(backbone, batchnorm_momentum=0.9)
    assert layer.momentum == 0.99 and not is_fused(layer)
    monkeypatch.undo()
    wrap(backbone, batchnorm_momentum=0.9)
    assert layer.momentum == 0.9 and is_fused(layer)


def test_backbone_with_two_inputs_is_refused():
    images, extra = keras.Input((8, 8, 1)), keras.Input((3,))
    backbone = keras.Model([images, extra],
                           keras.layers.Concatenate()([_features(images), extra]))
    with pytest.raises(ValueError, match=r"must take one input, a batch of images.*Received: "
                                         r"a backbone with 2 inputs of shapes "
                                         r"\[\(None, 8, 8, 1\), \(None, 3\)\]$"):
        wrap(backbone)


def _adapter(scale, offset=0.0, output_range=(-1.0, 1.0)):
    """A generator whose images are `offset + scale * z[0]`: 0 at z = 0, so
    only latents other than zeros show its range."""
    from keras_mgr.generators import GeneratorAdapter

    def fn(z, labels):
        return offset + scale * keras.ops.reshape(keras.ops.tile(z[:, :1], (1, 64)),
                                                  (-1, 8, 8, 1))

    return GeneratorAdapter(fn, latent_dim=5, num_classes=3, output_range=output_range)


def test_generator_returning_nan_is_refused():
    with pytest.raises(ValueError, match=r"returned NaN or Inf on standard-normal latents.*"
                                         r"Received: generator output with 512 non-finite of "
                                         r"512 values$"):
        wrap(generator=_adapter(np.nan))


def test_generator_values_must_lie_in_the_declared_or_assumed_range():
    # 0..255 images: centred at 127.5, spread by z.
    with pytest.raises(ValueError, match=r"lie in \[-1, 1\], the range wrap\(\) assumes when "
                                         r"neither.*Declare the range.*Received: generator "
                                         r"output \(8 standard-normal latents\) with values in "
                                         r"\[\d.*, \d.*\]$"):
        wrap(generator=_adapter(40.0, 127.5, output_range=None))
    with pytest.raises(ValueError, match=r"its declared output_range \[-1, 1\].*Correct "
                                         r"generator.output_range"):
        wrap(generator=_adapter(40.0, 127.5))
    with pytest.raises(ValueError, match=r"the backbone's input_range \[0, 255\] \(the "
                                         r"generator declares no output_range\)"):
        wrap(generator=_adapter(400.0, output_range=None), input_range=(0, 255))
    # Zero at z = 0, far out of [-1, 1] elsewhere: a check on zeros would miss it.
    with pytest.raises(ValueError, match=r"declared output_range \[-1, 1\]"):
        wrap(generator=_adapter(100.0))
    wrap(generator=_adapter(40.0, 127.5, output_range=(0, 255)), mode="pcr")
    wrap(generator=_adapter(0.3), mode="pcr")  # within [-1, 1] (5% slack) on these latents


@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.Adam(1e-2, loss_scale_factor=1024.0),
    lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-2))])
def test_a_finder_optimizer_that_unscales_is_refused(optimizer):
    """Its `apply` would divide the meta-gradient, which nothing scaled, by
    its scale: a finder step 1024 times (or 2^15 times) too small."""
    with pytest.raises(ValueError, match=r"never loss-scaled.*Received: finder_optimizer="):
        wrap(mode="mgr").compile(finder_optimizer=optimizer())

