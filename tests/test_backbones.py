"""Bring-your-own backbones: wrap() and an mgr fit with random weights, no download."""

import keras
import numpy as np
import pytest
import tiny

import keras_mgr
from keras_mgr.backbones import resnet18, small_cnn


def fit_mgr(backbone, num_classes=3):
    """Wraps `backbone` with a tiny generator, fits 2 mgr steps, returns (model, history)."""
    image_shape = tuple(backbone.input_shape[1:])
    keras.utils.set_random_seed(0)
    model = keras_mgr.wrap(backbone, tiny.generator(image_shape=image_shape,
                                                    num_classes=num_classes),
                           num_classes=num_classes, seed=0, meta_batch_size=4, meta_every=1,
                           finder_hidden_dim=8)
    model.compile(finder_optimizer=keras.optimizers.SGD(1.0))
    x, y = tiny.data(8, image_shape=image_shape, num_classes=num_classes)
    before = {v.path: v.numpy() for v in model.weights}
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False).history
    for term in ("loss", "ce_loss", "pcr_loss", "meta_loss", "meta_grad_norm"):
        assert np.isfinite(history[term][0]), (term, history)
    # The meta-gradient reached the finder through this backbone (step 2;
    # step 1 has an empty validation buffer), and the backbone trained.
    assert history["meta_grad_norm"][0] > 0
    changed = {v.path for v in model.weights if not np.array_equal(v.numpy(), before[v.path])}
    assert any(p.startswith("finder/") for p in changed), changed
    assert any(v.path in changed for v in backbone.trainable_weights), changed
    # Inference is head(backbone(x)), with this backbone's features.
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               model.head(backbone(x, training=False)), rtol=1e-4, atol=1e-5)
    assert model.predict(x, verbose=0).shape == (8, num_classes)
    return model, history


def _mobilenet():
    return keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, pooling="avg", weights=None)


@pytest.mark.slow  # 45 s: the second-order meta step through MobileNetV2; fast twin below
def test_keras_applications_backbone():
    backbone = _mobilenet()
    model, _ = fit_mgr(backbone)
    assert model.backbone is backbone


def test_keras_applications_backbone_trains_pcr():
    """The fast twin: PCR's stateless view passes through MobileNetV2 (its
    BatchNorm statistics come from the real batch only)."""
    backbone = _mobilenet()
    keras.utils.set_random_seed(0)
    model = keras_mgr.wrap(backbone, tiny.generator(image_shape=(32, 32, 3)), num_classes=3,
                           mode="pcr", seed=0)
    model.compile()
    x, y = tiny.data(8, image_shape=(32, 32, 3))
    before = [v.numpy() for v in backbone.non_trainable_weights]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["pcr_loss"][0]) and history["pcr_loss"][0] > 0
    assert model.backbone is backbone
    assert any(not np.array_equal(b, v.numpy())
               for b, v in zip(before, backbone.non_trainable_weights))  # real-batch BN


def test_plain_functional_and_sequential_backbones():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    functional = keras.Model(inputs, keras.layers.GlobalMaxPooling2D()(h))
    sequential = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, padding="same"),
        keras.layers.BatchNormalization(momentum=0.9),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
    ])
    for backbone in (functional, sequential, small_cnn((8, 8, 1), widths=(4, 8))):
        fit_mgr(backbone)


def test_project_resnet18():
    backbone = resnet18((16, 16, 3), width=4)
    model, _ = fit_mgr(backbone)
    moving = [v for v in backbone.non_trainable_weights if "moving_mean" in v.path]
    assert len(moving) == 1 + 8 * 2 + 3  # stem, 2 per block, 3 projections


def keras_cv_resnet18(image_shape=(32, 32, 3)):
    """keras-cv's generic ResNetBackbone, ResNet-18 configuration, built offline.

    (ResNet18V2Backbone would fetch a preset.) keras-cv backbones return
    feature maps: add the pooling wrap() needs.
    """
    import keras_cv  # requirements-test.txt: a test extra, never a runtime need

    features = keras_cv.models.ResNetBackbone(
        stackwise_filters=[64, 128, 256, 512], stackwise_blocks=[2, 2, 2, 2],
        stackwise_strides=[1, 2, 2, 2], block_type="basic_block",
        include_rescaling=False, input_shape=image_shape)
    return features


@pytest.mark.slow  # keras_applications and keras-hub backbones train in the fast run
def test_keras_cv_resnet_backbone_built_offline():
    features = keras_cv_resnet18()
    assert features.count_params() == 11_186_112  # ResNet-18 without its top
    with pytest.raises(ValueError, match="pooled feature vectors"):
        keras_mgr.wrap(features, tiny.generator(image_shape=(32, 32, 3)))
    inputs = keras.Input((32, 32, 3))
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(features(inputs)))
    model, _ = fit_mgr(backbone)
    assert model.backbone.output_shape == (None, 512)
