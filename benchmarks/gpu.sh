#!/usr/bin/env bash
# The benchmarks on a GPU machine, in at most 8 minutes, each step announced as it starts and ends:
#   1. job:    the whole job, a fresh process from its start to its printed accuracy (MLP 10 epochs, CNN 3):
#              jaxtrain's CLI with a cold and a warm compilation cache beside the primer's PyTorch program;
#   2. bench:  samples/s of the PyTorch loops (the primer's, and the fast one with the data on the GPU) beside
#              jaxtrain's defaults, its feeding modes and a hand-written lax.scan epoch, MLP and CNN, batch 32;
#   3. parity: float32 on the GPU against torch's float64 run, 50 CNN steps.
#
#   bash benchmarks/gpu.sh MNIST_DIR OUT_DIR       # on the GPU machine
#   bash benchmarks/gpu.sh --quick OUT_DIR         # anywhere, CPU included: digits at a tiny size, a check
#                                                  # that the script runs (tests/compare/test_bench_gpu_script.py)
#
# MNIST_DIR holds MNIST's four IDX files. OUT_DIR receives, per step, NAME.txt (its table), NAME.log (its
# progress and errors) and NAME.json (its raw results); device.txt (the GPU and the versions); and
# summary.md, the tables under the device's name. Run it from the repository root with the project importable
# (`pip install -e .` or `PYTHONPATH=$PWD`); $PYTHON names the interpreter (default python3). Every program
# runs in a fresh process of its own, one after another. Each step has a time limit (the sizes are chosen
# from the compile times that one H200 measured: MLP 3.4-5.6 s, CNN 7.2 s cold); a step that fails or runs
# past its limit is reported, and the next one runs.
set -uo pipefail
quick=0
if [[ ${1:-} == --quick ]]; then
    quick=1; shift
    out=${1:?usage: bash benchmarks/gpu.sh --quick OUT_DIR}
else
    data=${1:?usage: bash benchmarks/gpu.sh MNIST_DIR OUT_DIR (or --quick OUT_DIR)}
    out=${2:?usage: bash benchmarks/gpu.sh MNIST_DIR OUT_DIR (or --quick OUT_DIR)}
    [[ -d $data ]] || { echo "gpu.sh: MNIST_DIR $data is not a folder; expected MNIST's four IDX files" >&2; exit 2; }
fi
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
began=$SECONDS
failed=()

say() { echo "[$(printf '%4d' $((SECONDS - began))) s] $*"; }

step() {  # step NAME LIMIT_SECONDS ARGS...: `python -m jaxtrain ARGS`, its table in NAME.txt, its progress in NAME.log
    local name=$1 limit=$2 start=$SECONDS status; shift 2
    say "$name: started (limit ${limit} s): python -m jaxtrain $*"
    timeout --kill-after=10 "$limit" "$python" -m jaxtrain "$@" >"$out/$name.txt" 2> >(tee "$out/$name.log" >&2)
    status=$?
    if ((status == 0)); then
        say "$name: done in $((SECONDS - start)) s"
        cat "$out/$name.txt"
    else
        say "$name: FAILED (exit status $status$( ((status == 124 || status == 137)) && echo ", past its ${limit} s limit")) after $((SECONDS - start)) s"
        failed+=("$name")
    fi
}

say "device: started"
{
    if command -v nvidia-smi >/dev/null; then nvidia-smi -L; else echo "no nvidia-smi: no NVIDIA GPU"; fi
    "$python" -c 'import jax, torch; print("jax", jax.__version__, jax.devices()); print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
} 2>&1 | tee "$out/device.txt"
say "device: done"

if ((quick)); then
    data_flags=(--dataset digits)
    step job 120 compare job --models mlp --epochs 1 --repeats 1 "${data_flags[@]}" --report "$out/job.json"
    step bench 90 compare bench --programs jaxtrain --models mlp --epochs 2 "${data_flags[@]}" --report "$out/bench.json"
    step parity 60 compare parity --model mlp --steps 2 "${data_flags[@]}" --report "$out/parity.json"
else
    data_flags=(--dataset mnist --data-dir "$data")
    # Per round: PyTorch's MLP job ~16 s (10 epochs at ~17k samples/s), jaxtrain's ~10 s cold and ~6 s warm;
    # the CNN's ~12, ~16 and ~7 s. Two rounds and the cache-filling runs: about 170 s.
    step job 240 compare job --models mlp cnn --repeats 2 "${data_flags[@]}" --report "$out/job.json"
    # 13 processes of 3 epochs, most of each its compilation (5-15 s): about 170 s.
    step bench 180 compare bench --models mlp cnn --epochs 3 "${data_flags[@]}" --report "$out/bench.json" --programs \
        pytorch-dataloader pytorch-tensors jaxtrain jaxtrain-per-step jaxtrain-fused jaxtrain-device-resident lax.scan
    step parity 45 compare parity --model cnn --optimizer adam --dtype float32 --steps 50 --float64-reference \
        "${data_flags[@]}" --report "$out/parity.json"
fi

{
    echo "# jaxtrain's benchmarks on $(grep -m1 '^GPU' "$out/device.txt" || echo 'a machine without an NVIDIA GPU')"
    echo
    echo "$(grep '^jax\|^torch' "$out/device.txt" | tr '\n' ';' | sed 's/;$//; s/;/; /g'). Written by \`bash benchmarks/gpu.sh$( ((quick)) && echo ' --quick')\`."
    for name in job bench parity; do
        [[ -s $out/$name.txt ]] && printf '\n## %s\n\n%s\n' "$name" "$(cat "$out/$name.txt")"
    done
} >"$out/summary.md"
if ((${#failed[@]})); then
    say "finished; FAILED: ${failed[*]} (see their .log files in $out)"
    exit 1
fi
say "finished: the tables in $out/summary.md, the raw results in $out/*.json"
