#!/usr/bin/env python
"""Peak memory of `hfgi video` on a short clip and on a 4x longer one: they must be about equal.

    PYTHONPATH=. python benchmarks/bench_video_memory.py                 # small model, 16 and 64 frames
    PYTHONPATH=. python benchmarks/bench_video_memory.py --model full --device cuda --frames 32

Each run is a fresh child process (the full pipeline: decode, detect, smooth, align, encode, edit,
decode, paste back, H.264 + audio, OUT.pt); the child reports its peak resident set size from
``resource.getrusage`` (``ru_maxrss``, which includes torch's native allocations that tracemalloc
misses) and its frames/s. The clips are the astronaut photo moved along a smooth path
(``tests/video_clips.py``), 320x240 at 25 fps with a tone. ``--model full`` uses a seeded random
checkpoint of the published architecture (1024 px; written once to the temp folder, 1.2 GB),
``--checkpoint`` a real one.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def child(args: argparse.Namespace) -> None:
    import torch

    from hfgi_cli import load_model
    from hfgi_cli import video as hv
    from hfgi_cli.edits import EditSpec

    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint, device=args.device, precision=args.precision, directions=args.directions)
    opts = hv.VideoOptions(EditSpec("smile", 2.0), batch_size=args.batch_size)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = hv.edit_video(model, args.clip, Path(args.out), opts)
    seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    print(json.dumps({
        "frames": result.frames, "faces": result.faces, "seconds": seconds, "fps": result.frames / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_loaded_mb": rss_loaded / 1024,
        "gpu_peak_mb": gpu / 2**20,
    }))


def make_inputs(tmp: Path, args: argparse.Namespace) -> tuple[Path, Path, dict[int, Path]]:
    import torch
    from PIL import Image

    from hfgi_cli.align import face_quad
    from hfgi_cli.detect import detect_faces
    from hfgi_cli.models.hfgi import SMALL_CONFIG, ModelConfig, make_random_checkpoint
    from tests.video_clips import make_clip, write_mp4

    config = SMALL_CONFIG if args.model == "small" else ModelConfig()
    ckpt = Path(args.checkpoint) if args.checkpoint else tmp / f"{args.model}.pt"
    if not args.checkpoint:
        make_random_checkpoint(ckpt, config, seed=1)
    directions = Path(args.directions) if args.directions else tmp / "directions"
    if not args.directions:
        (directions / "interfacegan").mkdir(parents=True)
        torch.save(torch.randn(1, config.style_dim, generator=torch.Generator().manual_seed(0)),
                   directions / "interfacegan" / "smile.pt")
    photo = Image.open(REPO.parent / "shared" / "data" / "photos" / "astronaut.png").convert("RGB")
    quad, _ = face_quad(detect_faces(photo)[0])

    def motion(p: float) -> tuple[float, float, float, float]:
        return (160 + 30 * math.sin(2 * math.pi * p), 125, 0.7, 3 * math.sin(2 * math.pi * p))

    clips = {}
    for n in (args.frames, 4 * args.frames):
        clip = make_clip(photo, quad, quad.mean(axis=0), motion, n)
        clips[n] = tmp / f"clip{n}.mp4"
        write_mp4(clips[n], clip.frames, 25.0, audio=True)
    return ckpt, directions, clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("small", "full"), default="small")
    parser.add_argument("--checkpoint", help="a real checkpoint instead of a random one")
    parser.add_argument("--directions", help="directions folder (needs interfacegan/smile.pt)")
    parser.add_argument("--frames", type=int, default=16, help="length of the short clip (the long one is 4x)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="hfgi-bench-video-") as tmp_name:
        tmp = Path(tmp_name)
        ckpt, directions, clips = make_inputs(tmp, args)
        rows = []
        for n, clip in clips.items():
            cmd = [sys.executable, __file__, "--child", "--clip", str(clip), "--out", str(tmp / f"out{n}.mp4"),
                   "--checkpoint", str(ckpt), "--directions", str(directions), "--device", args.device,
                   "--precision", args.precision, "--batch-size", str(args.batch_size),
                   "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if proc.returncode != 0:
                sys.exit(f"run on {n} frames failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"model {args.model}, batch {args.batch_size}, device {args.device}, 320x240 clips")
    print(f"{'frames':>7} {'faces':>6} {'frames/s':>9} {'RSS after load MB':>18} {'peak RSS MB':>12} "
          f"{'GPU peak MB':>12}")
    for r in rows:
        print(f"{r['frames']:>7} {r['faces']:>6} {r['fps']:>9.2f} {r['rss_loaded_mb']:>18.0f} "
              f"{r['peak_rss_mb']:>12.0f} {r['gpu_peak_mb']:>12.0f}")
    short, long = rows
    grow = (long["peak_rss_mb"] - long["rss_loaded_mb"]) / max(1e-9, short["peak_rss_mb"] - short["rss_loaded_mb"])
    print(f"peak RSS long/short: {long['peak_rss_mb'] / short['peak_rss_mb']:.3f}  "
          f"(growth after model load long/short: {grow:.2f})")


if __name__ == "__main__":
    main()
