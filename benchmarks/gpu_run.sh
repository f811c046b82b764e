#!/bin/bash
# The GPU measurement of keras_mgr on the JAX backend, as one command (docs/gpu.md).
#
#   bash benchmarks/gpu_run.sh REFERENCE [OUT]
#
# REFERENCE: the PyTorch reference step's CUDA script (a separate script, not part
# of keras_mgr, run with the machine's python3 and torch). OUT (default
# benchmarks/results): where the tables go, and gpu_results.tgz with every file.
# Where Keras is missing, wheels in .whl/ (keras, namex, optree) are installed
# into /tmp/site first. Runs: gpu_check.py (XLA against no XLA per mode, step
# time and memory, mgr on ResNet-18 at 96x96x3), then against_torch.py at batch
# 64 and 256 (the reference's networks, keras_mgr under XLA). About 8 minutes on
# one H200; JAX_PLATFORMS=cpu and --tiny sizes (GPU_RUN_TINY=1) check it anywhere.
set -euo pipefail
reference=$(realpath "$1")
out=${2:-benchmarks/results}
if [ -d .whl ] && ! python3 -c "import keras" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1
work=$(mktemp -d)
tiny=${GPU_RUN_TINY:+--tiny}
device=$([ -n "$tiny" ] && echo cpu || echo cuda)
steps=$([ -n "$tiny" ] && echo "--steps 2 --mgr-steps 2 --warm 1 --no-fd" || echo "")
keras_steps=$([ -n "$tiny" ] && echo "--steps=2 --speed_rounds=1" || echo "")
python3 benchmarks/gpu_check.py --backend=jax --out="$work" $tiny
for batch in ${GPU_RUN_BATCHES:-64 256}; do
  python3 benchmarks/against_torch.py --backend=jax --jit_compile --batch_size="$batch" \
    --rounds=1 --norss --torch_script="$reference" --torch_python="${TORCH_PYTHON:-python3}" \
    --torch_args="--device $device --batch $batch $steps" --out="$work" $keras_steps
done
mkdir -p "$out"
cp "$work"/*.md "$out"/
tar czf "$out/gpu_results.tgz" -C "$work" .
ls "$out"
