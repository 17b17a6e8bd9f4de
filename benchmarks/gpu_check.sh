#!/usr/bin/env bash
# One-shot device check (issue 25), on a machine with an NVIDIA GPU, in under 8 minutes:
#   bash benchmarks/gpu_check.sh        # figures also in $OUT/gpu_check.txt and gpu_check.json when OUT is set
# Installs .[dev,gpu] into .venv-gpu unless TensorFlow already sees a GPU, prints nvidia-smi
# and the devices TensorFlow sees, runs the gpu_path tests on the GPU, then
# benchmarks/gpu_check.py: Fashion-MNIST defaults for 3 epochs (samples/s, the precision
# chosen, peak GPU memory), MirroredStrategy over two logical GPUs carved from the first
# one, and encode. Without a GPU it says so in one line and exits 0, running nothing heavy.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
    echo "gpu_check: no NVIDIA GPU on this machine (nvidia-smi finds none); nothing run"
    exit 0
fi
OUT_DIR="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/gpu_check.txt") 2>&1
export TF_FORCE_GPU_ALLOW_GROWTH=true PYTHONUNBUFFERED=1
start=$(date +%s)
PY=python3
for candidate in .venv/bin/python .venv-gpu/bin/python; do
    [ -x "$candidate" ] && PY=$candidate
done
if ! "$PY" -c "import sys, tensorflow as tf; sys.exit(not tf.config.list_physical_devices('GPU'))" 2>/dev/null; then
    echo "== installing .[dev,gpu] into .venv-gpu"
    python3 -m venv .venv-gpu && .venv-gpu/bin/pip install -q -e ".[dev,gpu]" || {
        echo "gpu_check: cannot install .[dev,gpu] here (no package index reachable?); no figures"; exit 1; }
    PY=.venv-gpu/bin/python
fi
echo "== nvidia-smi"
nvidia-smi
echo "== TensorFlow's devices"
"$PY" -c "import tensorflow as tf; print(tf.__version__, tf.config.list_physical_devices()); \
[print(g, tf.config.experimental.get_device_details(g)) for g in tf.config.list_physical_devices('GPU')]"
echo "== gpu_path tests on the GPU"
"$PY" -m pytest -q -m gpu_path tests/ -p no:cacheprovider
echo "== training, MirroredStrategy over two logical GPUs, encode"
"$PY" -m benchmarks.gpu_check --out "$OUT_DIR/gpu_check.json"
echo "gpu_check: done in $(( $(date +%s) - start )) s; figures in $OUT_DIR"
