"""keras-hub backbones (random weights, built from config, no download) in every mode.

keras-hub is installed with --no-deps (requirements-nodeps.txt): its metadata
pulls tensorflow-text, hence a second TensorFlow beside tensorflow-cpu.
"""

import keras
import keras_hub  # make setup installs it (requirements-nodeps.txt): a missing one fails
import numpy as np
import pytest
import tiny

import keras_mgr

IMAGE_SHAPE = (16, 16, 3)


def resnet_features():
    """A one-stack basic-block ResNet (keras-hub requires 64 filters in stack 1)."""
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64],
        stackwise_num_blocks=[1], stackwise_num_strides=[1], block_type="basic_block",
        image_shape=IMAGE_SHAPE)


def efficientnet_features():
    """A one-stack EfficientNet: stem, one MBConv block (depthwise, squeeze-excite), top.

    `num_features` keeps its default: keras-hub 0.32's get_config() leaves it
    out, so any other value would not load back from a .keras file.
    """
    return keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0], stackwise_depth_coefficients=[1.0],
        stackwise_kernel_sizes=[3], stackwise_num_repeats=[1], stackwise_input_filters=[8],
        stackwise_output_filters=[16], stackwise_expansion_ratios=[2],
        stackwise_squeeze_and_excite_ratios=[0.25], stackwise_strides=[2],
        stackwise_block_types=["unfused"], input_shape=IMAGE_SHAPE)


FAMILIES = {"resnet": resnet_features, "efficientnet": efficientnet_features}


def pooled(features):
    """keras-hub backbones return feature maps; wrap() needs pooled features."""
    inputs = keras.Input(IMAGE_SHAPE)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(features(inputs)))


@pytest.mark.parametrize("family", FAMILIES)
def test_feature_maps_need_pooling(family):
    features = FAMILIES[family]()
    assert len(features.output_shape) == 4  # (batch, h, w, c)
    with pytest.raises(ValueError, match="pooled feature vectors"):
        keras_mgr.wrap(features, tiny.generator(image_shape=IMAGE_SHAPE))


def _cases():
    """Every family in mgr (the mode using every part) and ResNet in every
    mode run by default; EfficientNet's other modes run in `make test-slow`."""
    for family in FAMILIES:
        for mode in keras_mgr.MODES:
            slow = family != "resnet" and mode != "mgr"
            yield pytest.param(family, mode, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("family, mode", _cases())
def test_keras_hub_backbone_every_mode_fits_and_round_trips(family, mode, tmp_path):
    backbone = pooled(FAMILIES[family]())
    model = keras_mgr.wrap(backbone, tiny.generator(image_shape=IMAGE_SHAPE), mode=mode,
                           seed=0, meta_every=1, meta_batch_size=4, finder_hidden_dim=8)
    model.compile()
    x, y = tiny.data(8, image_shape=IMAGE_SHAPE)
    finder = model.finder.weights if model.uses_finder else []
    assert (model.finder is None) != model.uses_finder  # built only where used
    finder_before = [v.numpy() for v in finder]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False).history
    assert {"loss", "ce_loss"} <= history.keys(), history
    assert all(np.isfinite(values).all() for values in history.values()), history
    # Step 2's meta step (step 1 has an empty validation buffer) moved the finder.
    finder_moved = any(not np.array_equal(a, v.numpy())
                       for a, v in zip(finder_before, finder))
    assert finder_moved == model.uses_finder, (mode, finder_moved)
    if mode == "mgr":
        assert np.isfinite(history["pcr_loss"][0]) and np.isfinite(history["meta_loss"][0])
        assert history["meta_grad_norm"][0] > 0

    model.save(tmp_path / "m.keras")
    loaded = keras_mgr.load_model(tmp_path / "m.keras")
    assert any(isinstance(layer, keras_hub.models.Backbone) for layer in loaded.backbone.layers)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
