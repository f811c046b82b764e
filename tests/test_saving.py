"""Saving, loading and resuming a wrapped model."""

import keras
import numpy as np
import pytest
import tiny

import keras_mgr
from keras_mgr.generators import GeneratorAdapter, conditional_generator


def build(mode, generator=None, **kwargs):
    keras.utils.set_random_seed(0)
    if generator is None:
        generator = conditional_generator(5, 3, (8, 8, 1), base_filters=4)
        generator.trainable = False
    model = keras_mgr.wrap(tiny.backbone(norm="keras"), generator, mode=mode, seed=0,
                           meta_batch_size=8, finder_hidden_dim=8,
                           **{"meta_every": 1, **kwargs})
    model.compile()
    return model


def optimizer_state(optimizer):
    return [v.numpy() for v in optimizer.variables]


@pytest.mark.parametrize("mode", keras_mgr.MODES)
def test_keras_round_trip_every_mode(mode, tmp_path):
    x, y = tiny.data(16)
    model = build(mode)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for a, b in zip(optimizer_state(loaded.optimizer), optimizer_state(model.optimizer)):
        np.testing.assert_array_equal(a, b)
    if model.uses_finder:
        assert loaded.finder_optimizer.iterations.numpy() == 1  # step 1: buffer empty
        for a, b in zip(optimizer_state(loaded.finder_optimizer),
                        optimizer_state(model.finder_optimizer)):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(loaded.finder.weights, model.finder.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Training goes on from the restored state identically.
    for m in (model, loaded):
        m.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_unserializable_generator_error_and_weights_only_path(tmp_path):
    source = conditional_generator(5, 3, (8, 8, 1), base_filters=4)
    generator = GeneratorAdapter(source, latent_dim=5, num_classes=3)
    model = build("mgr", generator=generator)
    x, y = tiny.data(16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="cannot be serialized.*save_weights_only=True"):
        model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    rebuilt = build("mgr", generator=GeneratorAdapter(
        conditional_generator(5, 3, (8, 8, 1), base_filters=4), latent_dim=5, num_classes=3))
    rebuilt.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_array_equal(rebuilt.predict(x, verbose=0), model.predict(x, verbose=0))
    checkpoint = keras.callbacks.ModelCheckpoint(tmp_path / "c.weights.h5",
                                                 save_weights_only=True)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[checkpoint])
    assert (tmp_path / "c.weights.h5").exists()


def test_checkpoints_without_the_generator(tmp_path):
    x, y = tiny.data(16)
    model = build("mgr", checkpoint_generator=False)
    with_generator = build("mgr")
    assert len(model.weights) == len(with_generator.weights) - len(model.generator.weights)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras_mgr.load_model(tmp_path / "m.keras", generator=model.generator)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.generator is model.generator


class Interrupt(keras.callbacks.Callback):
    def __init__(self, at_step):
        super().__init__()
        self.at_step, self.seen = at_step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at_step:
            raise RuntimeError("interrupted")


@pytest.mark.parametrize("mode", ["mgr", "pcr"])
def test_backup_and_restore_resumes_mid_epoch(mode, tmp_path):
    """Interrupted in epoch 2 at step 6, a fresh model resumes and ends with the
    weights of an uninterrupted run (CPU ops are deterministic here; rtol 1e-5)."""
    x, y = tiny.data(32)
    reference = build(mode)
    reference.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = build(mode)
    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                        callbacks=[backup, Interrupt(6)])
    resumed = build(mode)
    resumed.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    assert resumed.optimizer.iterations.numpy() == reference.optimizer.iterations.numpy()
    if mode == "mgr":
        assert (resumed.finder_optimizer.iterations.numpy()
                == reference.finder_optimizer.iterations.numpy() == 11)  # not step 1
    for a, b in zip(resumed.weights, reference.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
