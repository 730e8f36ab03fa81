#!/usr/bin/env python
"""Build, check and time hfgi's StyleGAN2 CUDA ops on a GPU machine (finishes well under 2 min).

    PYTHONPATH=. python benchmarks/gpu_ops_check.py                # GPU machine
    PYTHONPATH=. python benchmarks/gpu_ops_check.py --cpu-dry-run  # reference path only, tiny shapes

(a) builds the extension through hfgi_cli.models.ops (timed; a cached build only loads),
(b) max |diff| of CUDA and of the same-dtype reference path against a float64 reference, for the
    StyleGAN2 (1024px, channel multiplier 2) shapes in fp32 / fp16 / bf16,
(c) times reference vs CUDA for the hot shapes at batch 8 with CUDA events and prints ratios.
Exit status 1 if the build fails or a CUDA result is outside tolerance.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hfgi_cli.models import ops  # noqa: E402

BLUR = torch.tensor([1.0, 3.0, 3.0, 1.0])
KERNEL = BLUR[:, None] * BLUR[None, :]
KERNEL = KERNEL / KERNEL.sum()
CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 512, 256: 256, 512: 128, 1024: 64}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# max |diff| vs fp64 allowed for the CUDA path (inputs ~N(0,1); filter gain 1 or 4)
TOL = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 1.5e-1}


def upsample_args(res: int):  # ToRGB skip / Upsample: [B, 3, r, r] -> [B, 3, 2r, 2r]
    return (KERNEL * 4, 2, 1, (2, 1))


def blur_args(res: int):  # Blur after the stride-2 transposed 3x3 conv: [B, C, 2r+1, 2r+1] -> [B, C, 2r, 2r]
    return (KERNEL * 4, 1, 1, (1, 1))


def check_cases(max_res: int):
    """(label, op, input shape, extra args) for every StyleGAN2 layer shape up to max_res."""
    cases = []
    for res, ch in CHANNELS.items():
        if res > max_res or res == 4:
            continue
        half = res // 2
        cases.append((f"upsample rgb {half}->{res}", "up", (2, 3, half, half), upsample_args(half)))
        cases.append((f"blur {ch}ch {res + 1}->{res}", "up", (2, ch, res + 1, res + 1), blur_args(res)))
        cases.append((f"bias_act {ch}ch {res}", "act", (2, ch, res, res), None))
    cases.append(("bias_act linear 512", "act", (2, 512), None))
    return cases


def run_op(kind: str, x, extra, bias, use_cuda: bool):
    if kind == "up":
        kernel, up, down, pad = extra
        k = kernel.to(x.device, x.dtype)
        if use_cuda:
            return ops.upfirdn2d(x, k, up, down, pad, impl="cuda")
        return ops.upfirdn2d_reference(x, k, up, down, pad)
    if use_cuda:
        return ops.fused_leaky_relu(x, bias, impl="cuda")
    return ops.fused_leaky_relu_reference(x, bias)


def bench(fn, device: torch.device, iters: int) -> float:
    """Mean milliseconds per call."""
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) * 1e3 / iters


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-dry-run", action="store_true", help="reference path only, on CPU, tiny shapes")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)
    t_start = time.perf_counter()
    failures = 0

    if args.cpu_dry_run:
        device, use_cuda, max_res, batch, iters = torch.device("cpu"), False, 32, 1, 2
        print("== CPU dry run: reference path only ==")
    else:
        if not torch.cuda.is_available():
            print("no CUDA device; use --cpu-dry-run", file=sys.stderr)
            return 2
        device, use_cuda, max_res, batch, iters = torch.device("cuda"), True, 1024, args.batch, args.iters
        print(f"== {torch.cuda.get_device_name()} | torch {torch.__version__} cuda {torch.version.cuda} | "
              f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(auto)')} ==")
        # (a) build
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mod = ops._cuda_ops()
        build_s = time.perf_counter() - t0
        print(f"[build] state={ops.cuda_ops_status()} in {build_s:.1f}s")
        for w in caught:
            print(f"[build] warning: {w.message}")
        if mod is None:
            return 1

    torch.set_grad_enabled(False)

    # (b) correctness against a float64 reference
    print(f"\n[check] max |diff| vs fp64 reference (batch 2){'' if use_cuda else ' -- reference only'}")
    print(f"  {'case':<28}" + "".join(f"{d:>22}" for d in DTYPES))
    print(f"  {'':<28}" + "".join(f"{'cuda / ref-same-dtype':>22}" for _ in DTYPES))
    for label, kind, shape, extra in check_cases(max_res):
        x64 = torch.randn(shape, device=device, dtype=torch.float64)
        b64 = torch.randn(shape[1], device=device, dtype=torch.float64)
        want = run_op(kind, x64, extra, b64, use_cuda=False)
        cells = []
        for name, dt in DTYPES.items():
            x, b = x64.to(dt), b64.to(dt)
            # compare against fp64 maths on the *rounded* inputs, so only the op's error counts
            extra_dt = extra and (extra[0].to(dt).double(), *extra[1:])
            want_dt = run_op(kind, x.double(), extra_dt, b.double(), False)
            ref_err = (run_op(kind, x, extra, b, use_cuda=False).double() - want_dt).abs().max().item()
            if use_cuda:
                got = run_op(kind, x, extra, b, use_cuda=True)
                cuda_err = (got.double() - want_dt).abs().max().item()
                ok = got.shape == want.shape and cuda_err <= TOL[name]
                failures += not ok
                cells.append(f"{cuda_err:9.1e} / {ref_err:7.1e}{'' if ok else '!'}")
            else:
                cells.append(f"{'n/a':>9} / {ref_err:7.1e}")
        print(f"  {label:<28}" + "".join(f"{c:>22}" for c in cells))

    # (c) timing at batch 8 for the hot shapes
    hot = [
        ("upsample rgb 128->256", "up", (batch, 3, 128, 128), upsample_args(128)),
        ("upsample rgb 512->1024", "up", (batch, 3, 512, 512), upsample_args(512)),
        ("blur 512ch 65->64", "up", (batch, 512, 65, 65), blur_args(64)),
        ("blur 256ch 257->256", "up", (batch, 256, 257, 257), blur_args(256)),
        ("blur 64ch 1025->1024", "up", (batch, 64, 1025, 1025), blur_args(1024)),
        ("bias_act 512ch 64", "act", (batch, 512, 64, 64), None),
        ("bias_act 64ch 1024", "act", (batch, 64, 1024, 1024), None),
        ("bias_act linear 512", "act", (batch, 512), None),
    ]
    if not use_cuda:
        hot = [(lbl, k, (s[0], min(s[1], 8), *(min(v, 33) for v in s[2:])), e) for lbl, k, s, e in hot]
    print(f"\n[time] mean ms/call, batch {batch}, {iters} iters (reference = plain PyTorch, cuDNN defaults)")
    print(f"  {'case':<24}{'dtype':>6}{'ref ms':>10}{'cuda ms':>10}{'speedup':>9}")
    speedups = []
    for label, kind, shape, extra in hot:
        for name in ("fp32", "fp16") if use_cuda else ("fp32",):
            dt = DTYPES[name]
            x = torch.randn(shape, device=device, dtype=dt)
            b = torch.randn(shape[1], device=device, dtype=dt)
            ref_ms = bench(lambda x=x, b=b, k=kind, e=extra: run_op(k, x, e, b, False), device, iters)
            if use_cuda:
                cuda_ms = bench(lambda x=x, b=b, k=kind, e=extra: run_op(k, x, e, b, True), device, iters)
                speedups.append(ref_ms / cuda_ms)
                print(f"  {label:<24}{name:>6}{ref_ms:10.3f}{cuda_ms:10.3f}{ref_ms / cuda_ms:8.2f}x")
            else:
                print(f"  {label:<24}{name:>6}{ref_ms:10.3f}{'n/a':>10}{'n/a':>9}")
            del x, b
        if use_cuda:
            torch.cuda.empty_cache()

    geo = math.exp(sum(map(math.log, speedups)) / len(speedups)) if speedups else float("nan")
    status = "OK" if failures == 0 else f"{failures} CUDA results out of tolerance"
    print(f"\n[summary] {status}; geomean speedup {geo:.2f}x; total {time.perf_counter() - t_start:.1f}s")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
