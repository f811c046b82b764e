"""Every input path of fit, validation_data, evaluate, predict and compile gives
a clear error (quoting what was received, before any weight takes the bad
batch) instead of a silent wrong result (issue 24)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny

import keras_mgr
from keras_mgr.generators import ConditionalGAN

# tiny.wrapped's finder options in modes without a finder; BatchNorm after 3 steps.
pytestmark = pytest.mark.filterwarnings("ignore:mode='.*' does not use",
                                        "ignore:After .* training steps")
N = 12  # 3 batches of 4
SKIPPED = "that step's update skipped"


def model(mode="pcr", optimizer=None, **compile):
    return tiny.wrapped(mode, norm="keras", optimizer=optimizer or keras.optimizers.SGD(0.1),
                        compile=compile)


def ds(x, y, batch=4):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


class Snapshot(keras.callbacks.Callback):
    """The model's float weights (weights, BatchNorm statistics, nothing of
    the seed streams) now and after each training batch that ran to its end."""

    def __init__(self, model):
        super().__init__()
        self.on_train_batch_end(None, model=model)

    def on_train_batch_end(self, batch, logs=None, model=None):
        self.weights = {v.path: v.numpy() for v in (model or self.model).weights
                        if "float" in str(v.dtype)}


def assert_untouched(m, snapshot):
    """No float weight moved after the last good batch: the bad batch's
    update was skipped."""
    for v in m.weights:
        if v.path in snapshot.weights:
            np.testing.assert_array_equal(v.numpy(), snapshot.weights[v.path], err_msg=v.path)


def bad_batch(problem, batch):
    """`(x, y, in_step, up_front)`: tiny data whose `batch`-th batch of 4
    (1-based) has `problem`, and the messages of the step's check and of the
    up-front check of arrays or a first batch."""
    x, y = tiny.data(N)
    y = y.astype("float32")
    row = 4 * (batch - 1) + 1
    in_step, up_front = {
        "float label": (r"integer class ids.*Received: a non-integer label 0.5",
                        r"integer class ids. Received: non-integer values such as \[0.5\]"),
        "label == num_classes": (r"class ids in \[0, 3\).*Received: labels in \[\d, 3\]",
                                 r"class ids in \[0, 3\).*Received: labels in \[.*, 3"),
        "label -1": (r"class ids in \[0, 3\).*Received: labels in \[-1, \d\]",
                     r"class ids in \[0, 3\).*Received: labels in \[-1"),
        "0..255 images": (r"value range \[-1, 1\].*Received: images with values in "
                          r"\[\d+.*, 2\d\d.*\]", r"value range \[-1, 1\].*Received: .* with "
                          r"values in \[-?\d.*, 2\d\d"),
        "soft one-hot": (r"must be one-hot.*Received: rows with values in \[0.333333, "
                         r"0.333333\] summing to \[1, 1\]",
                         r"rows are not one-hot.*Received: first row \[0.333"),
    }[problem]
    if problem == "float label":
        y[row] = 0.5
    elif problem == "label == num_classes":
        y[row] = 3
    elif problem == "label -1":
        y[row] = -1
    elif problem == "0..255 images":
        x[row - 1:row + 3] = (x[row - 1:row + 3] + 1) * 127.5
    else:
        y = np.eye(3, dtype="float32")[y.astype(int)]
        y[row] = 1 / 3
    return x, y, in_step, up_front


# --- 2 and 6: tf.data is checked on every batch, not the first only ------------

@pytest.mark.parametrize("problem", ["float label", "label == num_classes", "label -1",
                                     "0..255 images", "soft one-hot"])
@pytest.mark.parametrize("batch", [1, 3])
def test_every_tf_data_batch_is_checked_before_its_update(problem, batch):
    x, y, in_step, up_front = bad_batch(problem, batch)
    m = model()
    snapshot = Snapshot(m)
    # The first batch is checked up front, before any step; a later one in
    # its step, whose update is skipped, and the host stops training.
    with pytest.raises(ValueError, match=up_front if batch == 1 else in_step) as info:
        m.fit(ds(x, y), verbose=0, callbacks=[snapshot])
    if batch == 3:
        assert SKIPPED in str(info.value) and "in training step 3" in str(info.value)
    assert int(m.optimizer.iterations) == batch - 1
    assert_untouched(m, snapshot)
    m.fit(ds(*tiny.data(N)), verbose=0)  # the state was cleared: clean data trains on
    assert int(m.optimizer.iterations) == batch - 1 + 3


def test_a_differently_sized_later_batch_is_refused_not_pooled():
    x, y = tiny.data(N)
    data = ds(x[:8], y[:8]).concatenate(ds(np.zeros((4, 9, 9, 1), "float32"), y[8:]))
    m = model()
    snapshot = Snapshot(m)
    # TensorFlow traces the step once for any batch size and checks the size as
    # it runs; JAX traces a step per shape, and the check refuses it there.
    received = (r"\(batch, 9, 9, 1\) in training step 3" if keras.backend.backend() ==
                "tensorflow" else r"\(4, 9, 9, 1\)")
    with pytest.raises(ValueError, match=r"\(8, 8, 1\) were expected.*Received: images of "
                                         r"shape " + received):
        m.fit(data, verbose=0, callbacks=[snapshot])
    assert int(m.optimizer.iterations) == 2
    assert_untouched(m, snapshot)


# The out-of-range label under XLA and from Python sources takes 35-42 s a
# case: slow. The fast cases still cover XLA, generators and PyDataset, and
# the label range is checked fast on tf.data batches 1 and 3 above.
@pytest.mark.parametrize("problem", [
    pytest.param("label == num_classes", marks=pytest.mark.slow), "0..255 images"])
@pytest.mark.compiled("jit_compile=True")
def test_checks_hold_under_xla(problem):
    x, y, message, _ = bad_batch(problem, 3)
    m = model(jit_compile=True)
    snapshot = Snapshot(m)
    assert m.jit_compile is True
    with pytest.raises(ValueError, match=message):
        m.fit(ds(x, y), verbose=0, callbacks=[snapshot])
    assert int(m.optimizer.iterations) == 2
    assert_untouched(m, snapshot)


@pytest.mark.compiled("steps_per_execution=2")
def test_with_steps_per_execution_the_steps_after_a_bad_batch_are_skipped_too():
    x, y, message, _ = bad_batch("label == num_classes", 3)
    m = model(steps_per_execution=2)
    with pytest.raises(ValueError, match=message + " in training step 3..4"):
        m.fit(ds(np.concatenate([x, x]), np.concatenate([y, y])), verbose=0)  # 6 batches
    # Steps 1 and 2 ran; 3 (bad) and 4, in the same call, did not.
    assert int(m.optimizer.iterations) == 2


def test_a_bad_batch_in_one_replica_stops_every_replica():
    strategy = tf.distribute.MirroredStrategy(
        ["CPU:0", "CPU:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    x, y = tiny.data(N)
    y[10] = 3  # batch 3, the second replica's half
    m = tiny.wrapped("pcr", scope=strategy, optimizer=lambda: keras.optimizers.SGD(0.1))
    snapshot = Snapshot(m)
    with pytest.raises(ValueError, match=r"Received: labels in \[\d, 3\] in training step 3"):
        m.fit(ds(x, y), verbose=0, callbacks=[snapshot])
    assert_untouched(m, snapshot)  # zero gradients under tf.distribute: plain SGD stays
    with pytest.raises(ValueError, match=r"Received: labels in \[\d, 3\] in evaluate batch 3"):
        m.evaluate(ds(x, y), verbose=0)


# --- 2: Python generators and keras.utils.PyDataset get the same checks ---------

class Batches(keras.utils.PyDataset):
    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


# Fast: float labels from both sources, 0..255 images from a generator (the
# PyDataset case took 25 s in make test, the same check on the same path).
@pytest.mark.parametrize("source, problem", [
    ("generator", "float label"), ("PyDataset", "float label"),
    ("generator", "0..255 images"), pytest.param("PyDataset", "0..255 images",
                                                 marks=pytest.mark.slow),
    pytest.param("generator", "label == num_classes", marks=pytest.mark.slow),
    pytest.param("PyDataset", "label == num_classes", marks=pytest.mark.slow)])
def test_python_generators_and_py_datasets_are_checked(source, problem):
    x, y, message, _ = bad_batch(problem, 2)
    batches = [(x[i:i + 4], y[i:i + 4]) for i in range(0, N, 4)]
    data = (b for b in batches) if source == "generator" else Batches(batches)
    m = model()
    snapshot = Snapshot(m)
    with pytest.raises(ValueError, match=message + ".* in training step 2"):
        m.fit(data, verbose=0, callbacks=[snapshot], shuffle=False)
    assert int(m.optimizer.iterations) == 1
    assert_untouched(m, snapshot)


def test_python_list_labels_are_arrays():
    x, y = tiny.data(N)
    m = model(mode="base")
    m.fit(x, y.tolist(), batch_size=4, verbose=0)  # Keras alone: "Unrecognized data type"
    assert int(m.optimizer.iterations) == 3
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\).*Received: labels in \[0, 3\]"):
        m.fit(x, [0] * (N - 1) + [3], verbose=0)
    with pytest.raises(ValueError, match=r"Received: x of shape \(12, 8, 8, 1\), y of shape "
                                         r"\(11,\)"):
        m.evaluate(x, y.tolist()[:-1], verbose=0)


# --- 3: validation_data and evaluate are checked; predict refuses one image -----

@pytest.mark.parametrize("problem", ["float label", "label == num_classes", "label -1",
                                     "0..255 images", "soft one-hot"])
def test_validation_arrays_are_checked_before_training(problem):
    x, y, _, message = bad_batch(problem, 2)
    m = model()
    with pytest.raises(ValueError, match="In validation_data: .*" + message):
        m.fit(*tiny.data(N), batch_size=4, validation_data=(x, y), verbose=0)
    assert int(m.optimizer.iterations) == 0  # not after an epoch of training


def test_a_bad_later_validation_batch_stops_at_that_batch():
    x, y, message, _ = bad_batch("label == num_classes", 2)
    m = model()
    with pytest.raises(ValueError, match=message + " in validation batch 2"):
        m.fit(ds(*tiny.data(N)), validation_data=ds(x, y), verbose=0)
    with pytest.raises(ValueError, match=r"In validation_data: .*Received: first row"):
        m.fit(ds(*tiny.data(N)), validation_data=ds(*bad_batch("soft one-hot", 1)[:2]),
              verbose=0)
    with pytest.raises(ValueError, match=r"validation_data needs labels"):
        m.fit(*tiny.data(N), validation_data=(x,), verbose=0)


@pytest.mark.parametrize("problem", ["float label", "label == num_classes", "label -1",
                                     "0..255 images", "soft one-hot"])
def test_evaluate_checks_arrays_up_front_and_every_dataset_batch(problem):
    x, y, in_step, up_front = bad_batch(problem, 3)
    m = model()
    with pytest.raises(ValueError, match=in_step + " in evaluate batch 3"):
        m.evaluate(ds(x, y), verbose=0)
    with pytest.raises(ValueError, match="In evaluate: .*" + up_front):
        m.evaluate(x, y, batch_size=4, verbose=0)
    good = tiny.data(N)
    assert np.isfinite(m.evaluate(ds(*good), verbose=0, return_dict=True)["loss"])


def test_evaluate_without_labels_and_predict_of_one_image():
    x, y = tiny.data(N)
    m = model()
    with pytest.raises(ValueError, match=r"evaluate needs labels.*y=None"):
        m.evaluate(x, verbose=0)
    images_only = (b for b in [(x[:4],), (x[4:8],)])
    with pytest.raises(ValueError, match=r"Labels are needed.*images of shape \((None|4), 8, 8, "
                                         r"1\) alone"):  # None: the shape TensorFlow traces
        m.evaluate(images_only, verbose=0)
    with pytest.raises(ValueError, match=r"for one image pass x\[None\]. Received: images of "
                                         r"shape \(8, 8, 1\)"):
        m.predict(x[0], verbose=0)
    assert m.predict(x[0][None], verbose=0).shape == (1, 3)
    with pytest.raises(ValueError, match=r"\(8, 8, 1\) were expected.*\(4, 9, 9, 1\)"):
        m.predict(np.zeros((4, 9, 9, 1), "float32"), verbose=0)
    with pytest.raises(ValueError, match=r"\(8, 8, 1\) were expected.*\(\w+, 9, 9, 1\)"):
        m.predict(Batches([(np.zeros((4, 9, 9, 1), "float32"),)] * 2), verbose=0)


def test_predict_on_arrays_outside_the_training_range_is_refused():
    x, _ = tiny.data(N)
    with pytest.raises(ValueError, match=r"value range \[-1, 1\].*Received: x with values in "
                                         r"\[\d+(\.\d+)?, \d+"):
        model().predict(x * 127.5 + 127.5, verbose=0)
    assert model("base").predict(x * 127.5 + 127.5, verbose=0).shape == (N, 3)  # no range


def test_labels_at_the_boundary_pass_on_every_path():
    x, y = tiny.data(N)
    y[:] = 2  # num_classes - 1
    m = model()
    m.fit(x, y, batch_size=4, validation_data=(x, y), verbose=0)
    m.fit(ds(x, y), validation_data=ds(x, y), verbose=0)
    m.evaluate(x, y, verbose=0)
    m.evaluate(ds(x, y), verbose=0)
    assert int(m.optimizer.iterations) == 6


@pytest.mark.parametrize("label", [3, -1])
def test_a_label_out_of_range_fails_on_every_path(label):
    x, y = tiny.data(N)
    y[5] = label
    pattern = r"class ids in \[0, 3\).*Received: labels in " + (
        r"\[.*, 3\]" if label == 3 else r"\[-1, ")
    m = model()
    for run in (lambda: m.fit(x, y, verbose=0),
                lambda: m.fit(ds(x, y), verbose=0),
                lambda: m.fit(*tiny.data(N), validation_data=(x, y), verbose=0),
                lambda: m.evaluate(x, y, verbose=0)):
        with pytest.raises(ValueError, match=pattern):
            run()
    assert int(m.optimizer.iterations) == 1  # tf.data: batch 1, then batch 2 refused


# --- 4: ConditionalGAN.fit refuses images outside the generator's range ---------

@pytest.mark.parametrize("as_dataset", [False, True])
def test_gan_refuses_images_outside_its_output_range(as_dataset):
    gan = ConditionalGAN(num_classes=3, image_shape=(8, 8, 1), latent_dim=5,
                         generator_filters=4, discriminator_filters=4)
    gan.compile()
    x, y = tiny.data(N)
    x = (x + 1) * 127.5
    with pytest.raises(ValueError, match=r"value range \[-1, 1\].*values in \[\d+.*, 2\d\d"):
        gan.fit(ds(x, y), verbose=0) if as_dataset else gan.fit(x, y, verbose=0)
    assert int(gan.g_optimizer.iterations) == 0


# --- 1 and 5: compile refuses what would report or train wrong -------------------

@pytest.mark.parametrize("metric, message", [
    (keras.metrics.CategoricalAccuracy(), r"use \"sparse_categorical_accuracy\".*"
                                          r"Received: metric CategoricalAccuracy"),
    ("categorical_accuracy", r"for one-hot labels.*Received: metric 'categorical_accuracy'"),
    ("top_k_categorical_accuracy", r"use \"sparse_top_k_categorical_accuracy\""),
    (keras.metrics.TopKCategoricalAccuracy(k=2), r"Received: metric TopKCategoricalAccuracy"),
    (keras.metrics.CategoricalCrossentropy(from_logits=True),
     r"use SparseCategoricalCrossentropy\(from_logits=True\)"),
    (keras.metrics.categorical_accuracy, r"Received: metric categorical_accuracy"),
    ("auc", r"reads probabilities.*Received: metric 'auc'"),
    (keras.metrics.AUC(), r"reads probabilities.*Received: metric AUC \(from_logits=False\)"),
    ("sparse_categorical_crossentropy", r"reads probabilities"),
    (keras.metrics.SparseCategoricalCrossentropy(), r"reads probabilities"),
])
def test_compile_refuses_metrics_for_one_hot_labels_or_probabilities(metric, message):
    m = tiny.wrapped("base")
    with pytest.raises(ValueError, match=message):
        m.compile(metrics=[metric])
    with pytest.raises(ValueError, match=message):
        m.compile(metrics=[], weighted_metrics={"out": [metric]})


def test_compile_keeps_the_sparse_metrics_and_crossentropy_by_name():
    m = tiny.wrapped("base")
    m.compile(loss="categorical_crossentropy", metrics=[
        "accuracy", keras.metrics.SparseCategoricalAccuracy(name="sparse"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=2),
        keras.metrics.SparseCategoricalCrossentropy(from_logits=True)])
    x, y = tiny.data(N)
    logs = m.fit(x, np.eye(3)[y], batch_size=N, verbose=0).history
    assert logs["accuracy"] == logs["sparse"]  # one-hot labels: the same accuracy


@pytest.mark.parametrize("arguments, message", [
    ({"loss": keras.losses.CategoricalCrossentropy(from_logits=True)},
     r"a loss for one-hot labels.*Received: loss=CategoricalCrossentropy"),
    ({"loss": keras.losses.CategoricalFocalCrossentropy(from_logits=True)},
     r"Received: loss=CategoricalFocalCrossentropy"),
    ({"loss": keras.losses.categorical_focal_crossentropy},
     r"Received: loss=categorical_focal_crossentropy"),
    ({"loss": None}, r"one callable.*Received: loss=None"),
    ({"loss": {"out": "sparse_categorical_crossentropy"}}, r"Received: loss=\{'out'"),
    ({"loss": ["sparse_categorical_crossentropy"]}, r"Received: loss=\['sparse"),
    ({"optimizer": None}, r"Received: optimizer=None"),
    ({"optimizer": keras.optimizers.SGD(-0.1)}, r"> 0.*Received: SGD with learning_rate=-0.1"),
    ({"optimizer": keras.optimizers.Adam(0.0)}, r"> 0.*Received: Adam with learning_rate=0"),
    ({"optimizer": keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(
        -1e-3, 10, 0.9))}, r">= 0.*Received: Adam with a ExponentialDecay schedule starting "
                           r"at -0.001"),
])
def test_compile_refuses_losses_and_optimizers_that_cannot_work(arguments, message):
    m = tiny.wrapped("base")
    with pytest.raises(ValueError, match=message):
        m.compile(**arguments)


def test_a_warmup_schedule_from_zero_is_accepted():
    m = tiny.wrapped("base")
    m.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        0.0, 10, warmup_target=1e-3, warmup_steps=2)))


@pytest.mark.parametrize("arguments, message", [
    ({"batch_size": -4}, r"batch_size must be an integer >= 1.*Received: batch_size=-4"),
    ({"batch_size": 2.5}, r"Received: batch_size=2.5"),
    ({"epochs": -1}, r"epochs must be an integer >= 1.*Received: epochs=-1"),
    ({"epochs": 0}, r"Received: epochs=0"),
    ({"validation_batch_size": 0}, r"Received: validation_batch_size=0"),
])
def test_fit_refuses_bad_batch_sizes_and_epochs(arguments, message):
    m = tiny.wrapped("base")
    with pytest.raises(ValueError, match=message):
        m.fit(*tiny.data(N), validation_data=tiny.data(4), verbose=0, **arguments)
    assert int(m.optimizer.iterations) == 0


def test_fit_arguments_keep_their_positions():
    x, y = tiny.data(N)
    m = tiny.wrapped("pcr")
    history = m.fit(x, y, 4, 2, 0)  # batch_size=4, epochs=2, verbose=0
    assert len(history.history["loss"]) == 2 and int(m.optimizer.iterations) == 6
    assert m._fit_batch_size == 4
    with pytest.raises(ValueError, match="Received: batch_size=2.5"):
        m.fit(x, y, 2.5)
    assert keras_mgr.checks.numpy_labels is keras_mgr.data_checks.numpy_labels
