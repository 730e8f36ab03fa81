#!/usr/bin/env bash
# One prepared run on a lent GPU machine: CUDA ops, model throughput, kernel profile, GPU parity,
# CLI throughput. Expects ../shared (or .devcarry/shared, carried) beside the checkout.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
out=${OUT:-/tmp/hfgi-device}; mkdir -p "$out"
[ -d ../shared ] || ln -s "$PWD/.devcarry/shared" ../shared
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)"
step() { echo "=== $1 ($(date +%T))"; }
step "cuda ops: build + tests"
timeout 240 python3 -m pytest -q -x -p no:cacheprovider tests/test_ops.py 2>&1 | tail -4
step "model throughput"
timeout 150 python3 benchmarks/gpu_bench.py --batches 1,8,16 --precisions fp32,fp16 --iters 3 2>&1 | tee "$out/gpu_bench.txt"
step "kernel profile (fp16, batch 16, one edit)"
timeout 90 python3 benchmarks/gpu_profile.py --batch 16 2>&1 | tail -24 | cut -c1-150 | tee "$out/gpu_profile.txt"
step "parity on the GPU (fp32)"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_parity.py 2>&1 | tail -3
step "CLI: 48 aligned faces x 3 edits"
python3 ../shared/reference/make_checkpoint.py /tmp/seed0.pt --seed 0 >/dev/null
mkdir -p /tmp/faces48; for k in 1 2 3 4; do for f in ../shared/data/faces/*.jpg; do cp "$f" /tmp/faces48/${k}_$(basename "$f"); done; done
for prec in fp16 fp32; do
  /usr/bin/time -f "%e s wall, 144 outputs ($prec, batch 16, incl. start-up and model load)" python3 -m hfgi_cli edit /tmp/faces48 \
    --aligned -o /tmp/cli_$prec --checkpoint /tmp/seed0.pt --directions ../shared/data/directions \
    -a smile -a age -a pose -s 1 --batch-size 16 --precision $prec --quiet 2>&1 | tail -2
done
step "done"
