import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Two logical CPU devices for the tf.distribute tests; must precede any op.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "tensorflow_only(reason): a test of what only the TensorFlow backend "
        "has or does (skipped, with the reason, under another KERAS_BACKEND)")
    config.addinivalue_line(
        "markers", "compiled(reason): a test of jit_compile=True or steps_per_execution > 1, "
        "which keras_mgr refuses on PyTorch (skipped there with the reason; the refusal is "
        "tested in test_backends)")


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() == "tensorflow":
        return
    for item in items:
        marker = item.get_closest_marker("tensorflow_only")
        if marker is not None:
            item.add_marker(pytest.mark.skip(reason="TensorFlow only: " + marker.args[0]))
        marker = item.get_closest_marker("compiled")
        if marker is not None and keras.backend.backend() == "torch":
            item.add_marker(pytest.mark.skip(reason="Not on PyTorch: " + marker.args[0]))


@pytest.fixture
def float64():
    """Runs the test in float64 (finite differences need it)."""
    previous = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # the global policy is cached
    yield
    keras.config.set_floatx(previous[0])
    keras.config.set_dtype_policy(previous[1])


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
    # Keras's global state holds every model a test built: released, so that
    # a long test worker's heap (and each full garbage collection) stays small.
    keras.backend.clear_session(free_memory=False)
