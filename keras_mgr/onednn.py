"""TensorFlow's oneDNN CPU kernels, switched on at import where they win.

TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, when it loads, and leaves
oneDNN off by default on CPUs without AVX-512 VNNI, AVX-VNNI or AMX. On a
CPU without AVX-512 its own (Eigen) convolution gradients then run instead,
and the training step loses most of its time there (docs/benchmarks.md,
"Where a step's time goes on an AVX2 CPU"). So `import keras_mgr`, when it
runs before TensorFlow loads, sets `TF_ENABLE_ONEDNN_OPTS=1` on such a
machine. It leaves the switch alone when:

- the variable is already set (`TF_ENABLE_ONEDNN_OPTS=0` keeps oneDNN off:
  that is the override);
- TensorFlow is already loaded (too late: its own default stands);
- the backend is not TensorFlow, or the CPU is not x86-64, or it has
  AVX-512 (TensorFlow's own default is kept there), or it does not report
  AVX2 (no `/proc/cpuinfo`, or an older CPU: not measured);
- TensorFlow would run one intra-op thread (one usable core or
  `TF_NUM_INTRAOP_THREADS=1`): TensorFlow 2.21 with oneDNN on one thread
  corrupts its heap while training a ResNet.

`CHOICE` says what was decided and why.

Example:

>>> import keras_mgr
>>> keras_mgr.onednn.CHOICE.reason  # doctest: +SKIP
'this CPU has no AVX-512: oneDNN's convolution gradients are faster ...'
"""

import json
import os
import platform
import sys
import warnings
from typing import NamedTuple

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


class Choice(NamedTuple):
    """What `import keras_mgr` did to TensorFlow's oneDNN switch, and why."""

    switched_on: bool  # whether keras_mgr set TF_ENABLE_ONEDNN_OPTS=1
    reason: str


def cpu_flags():
    """The CPU's feature flags as `/proc/cpuinfo` names them (empty where
    there is no such file)."""
    try:
        with open("/proc/cpuinfo") as fh:
            lines = [line for line in fh if line.startswith("flags")]
    except OSError:  # not Linux
        lines = []
    return frozenset(lines[0].split(":", 1)[1].split()) if lines else frozenset()


def keras_backend(environ, keras_loaded=None):
    """The backend Keras loads (or loaded), found as Keras finds it, without
    importing it: `KERAS_BACKEND`, else `"backend"` in `keras.json` under
    `KERAS_HOME` (default `~/.keras`, or `/tmp/.keras` where home is not
    writable), else `"tensorflow"`. `keras_loaded`: the `keras` module where
    it is already imported (its backend is then fixed)."""
    loaded = getattr(getattr(keras_loaded, "backend", None), "backend", None)
    if callable(loaded):  # (a keras still initialising has none yet)
        return loaded()
    if environ.get("KERAS_BACKEND"):  # Keras ignores an empty value
        return environ["KERAS_BACKEND"]
    if "KERAS_HOME" in environ:
        home = environ["KERAS_HOME"]
    else:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    try:
        with open(os.path.join(os.path.expanduser(home), "keras.json")) as fh:
            config = json.load(fh)
    except (OSError, ValueError):  # no file, or one Keras itself reads as {}
        return "tensorflow"
    backend = config.get("backend", "tensorflow") if isinstance(config, dict) else "tensorflow"
    return backend


def usable_cpus():
    """The cores this process may run on (its affinity, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def choose(environ, tensorflow_loaded, machine, flags, cpus):
    """The `Choice` for this environment; changes nothing.

    `machine` is `platform.machine()`, `flags` the CPU's feature flags,
    `cpus` the usable core count.
    """
    backend = environ.get("KERAS_BACKEND") or "tensorflow"
    if backend != "tensorflow":
        return Choice(False, f"the Keras backend is {backend!r}")
    if VARIABLE in environ:
        return Choice(False, f"{VARIABLE}={environ[VARIABLE]!r} was set before keras_mgr")
    if tensorflow_loaded:
        return Choice(False, "TensorFlow was loaded before keras_mgr: its own default stands")
    if machine.lower() not in ("x86_64", "amd64"):
        return Choice(False, f"the CPU is {machine}, not x86-64")
    if "avx512f" in flags:
        return Choice(False, "the CPU has AVX-512: TensorFlow's own default is kept")
    if "avx2" not in flags:
        return Choice(False, "the CPU does not report AVX2 (or its features are unknown), "
                             "where the switch was not measured")
    threads = environ.get("TF_NUM_INTRAOP_THREADS", "")
    if cpus < 2 or threads.strip() == "1":
        return Choice(False, "TensorFlow would run one intra-op thread, where TensorFlow 2.21 "
                             "with oneDNN corrupts its heap")
    return Choice(True, "this CPU has no AVX-512: oneDNN's convolution gradients are faster "
                        "than TensorFlow's own kernels there")


def choose_at_import():
    """Applies `choose` to this process: sets the variable when it says so."""
    environ = dict(os.environ, KERAS_BACKEND=keras_backend(os.environ, sys.modules.get("keras")))
    choice = choose(environ, "tensorflow" in sys.modules, platform.machine(), cpu_flags(),
                    usable_cpus())
    if choice.switched_on:
        os.environ[VARIABLE] = "1"
    return choice


CHOICE = choose_at_import()


def warn_if_one_thread():
    """Warns where keras_mgr switched oneDNN on and TensorFlow has since been
    set to one intra-op thread (the combination that corrupts its heap)."""
    tensorflow = sys.modules.get("tensorflow")
    if not CHOICE.switched_on or tensorflow is None:
        return
    if tensorflow.config.threading.get_intra_op_parallelism_threads() == 1:
        warnings.warn(
            "TensorFlow runs one intra-op thread with oneDNN on (keras_mgr switched it on at "
            "import: this CPU has no AVX-512); TensorFlow 2.21 can corrupt its heap training a "
            f"ResNet so. Set {VARIABLE}=0 before importing keras_mgr, or use two or more "
            "threads. Received: intra_op_parallelism_threads=1", stacklevel=3)
