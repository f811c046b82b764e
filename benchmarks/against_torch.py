"""keras_mgr's step against the same MGR step written in PyTorch, side by side.

    python benchmarks/against_torch.py --torch_script=PATH/torch_mgr_step.py \
        --torch_python=PATH/venv/bin/python

The PyTorch reference (a separate script, run in its own virtual environment
with the CPU build of torch; torch is never a dependency of keras_mgr) times
base, gda, pcr and mgr (meta_every 5 and 1) on a 3-block ResNet with batch
64 real + 64 synthetic. This driver alternates, `--rounds` times, one run of
that script and one run of `speed.py --networks=peer` (the same networks and
batches built in Keras, `peer_networks.py`), so machine noise hits both
alike (keras_mgr's mgr modes also with `meta_microbatches=4`, against the
same reference modes), then runs keras_mgr's base and mgr modes once more,
each in a process of its own, for their
peak RSS: over the timed steps after a warm-up, the kernel's mark reset as
the PyTorch reference does for each mode, and over the whole process
(tracing included). Run it on an idle machine.

What is compared: PyTorch's median seconds per step (for meta_every 5 the
amortized (meta + 4 plain) / 5), and speed.py's mean step time of a round,
median over rounds (a mean counts slow steps too: it does not favour Keras).

`--keras_envs='TF_ENABLE_ONEDNN_OPTS=0'` also runs keras_mgr under that
environment in each round (one more table): the same alternation, so the
settings' ratios share the machine's state.

On a GPU (JAX; the reference's CUDA copy takes `--device cuda --batch N`):

    python benchmarks/against_torch.py --backend=jax --jit_compile --batch_size=256 \
        --torch_script=PATH/torch_mgr_step_gpu.py --torch_args="--device cuda --batch 256" \
        --norss

Writes `<out>/<name><suffix>.md` (name: `against_torch`; suffix: backend,
XLA and batch where not TensorFlow / off / 64) and keeps every run's JSON
in `<out>/<name><suffix>/`; `--report_only` re-renders from those.
"""

import json
import os
import subprocess
import sys

from absl import app, flags
from machine import Machine, environment
from machine import markdown as machine_markdown

FLAGS = flags.FLAGS

HERE = os.path.dirname(os.path.abspath(__file__))
# speed.py config -> the reference's mode name.
# `/mb4`: meta_microbatches=4, keras_mgr's memory option, against the same
# reference mode (the reference has no micro-batches).
MODES = {"base": "base", "gda": "gda", "pcr": "pcr", "mgr:5": "mgr k=5", "mgr": "mgr k=1",
         "mgr:5/mb4": "mgr k=5", "mgr/mb4": "mgr k=1", "mgr:auto/mbauto": "mgr k=5"}
# Peak RSS, one configuration per process, TensorFlow's default CPU allocator.
RSS_CONFIGS = ("base", "mgr:5", "mgr", "mgr:5/mb4", "mgr/mb4")
SPEED = [os.path.join(HERE, "speed.py"), "--networks=peer", "--throughput=", "--nobreakdown"]


def _speed(f):
    """speed.py's command line for this run's backend, XLA and batch size."""
    return [sys.executable] + SPEED + [
        f"--backend={f.backend}", f"--batch_size={f.batch_size}", f"--steps={f.steps}",
        "--jit_compile" if f.jit_compile else "--nojit_compile"]


def _run(cmd, cwd=None, env=None):
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=cwd, env=env)


def _keras_name(run, setting):
    """The folder of keras_mgr's run `run` (from 1) under setting `setting`
    (0: the environment as it is; i: the i-th `--keras_envs` item)."""
    return f"keras_r{run}" + (f"_env{setting}" if setting else "")


def _rss_name(config):
    return "keras_rss_" + config.replace(":", "_").replace("/", "_")


def measure(folder, torch_script, f):
    folder = os.path.abspath(folder)  # the reference runs from its own folder
    os.makedirs(folder, exist_ok=True)
    env = dict(os.environ, KERAS_BACKEND=f.backend)
    for r in range(1, f.rounds + 1):
        _run([f.torch_python, os.path.basename(torch_script), "--no-compile", *f.torch_args.split(),
              "--json", os.path.join(folder, f"torch_r{r}.json")],
             cwd=os.path.dirname(torch_script))
        for i, setting in enumerate([""] + f.keras_envs):
            _run(_speed(f) + ["--configs=" + ",".join(MODES), f"--rounds={f.speed_rounds}",
                              f"--out={folder}/{_keras_name(r, i)}"],
                 env=dict(env, **environment(setting)))
    if not f.rss:
        return
    # RSS with TensorFlow's default CPU allocator, as users run: speed.py's
    # allocator column needs the BFC allocator, which is not the default.
    env = dict(env, TF_CPU_ALLOCATOR_USE_BFC="false")
    for config in RSS_CONFIGS:
        _run(_speed(f) + [f"--configs={config}", "--rounds=1",
                          f"--out={folder}/{_rss_name(config)}"], env=env)


