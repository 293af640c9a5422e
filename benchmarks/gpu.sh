#!/usr/bin/env bash
# The benchmark on a GPU machine: PyTorch (on CUDA) and jaxtrain (on the GPU) side by side, both models,
# batch sizes 32, 128 and 512, then jaxtrain's feeding modes and a float32 parity check on the GPU.
#
#   bash benchmarks/gpu.sh MNIST_DIR OUT_DIR
#
# MNIST_DIR holds MNIST's four IDX files; OUT_DIR receives one JSON report and one table per step, and
# gpu.txt naming the GPU. Run it from the repository root with the project importable
# (`pip install -e .` or `PYTHONPATH=$PWD`); torch must be a CUDA build. Every program runs in a fresh
# process of its own, one after another.
set -euo pipefail
data=${1:?usage: bash benchmarks/gpu.sh MNIST_DIR OUT_DIR}
out=${2:?usage: bash benchmarks/gpu.sh MNIST_DIR OUT_DIR}
mkdir -p "$out"
python=${PYTHON:-python3}

nvidia-smi -L | tee "$out/gpu.txt"
"$python" -c 'import jax, torch; print("jax", jax.__version__, jax.devices()); print("torch", torch.__version__, "cuda", torch.cuda.is_available())' | tee -a "$out/gpu.txt"

step() {  # step NAME ARGS...: one jaxtrain command, its table printed and kept
    local name=$1; shift
    echo "== $name: python -m jaxtrain $*" | tee "$out/$name.txt"
    "$python" -m jaxtrain "$@" | tee -a "$out/$name.txt"
}
common=(--dataset mnist --data-dir "$data")
step frameworks compare bench --preset frameworks --models mlp cnn --batch-sizes 32 128 512 --epochs 4 \
    "${common[@]}" --report "$out/frameworks.json"
step feeding compare bench --preset feeding --models mlp cnn --epochs 4 "${common[@]}" --report "$out/feeding.json"
step parity compare parity --model cnn --optimizer adam --dtype float32 --steps 50 --float64-reference \
    "${common[@]}" --report "$out/parity.json"
