"""The step on JAX and on PyTorch against the step on TensorFlow: same networks,
same batches, one machine.

    python benchmarks/backends.py                  # about 15 minutes on 2 idle cores
    python benchmarks/backends.py --rounds=1 --steps=2 --out=   # smoke run

Alternates, `--rounds` times, one `speed.py` process per backend (a backend
is chosen before Keras loads, so two cannot share a process) over the
same configurations, so that machine noise hits all alike. Each backend
runs as `compile(jit_compile="auto")` does on a CPU: TensorFlow without XLA
(Keras turns it off on CPU-only machines), JAX with it, PyTorch eagerly
(`--xla_tensorflow` adds TensorFlow with XLA; `--backends` picks the others).
Reported per configuration: each backend's median step time over rounds and
the median over rounds of each paired ratio to TensorFlow (below 1: faster).

Writes `<out>/backends_<cpu|gpu>.{md,json}`.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags
from machine import Machine
from machine import markdown as machine_markdown

HERE = os.path.dirname(os.path.abspath(__file__))


def define_flags():  # at run time only: importing this module defines no flags
    flags.DEFINE_list("configs", ["base", "gda", "metagda", "pcr", "mgr", "mgr:auto/mbauto"],
                      "speed.py configurations.")
    flags.DEFINE_integer("steps", 6, "Timed steps per configuration and round.")
    flags.DEFINE_integer("rounds", 3, "Rounds; each runs every backend once.")
    flags.DEFINE_integer("batch_size", 32, "Real (and synthetic) batch size.")
    flags.DEFINE_bool("xla_tensorflow", False, "Also time TensorFlow with XLA.")
    flags.DEFINE_list("backends", ["jax", "torch"], "Backends timed beside TensorFlow.")
    flags.DEFINE_string("out", "benchmarks/results", "Output folder ('' to print only).")


RUNS = {"tensorflow": ["--backend=tensorflow", "--nojit_compile"],
        "tensorflow+XLA": ["--backend=tensorflow", "--jit_compile"],
        "jax": ["--backend=jax", "--jit_compile"],
        "torch": ["--backend=torch", "--nojit_compile"]}
NAMES = {"jax": "JAX", "torch": "PyTorch"}


def one_run(run, configs, steps, batch_size):
    """Seconds per step of each config from one `speed.py` process."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, os.path.join(HERE, "speed.py"), *RUNS[run],
                   f"--configs={','.join(configs)}", f"--steps={steps}", "--rounds=1",
                   f"--batch_size={batch_size}", "--throughput=", "--nobreakdown",
                   f"--out={out}"]
        env = dict(os.environ, KERAS_BACKEND=RUNS[run][0].split("=")[1])
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        (name,) = [n for n in os.listdir(out) if n.endswith(".json")]
        with open(os.path.join(out, name)) as fh:
            result = json.load(fh)
    return result["seconds_per_step"], result["device"], result["machine"]


def measure(runs, configs, steps, rounds, batch_size):
    """`{run: {config: [seconds per round]}}`, the device names and each run's
    machine as its own process recorded it (TensorFlow's oneDNN switch is a
    child's setting, not this driver's)."""
    seconds = {r: {c: [] for c in configs} for r in runs}
    devices, machines = {}, {}
    for i in range(rounds):
        for run in runs:
            result, devices[run], machines[run] = one_run(run, configs, steps, batch_size)
            for c in configs:
                seconds[run][c].append(result[c])
            print(f"round {i + 1}/{rounds} {run}: "
                  + ", ".join(f"{c} {1e3 * result[c]:.0f} ms" for c in configs), flush=True)
    return seconds, devices, machines


def report(seconds, devices, steps, batch_size):
    runs = list(seconds)
    configs = list(seconds[runs[0]])
    others = [r for r in runs if r in NAMES]
    title = " and ".join(NAMES[r] for r in others)
    lines = [f"# The step on {title} and on TensorFlow "
             f"({', '.join(sorted(set(devices.values())))})",
             "", f"small_cnn, images 32x32x1, batch {batch_size} real + {batch_size} "
             f"synthetic; {steps} steps per config and round, "
             f"{len(seconds[runs[0]][configs[0]])} rounds alternating the backends, one "
             "process each; median over rounds. Ratio: median over rounds of the paired "
             "step time over TensorFlow's (below 1: faster than TensorFlow).", "",
             "| config | " + " | ".join(f"{r} ms / step" for r in runs) + " | "
             + " | ".join(f"{NAMES[r]} / TensorFlow" for r in others) + " |",
             "|---" * (len(runs) + len(others) + 1) + "|"]
    for c in configs:
        cells = [f"{1e3 * np.median(seconds[r][c]):.1f}" for r in runs]
        ratios = [np.median(np.array(seconds[r][c]) / np.array(seconds["tensorflow"][c]))
                  for r in others]
        lines.append(f"| {c} | " + " | ".join(cells) + " | "
                     + " | ".join(f"{x:.2f}" for x in ratios) + " |")
    return "\n".join(lines) + "\n"


def table_machine(machines):
    """The machine a table is quoted with: as the TensorFlow child recorded it
    (its oneDNN switch is that process's, not this driver's)."""
    return Machine(**machines["tensorflow"])


def main(argv):
    del argv
    f = flags.FLAGS
    unknown = sorted(set(f.backends) - set(NAMES))
    if unknown or not f.backends:
        raise ValueError(f"--backends takes {sorted(NAMES)}. Received: {f.backends}")
    runs = ["tensorflow"] + (["tensorflow+XLA"] if f.xla_tensorflow else []) + f.backends
    seconds, devices, machines = measure(runs, f.configs, f.steps, f.rounds, f.batch_size)
    here = table_machine(machines)
    text = (report(seconds, devices, f.steps, f.batch_size) + "\n"
            + "\n".join(machine_markdown(here)) + "\n(as the TensorFlow process recorded it)\n")
    print(text)
    if f.out:
        kind = "gpu" if any("gpu" in d.lower() or "cuda" in d.lower()
                            for d in devices.values()) else "cpu"
        stem = os.path.join(f.out, f"backends_{kind}")
        with open(stem + ".md", "w") as fh:
            fh.write(text)
        with open(stem + ".json", "w") as fh:
            json.dump({"seconds_per_step": seconds, "devices": devices, "steps": f.steps,
                       "batch_size": f.batch_size, "machine": here._asdict()}, fh, indent=1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