def _load(path):
    with open(path) as fh:
        return json.load(fh)


def _keras(folder, name):
    (json_name,) = [n for n in os.listdir(os.path.join(folder, name)) if n.endswith(".json")]
    return _load(os.path.join(folder, name, json_name))


def report(folder, rounds, keras_envs=()):
    """Markdown table: per mode, both frameworks' seconds per step per round;
    then one table per `keras_envs` setting (keras_mgr's runs under it)."""
    torch_runs = [{e["mode"]: e for e in _load(os.path.join(folder, f"torch_r{r}.json"))["eager"]}
                  for r in range(1, rounds + 1)]
    keras_runs = [_keras(folder, f"keras_r{r}")["seconds_per_step"] for r in range(1, rounds + 1)]
    info = _load(os.path.join(folder, "torch_r1.json"))["info"]
    rss = {}
    for config in RSS_CONFIGS:
        if os.path.exists(os.path.join(folder, _rss_name(config))):
            run = _keras(folder, _rss_name(config))
            rss[config] = (run.get("steps_peak_rss_bytes"), run["process_peak_rss_bytes"])

    def mib(pair):  # "steps (whole process)"; runs before the steps column: whole only
        steps, whole = pair
        return f"{whole / 2**20:.0f}" if steps is None else (
            f"{steps / 2**20:.0f} ({whole / 2**20:.0f})")

    def per_round(values, fmt):
        return " / ".join(format(v, fmt) for v in values)

    first = _keras(folder, "keras_r1")  # runs before the backend flag: TensorFlow, batch 64
    flags_ = {"backend": "tensorflow", "jit_compile": False, "batch_size": 64,
              **first.get("flags", {})}
    device = first.get("device", "CPU:0")
    batch = flags_["batch_size"]
    lines = [
        f"PyTorch {info['torch']} ({info.get('device', 'cpu')}, {info['threads']} threads) "
        f"against keras_mgr, {flags_.get('backend', 'tensorflow')} on {device}, XLA "
        f"{'on' if flags_['jit_compile'] else 'off'}; batch {batch} real + {batch} synthetic, "
        f"32x32x1; {rounds} alternating runs (run 1 / run 2 ...).", "",
        "| mode | PyTorch s/step | keras_mgr s/step | keras_mgr / PyTorch | "
        "peak RSS MiB over the steps, PyTorch / keras_mgr (whole process) |",
        "|---|---|---|---|---|"]
    for config, mode in MODES.items():
        if config not in keras_runs[0]:  # a run from before the config existed
            continue
        t = [run[mode]["median_s"] for run in torch_runs]
        k = [run[config] for run in keras_runs]
        peak = max(run[mode]["peak_rss_mb"] for run in torch_runs)  # KiB / 1024
        mem = f"{peak:.0f} / {mib(rss[config])}" if config in rss else f"{peak:.0f} / -"
        lines.append(f"| {config} ({mode}) | {per_round(t, '.3f')} | {per_round(k, '.3f')} | "
                     f"{per_round([b / a for a, b in zip(t, k)], '.2f')} | {mem} |")
    extra = [c for c in RSS_CONFIGS if c not in MODES and c in rss]
    if extra:
        lines += ["", "keras_mgr with `meta_microbatches=4` (`/mb4`), peak RSS over the steps "
                  "(whole process): " + ", ".join(f"{c} {mib(rss[c])} MiB" for c in extra) + "."]
    lines += ["", "Modes in parentheses are PyTorch's (`k`: its meta_every). keras_mgr's "
              "configs without `/mb4` run the whole-batch second-order pass "
              "(`meta_microbatches=1`); `mgr:auto/mbauto` is wrap()'s default for mgr "
              "(meta_every 5, `meta_microbatches=\"auto\"`: `/mb4` at 64 synthetic images).",
              ""]
    if rss:
        lines.append("Peak RSS over the steps: each framework frees what it can (garbage "
                     "collection, `malloc_trim`) and resets the kernel's peak mark after its "
                     "warm-up; keras_mgr runs each configuration in a process of its own, "
                     "PyTorch all modes in one. The whole-process peak adds the tracing.")
    else:
        lines.append("keras_mgr's peak RSS was not measured in this run (`--norss`).")
    for i, setting in enumerate(keras_envs, start=1):
        runs = [_keras(folder, _keras_name(r, i))["seconds_per_step"]
                for r in range(1, rounds + 1)]
        lines += ["", f"keras_mgr with `{setting}` (the same alternation: each run between the "
                  "PyTorch run and keras_mgr's run above):", "",
                  "| mode | PyTorch s/step | keras_mgr s/step | keras_mgr / PyTorch |",
                  "|---|---|---|---|"]
        for config, mode in MODES.items():
            if config not in runs[0]:
                continue
            t = [run[mode]["median_s"] for run in torch_runs]
            k = [run[config] for run in runs]
            lines.append(f"| {config} ({mode}) | {per_round(t, '.3f')} | {per_round(k, '.3f')} "
                         f"| {per_round([b / a for a, b in zip(t, k)], '.2f')} |")
    return "\n".join(lines) + "\n"


