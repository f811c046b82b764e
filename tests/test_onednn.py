"""keras_mgr.onednn: TensorFlow's oneDNN switch at import, per machine."""

import os
import platform
import subprocess
import sys

import pytest

from keras_mgr import onednn

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512 = AVX2 | {"avx512f", "avx512_vnni"}


def _choose(environ=None, loaded=False, machine="x86_64", flags=AVX2, cpus=2):
    return onednn.choose({"KERAS_BACKEND": "tensorflow", **(environ or {})}, loaded, machine,
                         flags, cpus)


def test_switches_on_only_on_an_x86_cpu_without_avx512_and_two_threads():
    assert _choose().switched_on
    assert _choose(machine="AMD64").switched_on  # Windows spells it so
    assert _choose(cpus=16).switched_on


@pytest.mark.parametrize("case, reason", [
    (dict(environ={"TF_ENABLE_ONEDNN_OPTS": "0"}), "TF_ENABLE_ONEDNN_OPTS='0' was set"),
    (dict(environ={"TF_ENABLE_ONEDNN_OPTS": "1"}), "TF_ENABLE_ONEDNN_OPTS='1' was set"),
    (dict(environ={"KERAS_BACKEND": "jax"}), "backend is 'jax'"),
    (dict(loaded=True), "TensorFlow was loaded before keras_mgr"),
    (dict(machine="aarch64"), "aarch64, not x86-64"),
    (dict(flags=AVX512), "has AVX-512"),
    (dict(flags=frozenset()), "does not report AVX2"),  # no /proc/cpuinfo (macOS)
    (dict(flags=frozenset({"sse4_2", "avx"})), "does not report AVX2"),
    (dict(cpus=1), "one intra-op thread"),
    (dict(environ={"TF_NUM_INTRAOP_THREADS": "1"}), "one intra-op thread"),
])
def test_leaves_the_switch_alone(case, reason):
    choice = _choose(**case)
    assert not choice.switched_on and reason in choice.reason


def _import_first(**variables):
    """`import keras_mgr` first in a fresh process: (switched on, TensorFlow's oneDNN on)."""
    code = ("import keras_mgr; from tensorflow.python.util import _pywrap_util_port as p; "
            "print('ONEDNN', keras_mgr.onednn.CHOICE.switched_on, p.IsMklEnabled())")
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS")}
    env.update(KERAS_BACKEND="tensorflow", **variables)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    line = [s for s in out.stdout.splitlines() if s.startswith("ONEDNN")]
    assert line, out.stderr[-2000:]
    expected = onednn.choose(env, False, platform.machine(), onednn.cpu_flags(),
                             onednn.usable_cpus()).switched_on
    return line[0].split()[1:], expected


def test_the_package_chooses_before_it_imports_keras():
    """`keras_mgr/__init__.py` imports onednn before anything that loads
    TensorFlow (an import sorter once moved it after `import keras`)."""
    import ast

    path = os.path.join(os.path.dirname(keras_mgr_file()), "__init__.py")
    imports = [node for node in ast.parse(open(path).read()).body
               if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [alias.name for node in imports for alias in node.names]
    assert names.index("onednn") < names.index("keras"), names
    assert names[:names.index("onednn")] == []


def test_choose_at_import_sets_the_variable_only_when_it_switches(monkeypatch):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow")  # restored after the test
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setattr(onednn, "cpu_flags", lambda: AVX2)
    monkeypatch.setattr(onednn, "usable_cpus", lambda: 2)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert onednn.choose_at_import().switched_on
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert not onednn.choose_at_import().switched_on
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"


def test_keras_backend_is_found_as_keras_finds_it(tmp_path):
    home = tmp_path / "keras_home"
    home.mkdir()
    config = home / "keras.json"
    environ = {"KERAS_HOME": str(home)}
    assert onednn.keras_backend(environ) == "tensorflow"  # no keras.json: Keras's default
    config.write_text('{"backend": "jax", "floatx": "float32"}')
    assert onednn.keras_backend(environ) == "jax"
    assert onednn.keras_backend(dict(environ, KERAS_BACKEND="torch")) == "torch"  # env wins
    assert onednn.keras_backend(dict(environ, KERAS_BACKEND="")) == "jax"  # empty: unset
    config.write_text('["jax"]')
    assert onednn.keras_backend(environ) == "tensorflow"
    config.write_text("{not json")
    assert onednn.keras_backend(environ) == "tensorflow"  # Keras reads it as {} too
    config.write_text('{"floatx": "float32"}')
    assert onednn.keras_backend(environ) == "tensorflow"

    class Loaded:  # an imported keras: its backend is fixed whatever the files say
        class backend:
            backend = staticmethod(lambda: "jax")
    assert onednn.keras_backend({"KERAS_BACKEND": "tensorflow"}, Loaded) == "jax"
    # A keras module still initialising (no backend yet): the settings decide.
    assert onednn.keras_backend({"KERAS_BACKEND": "jax"}, object()) == "jax"


def test_choose_at_import_reads_the_backend_from_keras_json(monkeypatch, tmp_path):
    (tmp_path / "keras.json").write_text('{"backend": "jax"}')
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorflow")  # restored after the test
    monkeypatch.delitem(sys.modules, "keras")
    monkeypatch.setattr(onednn, "cpu_flags", lambda: AVX2)
    monkeypatch.setattr(onednn, "usable_cpus", lambda: 2)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    choice = onednn.choose_at_import()
    assert not choice.switched_on and "backend is 'jax'" in choice.reason
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ
    assert os.environ.get("KERAS_BACKEND") is None  # keras.json still decides


def test_import_keeps_the_backend_that_keras_json_names(tmp_path):
    """`import keras_mgr` with no KERAS_BACKEND loads the backend of the
    user's keras.json, as `import keras` does."""
    (tmp_path / "keras.json").write_text('{"backend": "jax"}')
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND",)}
    env.update(KERAS_HOME=str(tmp_path), JAX_PLATFORMS="cpu")
    code = "import keras_mgr, keras; print('BACKEND', keras.backend.backend())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert "BACKEND jax" in out.stdout, out.stderr[-2000:]


def keras_mgr_file():
    import keras_mgr

    return keras_mgr.__file__


@pytest.mark.slow  # a fresh process loading TensorFlow; the two tests above are its fast twins
def test_import_sets_the_variable_before_tensorflow_loads():
    """Where `choose` says on for this machine, TensorFlow runs oneDNN."""
    (switched, enabled), expected = _import_first()
    assert switched == str(expected)
    if expected:
        assert enabled == "True"


@pytest.mark.slow  # a second fresh process; `choose` has the fast test of the override
def test_the_variable_set_to_0_keeps_oneDNN_off():
    assert _import_first(TF_ENABLE_ONEDNN_OPTS="0")[0] == ["False", "False"]


def test_wrap_warns_when_oneDNN_meets_one_thread(monkeypatch):
    import tensorflow as tf

    monkeypatch.setattr(onednn, "CHOICE", onednn.Choice(True, "test"))
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 1)
    import tiny

    import keras_mgr

    with pytest.warns(UserWarning, match="intra_op_parallelism_threads=1"):
        keras_mgr.wrap(tiny.backbone(), tiny.generator(), mode="base", num_classes=3)
    monkeypatch.setattr(onednn, "CHOICE", onednn.Choice(False, "test"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        onednn.warn_if_one_thread()  # not switched on by keras_mgr: nothing to say
