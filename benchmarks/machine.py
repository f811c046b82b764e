"""The machine a measurement ran on, for every table a benchmark writes.

Step times depend on the CPU's vector extensions (oneDNN picks AVX-512 or
AMX kernels where they exist), on TensorFlow's oneDNN switch (on by default
only on CPUs with AVX-512 VNNI, AVX-VNNI or AMX) and on its thread pools, so
a ratio measured on one machine is quoted with that machine.

    from machine import describe, markdown
    print("\\n".join(markdown(describe())))
"""

import os
import platform
from importlib import metadata
from typing import NamedTuple

# The extensions that change which kernels run, as /proc/cpuinfo names them.
EXTENSIONS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
              "amx_bf16")
PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "jax", "jaxlib", "torch")


class Machine(NamedTuple):
    """What a benchmark table quotes about where it was measured."""

    cpu: str  # model name
    extensions: tuple  # those of EXTENSIONS the CPU has
    logical_cpus: int  # os.cpu_count()
    usable_cpus: int  # this process's affinity
    onednn: bool  # whether TensorFlow runs oneDNN's kernels
    onednn_isa_cap: str  # ONEDNN_MAX_CPU_ISA, or "" when not capped
    intra_op_threads: int  # TensorFlow's setting; 0 is "one per usable core"
    inter_op_threads: int
    versions: dict  # installed package -> version, of PACKAGES
    onednn_choice: str = ""  # keras_mgr.onednn.CHOICE's reason, where keras_mgr is loaded


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions():
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def describe():
    """The `Machine` this process runs on (asks TensorFlow, where installed)."""
    try:
        import tensorflow as tf
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a JAX- or PyTorch-only machine
        tf = _pywrap_util_port = None
    # Here, not at the top: importing keras_mgr sets TensorFlow's oneDNN switch
    # in this process's environment, which a driver's child processes inherit.
    from keras_mgr import onednn

    flags = onednn.cpu_flags()
    return Machine(
        cpu=_cpu_model(), extensions=tuple(e for e in EXTENSIONS if e in flags),
        logical_cpus=os.cpu_count(), usable_cpus=onednn.usable_cpus(),
        onednn=bool(tf and _pywrap_util_port.IsMklEnabled()),
        onednn_isa_cap=os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        intra_op_threads=tf.config.threading.get_intra_op_parallelism_threads() if tf else 0,
        inter_op_threads=tf.config.threading.get_inter_op_parallelism_threads() if tf else 0,
        versions=_versions(), onednn_choice=onednn.CHOICE.reason)


def markdown(machine):
    """Lines of a `## Machine` section for a results file."""
    threads = lambda n: "one per usable core" if n == 0 else str(n)  # noqa: E731
    versions = ", ".join(f"{k} {v}" for k, v in machine.versions.items())
    return ["", "## Machine", "",
            f"- CPU: {machine.cpu}; {machine.logical_cpus} logical CPUs, "
            f"{machine.usable_cpus} usable by this process",
            f"- vector extensions: {', '.join(machine.extensions) or 'none of ' + str(EXTENSIONS)}",
            f"- TensorFlow oneDNN: {'on' if machine.onednn else 'off'}"
            + (f", ISA capped at {machine.onednn_isa_cap}" if machine.onednn_isa_cap else "")
            + (f" (keras_mgr at import: {machine.onednn_choice})" if machine.onednn_choice
               else ""),
            f"- thread pools: intra-op {threads(machine.intra_op_threads)}, inter-op "
            f"{threads(machine.inter_op_threads)}",
            f"- versions: {versions}"]


def environment(setting):
    """`"A=1 B=2"` -> `{"A": "1", "B": "2"}`: an environment a benchmark runs a
    process under (oneDNN's switch, its ISA cap, thread pools); `""` is none."""
    pairs = [item.partition("=") for item in setting.split()]
    if any(not sep or not name for name, sep, _ in pairs):
        raise ValueError("An environment setting must be NAME=VALUE pairs separated by spaces. "
                         f"Received: {setting!r}")
    return {name: value for name, _, value in pairs}
