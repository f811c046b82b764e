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

Writes `<out>/against_torch.md` and keeps every run's JSON in
`<out>/against_torch/`; `--report_only` re-renders from those.
"""

import json
import os
import subprocess
import sys

from absl import app, flags
from machine import describe
from machine import markdown as machine_markdown

FLAGS = flags.FLAGS

HERE = os.path.dirname(os.path.abspath(__file__))
# speed.py config -> the reference's mode name.
# `/mb4`: meta_microbatches=4, keras_mgr's memory option, against the same
# reference mode (the reference has no micro-batches).
MODES = {"base": "base", "gda": "gda", "pcr": "pcr", "mgr:5": "mgr k=5", "mgr": "mgr k=1",
         "mgr:5/mb4": "mgr k=5", "mgr/mb4": "mgr k=1"}
# Peak RSS, one configuration per process, TensorFlow's default CPU allocator.
RSS_CONFIGS = ("base", "mgr:5", "mgr", "mgr:5/mb4", "mgr/mb4")
SPEED = [os.path.join(HERE, "speed.py"), "--networks=peer", "--batch_size=64",
         "--throughput=", "--nobreakdown", "--steps=10"]


def _run(cmd, cwd=None, env=None):
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=cwd, env=env)


def _rss_name(config):
    return "keras_rss_" + config.replace(":", "_").replace("/", "_")


def measure(folder, torch_script, torch_python, rounds):
    folder = os.path.abspath(folder)  # the reference runs from its own folder
    os.makedirs(folder, exist_ok=True)
    for r in range(1, rounds + 1):
        _run([torch_python, os.path.basename(torch_script), "--no-compile", "--json",
              os.path.join(folder, f"torch_r{r}.json")], cwd=os.path.dirname(torch_script))
        _run([sys.executable] + SPEED + ["--configs=" + ",".join(MODES), "--rounds=3",
                                         f"--out={folder}/keras_r{r}"])
    # RSS with TensorFlow's default CPU allocator, as users run: speed.py's
    # allocator column needs the BFC allocator, which is not the default.
    env = dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC="false")
    for config in RSS_CONFIGS:
        _run([sys.executable] + SPEED + [f"--configs={config}", "--rounds=1",
                                         f"--out={folder}/{_rss_name(config)}"], env=env)


def _load(path):
    with open(path) as fh:
        return json.load(fh)


def _keras(folder, name):
    return _load(os.path.join(folder, name, "speed_cpu_xlaoff_peer.json"))


def report(folder, rounds):
    """Markdown table: per mode, both frameworks' seconds per step per round."""
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

    lines = [
        f"PyTorch {info['torch']} (CPU build, {info['threads']} threads) against keras_mgr, "
        "TensorFlow CPU, XLA off; batch 64 real + 64 synthetic, 32x32x1; "
        f"{rounds} alternating runs (run 1 / run 2 ...).", "",
        "| mode | PyTorch s/step | keras_mgr s/step | keras_mgr / PyTorch | "
        "peak RSS MiB over the steps, PyTorch / keras_mgr (whole process) |",
        "|---|---|---|---|---|"]
    for config, mode in MODES.items():
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
              "(`meta_microbatches=1`); wrap()'s default at these 64 synthetic images is "
              "`/mb4` (`meta_microbatches=\"auto\"`).",
              "", "Peak RSS over the steps: each framework frees what it can (garbage "
              "collection, `malloc_trim`) and resets the kernel's peak mark after its "
              "warm-up; keras_mgr runs each configuration in a process of its own, "
              "PyTorch all modes in one. The whole-process peak adds TensorFlow's tracing."]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    folder = os.path.join(FLAGS.out, "against_torch")
    if not FLAGS.report_only:
        if not FLAGS.torch_script or not os.path.exists(FLAGS.torch_script):
            raise FileNotFoundError(
                "--torch_script must name the PyTorch reference script. "
                f"Received: {FLAGS.torch_script!r}")
        measure(folder, os.path.abspath(FLAGS.torch_script), FLAGS.torch_python, FLAGS.rounds)
    md = report(folder, FLAGS.rounds) + "\n".join(machine_markdown(describe())) + "\n"
    print(md)
    with open(os.path.join(FLAGS.out, "against_torch.md"), "w") as fh:
        fh.write("# keras_mgr against the PyTorch reference step\n\n" + md)


def define_flags():  # at run time only: importing this module defines no flags
    flags.DEFINE_string("torch_script", None, "Path of the PyTorch reference script.")
    flags.DEFINE_string("torch_python", "python3", "Python of a venv with torch (CPU build).")
    flags.DEFINE_integer("rounds", 2, "Alternating runs of each framework.")
    flags.DEFINE_string("out", "benchmarks/results", "Output folder.")
    flags.DEFINE_bool("report_only", False, "Re-render the table from the saved JSONs.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