def machine_section(folder):
    """The `## Machine` lines of keras_mgr's first run (its process's oneDNN
    and threads, not this driver's); for runs that did not record it, the
    CPU the PyTorch reference recorded."""
    recorded = _keras(folder, "keras_r1").get("machine")
    if recorded:
        return machine_markdown(Machine(**recorded))
    info = _load(os.path.join(folder, "torch_r1.json"))["info"]
    return ["", "## Machine", "",
            f"- CPU, as the PyTorch reference recorded it: {info.get('cpu', 'not recorded')}, "
            f"{info.get('cpus', '?')} CPUs; keras_mgr's processes did not record theirs "
            "(vector extensions, oneDNN, thread pools) in this run"]


def suffix(f):
    """`""` for TensorFlow without XLA at batch 64 (the CPU table), else what differs."""
    parts = ([f.backend] if f.backend != "tensorflow" else []) + (
        ["xla"] if f.jit_compile else []) + ([f"b{f.batch_size}"] if f.batch_size != 64 else [])
    return "".join("_" + p for p in parts)


def main(argv):
    del argv
    folder = os.path.join(FLAGS.out, FLAGS.name + suffix(FLAGS))
    for setting in FLAGS.keras_envs:
        environment(setting)  # a malformed item stops here, not after the first round
    if not FLAGS.report_only:
        if not FLAGS.torch_script or not os.path.exists(FLAGS.torch_script):
            raise FileNotFoundError(
                "--torch_script must name the PyTorch reference script. "
                f"Received: {FLAGS.torch_script!r}")
        measure(folder, os.path.abspath(FLAGS.torch_script), FLAGS)
    md = report(folder, FLAGS.rounds, FLAGS.keras_envs) + "\n".join(machine_section(folder)) + "\n"
    print(md)
    with open(folder + ".md", "w") as fh:
        fh.write("# keras_mgr against the PyTorch reference step\n\n" + md)


def define_flags():  # at run time only: importing this module defines no flags
    flags.DEFINE_string("torch_script", None, "Path of the PyTorch reference script.")
    flags.DEFINE_string("torch_python", "python3", "Python of a venv with torch (CPU build).")
    flags.DEFINE_integer("rounds", 2, "Alternating runs of each framework.")
    flags.DEFINE_string("out", "benchmarks/results", "Output folder.")
    flags.DEFINE_string("name", "against_torch", "Name of this run's results in --out.")
    flags.DEFINE_bool("report_only", False, "Re-render the table from the saved JSONs.")
    flags.DEFINE_string("backend", "tensorflow", "keras_mgr's Keras backend (speed.py --backend).")
    flags.DEFINE_bool("jit_compile", False, "keras_mgr's steps under XLA.")
    flags.DEFINE_integer("steps", 10, "keras_mgr's timed steps per config and round.")
    flags.DEFINE_integer("speed_rounds", 3, "keras_mgr's rounds per run (median reported).")
    flags.DEFINE_integer("batch_size", 64, "Real = synthetic batch of both steps (pass the "
                         "same --batch N to the reference in --torch_args).")
    flags.DEFINE_string("torch_args", "", "Extra arguments of the reference, e.g. "
                        "'--device cuda --batch 256'.")
    flags.DEFINE_list("keras_envs", [], "Further environments for keras_mgr's runs, each "
                      "'NAME=VALUE NAME=VALUE', run after keras_mgr's run in each round "
                      "(e.g. 'TF_ENABLE_ONEDNN_OPTS=0').")
    flags.DEFINE_bool("rss", True, "Also time each keras_mgr config alone for its peak RSS "
                      "(TensorFlow's default CPU allocator; a CPU measure).")


if __name__ == "__main__":
    define_flags()
    app.run(main)
