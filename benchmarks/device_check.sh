#!/usr/bin/env bash
# One prepared run on a lent GPU machine: CUDA ops, GPU parity, model throughput, CLI throughput.
# Expects ../shared (or .devcarry/shared, carried) beside the checkout. Writes logs to $OUT if set.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
out=${OUT:-/tmp/hfgi-device}; mkdir -p "$out"
[ -d ../shared ] || ln -s "$PWD/.devcarry/shared" ../shared
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)"
step() { echo "=== $1 ($(date +%T))"; }
step "cuda ops: build + tests"
timeout 240 python3 -m pytest -q -x tests/test_ops.py 2>&1 | tail -4
step "cuda ops: check + timings"
timeout 120 python3 benchmarks/gpu_ops_check.py --iters 10 2>&1 | tail -25
step "model throughput"
timeout 200 python3 benchmarks/gpu_bench.py --batches 1,8,16 --precisions fp32,fp16 --iters 3 2>&1 | tee "$out/gpu_bench.txt"
step "parity on the GPU (fp32)"
timeout 240 python3 -m pytest -q tests/test_parity.py 2>&1 | tail -3
step "CLI: 12 aligned faces, 3 edits, fp16"
python3 ../shared/reference/make_checkpoint.py /tmp/seed0.pt --seed 0 >/dev/null
for prec in fp16 fp32; do
  /usr/bin/time -f "%e s wall ($prec)" python3 -m hfgi_cli edit ../shared/data/faces --aligned -o /tmp/cli_$prec \
    --checkpoint /tmp/seed0.pt --directions ../shared/data/directions -a smile -a age -a pose -s 1 \
    --batch-size 12 --precision $prec --quiet 2>&1 | tail -2
done
step "done"
