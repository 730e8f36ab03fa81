#!/usr/bin/env python
"""Top CUDA kernels of one batched fp16 edit (where the time goes on a GPU).

    PYTHONPATH=. python benchmarks/gpu_profile.py [--batch 16] [--precision fp16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hfgi_cli.edits import add_direction  # noqa: E402
from hfgi_cli.engine import Runtime  # noqa: E402
from hfgi_cli.models.hfgi import HFGI, ModelConfig, make_random_checkpoint  # noqa: E402
from hfgi_cli.models.stylegan2 import Form  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--precision", default="fp16")
    args = ap.parse_args()
    device = torch.device("cuda")
    model = HFGI(ModelConfig(), Form.for_device("cuda"))
    model.load_published_state(make_random_checkpoint(None, ModelConfig(), seed=0))
    model = model.to(device).eval()
    runtime = Runtime(device, args.precision)
    x = torch.rand(args.batch, 3, 256, 256, device=device) * 2 - 1
    direction = torch.randn(1, 512, device=device)

    def edit() -> None:
        with runtime.session():
            enc = model.encode(x)
            model.decode(add_direction(enc["latent"], direction, 2.0), enc["distortion"])

    for _ in range(3):
        edit()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        edit()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))


if __name__ == "__main__":
    main()
