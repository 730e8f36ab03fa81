#!/usr/bin/env python
"""Model throughput on a GPU: inversions/s and edits/s per batch size and precision.

    PYTHONPATH=. python benchmarks/gpu_bench.py [--checkpoint FILE] [--batches 1,8,16] [--precisions fp32,fp16]

Uses a full-size seeded random checkpoint (same architecture and FLOPs as the published one) unless
--checkpoint is given. One "inversion" = encoder + first generator pass + ADA + consultation +
final generator pass; one "edit" = the same with the edited codes' extra generator pass. Each is
timed with CUDA synchronisation over --iters iterations after warm-up, and compared with the
published per-image procedure (batch 1, fp32, grouped per-sample convolutions) measured in the
same run. The share of the GPU's peak uses ~0.5 TFLOP per inversion and ~0.65 TFLOP per edit.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hfgi_cli.edits import add_direction  # noqa: E402
from hfgi_cli.engine import Runtime  # noqa: E402
from hfgi_cli.models import ops  # noqa: E402
from hfgi_cli.models.hfgi import HFGI, ModelConfig, make_random_checkpoint  # noqa: E402
from hfgi_cli.models.stylegan2 import Form  # noqa: E402

TFLOP_INVERSION = 0.5
TFLOP_EDIT = 0.65
PEAK_TFLOPS = {"fp32": 67.0, "fp16": 989.0, "bf16": 989.0}  # H100 SXM dense (fp32: CUDA cores)


def load(checkpoint: str | None, device: torch.device) -> HFGI:
    """As load_model loads it: the device's form."""
    if checkpoint:
        return HFGI.from_checkpoint(checkpoint, device=device)
    model = HFGI(ModelConfig(), Form.for_device(device.type))
    model.load_published_state(make_random_checkpoint(None, ModelConfig(), seed=0))
    return model.to(device).eval()


def timed(fn, iters: int) -> float:
    fn()
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint")
    ap.add_argument("--batches", default="1,8,16")
    ap.add_argument("--precisions", default="fp32,fp16")
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = load(args.checkpoint, device)
    direction = torch.randn(1, 512, device=device)
    print(f"device {torch.cuda.get_device_name()} | torch {torch.__version__} | cuda ops: ", end="")
    ops._cuda_ops()
    print(ops.cuda_ops_status(), flush=True)

    def invert(x: torch.Tensor, precision: str, net: HFGI = model) -> torch.Tensor:
        with Runtime(device, precision).session():
            enc = net.encode(x)
            return net.decode(enc["latent"], enc["distortion"], enc["low_res"])

    def edit(x: torch.Tensor, precision: str, net: HFGI = model) -> torch.Tensor:
        with Runtime(device, precision).session():
            enc = net.encode(x)
            return net.decode(add_direction(enc["latent"], direction, 2.0), enc["distortion"])

    # the published procedure: batch 1, fp32, per-sample grouped convolutions, no reuse
    grouped = model.with_form(Form("grouped", False, "cuda", "cuda"))
    x1 = torch.rand(1, 3, 256, 256, device=device) * 2 - 1
    base_inv = timed(lambda: invert(x1, "fp32", grouped), args.iters)
    base_edit = timed(lambda: edit(x1, "fp32", grouped), args.iters)
    print(f"published loop (b1 fp32 grouped): {1 / base_inv:7.2f} inversions/s  {1 / base_edit:7.2f} edits/s")
    print(f"{'precision':>9} {'batch':>5} {'inv/s':>8} {'edit/s':>8} {'x base':>7} {'TFLOP/s':>8} {'% peak':>7}")
    reference: dict[int, torch.Tensor] = {}
    for precision in args.precisions.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            x = torch.rand(batch, 3, 256, 256, device=device, generator=torch.Generator(device).manual_seed(1)) * 2 - 1
            t_inv = timed(lambda x=x, p=precision: invert(x, p), args.iters) / batch
            t_edit = timed(lambda x=x, p=precision: edit(x, p), args.iters) / batch
            tflops = TFLOP_EDIT / t_edit
            print(f"{precision:>9} {batch:>5} {1 / t_inv:8.2f} {1 / t_edit:8.2f} {base_edit / t_edit:7.1f} "
                  f"{tflops:8.1f} {100 * tflops / PEAK_TFLOPS[precision]:6.1f}%", flush=True)
            out = edit(x, precision).float()
            if precision == "fp32":
                reference[batch] = out
            elif batch in reference:
                levels = ((out.clamp(-1, 1) - reference[batch].clamp(-1, 1)).abs() * 127.5)
                print(f"{'':>9} {'':>5} {precision} vs fp32: mean {levels.mean():.3f} uint8 levels, "
                      f"99.9th pct {torch.quantile(levels.flatten()[:10_000_000], 0.999):.2f}, max {levels.max():.1f}")
    print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
