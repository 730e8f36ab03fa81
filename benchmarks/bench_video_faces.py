#!/usr/bin/env python
"""`hfgi video` with several people: seconds per frame against faces per frame, and how much each
track's smoothed crop square jitters against the raw per-frame detection.

    PYTHONPATH=. python benchmarks/bench_video_faces.py                    # small model, 8 frames a clip
    PYTHONPATH=. python benchmarks/bench_video_faces.py --frames 16 --model full --device cuda

Speed: clips of 1, 2 and 3 shared faces (``tests/video_clips.make_scene``, 480x240, slow drift)
run through ``edit_video`` in this process (after a warm-up run); also timed alone is the tracking
(``track_clip``: detection, association with descriptors, smoothing, no model), so the model's
share is the difference. Ratios are against the one-face clip of the same run.

Jitter: three faces moving on smooth, different paths (shift, zoom, a little rotation) with
Gaussian noise (sigma 6) on every frame, tracked without the model. Per track: the RMS second
difference of the square's corners (``video_clips.jitter``) of the smoothed squares and of the raw
per-frame detections, and the RMS distance of each to the true square (offset); the smoothed /
raw ratios are the figures (below 1: steadier / closer to the truth).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_name  # noqa: E402


def scene_of(k: int, n: int, noise: float = 0.0, moving: bool = False):  # noqa: ANN201
    from PIL import Image

    from tests.conftest import FACES
    from tests.video_clips import Person, make_scene

    names = ("00044.jpg", "00051.jpg", "00085.jpg")
    people = []
    for j, name in enumerate(names[:k]):
        photo = Image.open(FACES / name).convert("RGB")
        x0 = 90 + 150 * j
        if moving:
            def motion(p: float, x0: float = x0, j: int = j) -> tuple[float, float, float, float]:
                a = 2 * math.pi * (p + j / 3)
                return (x0 + 20 * math.sin(a), 120 + 8 * math.cos(a), 0.5 * (1 + 0.06 * math.sin(a)), 4 * math.sin(a))
        else:
            def motion(p: float, x0: float = x0) -> tuple[float, float, float, float]:
                return (x0 + 10 * p, 120, 0.5, 0.0)
        people.append(Person(photo, motion))
    return make_scene(people, n, (480, 240), noise=noise, seed=k)


def speed(args: argparse.Namespace, tmp: Path) -> None:
    import torch

    from hfgi_cli import load_model
    from hfgi_cli import video as hv
    from hfgi_cli.edits import EditSpec
    from hfgi_cli.models.hfgi import SMALL_CONFIG, ModelConfig, make_random_checkpoint
    from tests.video_clips import write_mp4

    torch.set_num_threads(args.threads)
    config = SMALL_CONFIG if args.model == "small" else ModelConfig()
    ckpt = tmp / f"{args.model}.pt"
    make_random_checkpoint(ckpt, config, seed=1)
    (tmp / "dirs" / "interfacegan").mkdir(parents=True)
    torch.save(torch.randn(1, config.style_dim, generator=torch.Generator().manual_seed(0)),
               tmp / "dirs" / "interfacegan" / "smile.pt")
    model = load_model(ckpt, device=args.device, directions=tmp / "dirs")
    opts = hv.VideoOptions(EditSpec("smile", 2.0), batch_size=args.batch_size)
    clips = {}
    for k in (1, 2, 3):
        clips[k] = tmp / f"faces{k}.mp4"
        write_mp4(clips[k], scene_of(k, args.frames).frames, 25.0, audio=False)
    hv.edit_video(model, clips[1], tmp / "warm.mp4", opts)  # warm-up: first calls, dlib models loaded
    rows = []
    for k, clip in clips.items():
        start = time.perf_counter()
        _, tracks, frames = hv.track_clip(clip)
        tracking = time.perf_counter() - start
        start = time.perf_counter()
        result = hv.edit_video(model, clip, tmp / f"out{k}.mp4", opts)
        whole = time.perf_counter() - start
        rows.append((k, len(tracks), result.faces / result.frames, whole / frames, tracking / frames))
    base = rows[0][3]
    print(f"speed: model {args.model}, device {args.device}, batch {args.batch_size}, {args.frames} frames of "
          f"480x240, {args.threads} threads")
    print(f"{'faces/frame':>11} {'tracks':>6} {'s/frame':>8} {'x 1 face':>8} {'tracking s/frame':>17} "
          f"{'model s/face':>13}")
    for _k, tracks, per_frame, seconds, tracking in rows:
        print(f"{per_frame:>11.1f} {tracks:>6} {seconds:>8.2f} {seconds / base:>8.2f} {tracking:>17.3f} "
              f"{(seconds - tracking) / max(per_frame, 1e-9):>13.2f}")


def jitter_figures(args: argparse.Namespace) -> None:
    from hfgi_cli.video import tracking
    from tests.video_clips import jitter

    scene = scene_of(3, args.jitter_frames, noise=6.0, moving=True)
    tracker = tracking.Tracker()
    smooth: dict[int, list[np.ndarray]] = {}
    raw: dict[int, list[np.ndarray]] = {}
    true: dict[int, list[np.ndarray]] = {}
    for t, _pixels, faces in tracker.run(iter(scene.frames)):
        centres = scene.true_quads[t].mean(axis=1)
        for face in faces:
            if face.raw is None:
                continue
            person = int(np.nanargmin(np.hypot(*(centres - face.raw[0:2]).T)))
            smooth.setdefault(face.track, []).append(tracking.vector_quad(face.vec))
            raw.setdefault(face.track, []).append(tracking.vector_quad(face.raw))
            true.setdefault(face.track, []).append(scene.true_quads[t, person])
    print(f"\njitter: 3 faces moving, noise sigma 6, {args.jitter_frames} frames, smooth window "
          f"{tracking.DEFAULT_SMOOTH_WINDOW}")
    print(f"{'track':>5} {'frames':>6} {'jitter raw px':>13} {'smoothed px':>11} {'ratio':>6} "
          f"{'offset raw px':>13} {'smoothed px':>11} {'ratio':>6}")
    for k in sorted(smooth):
        s, r, g = np.array(smooth[k]), np.array(raw[k]), np.array(true[k])
        off = {name: float(np.sqrt(np.mean(np.sum((q - g) ** 2, -1)))) for name, q in (("raw", r), ("smooth", s))}
        jr, js = jitter(r - g), jitter(s - g)
        print(f"{k:>5} {len(s):>6} {jr:>13.2f} {js:>11.2f} {js / jr:>6.2f} {off['raw']:>13.2f} "
              f"{off['smooth']:>11.2f} {off['smooth'] / off['raw']:>6.2f}")
    print(f"descriptors computed: {tracker.associator.descriptors_computed} for "
          f"{sum(len(v) for v in raw.values())} detections")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("small", "full"), default="small")
    parser.add_argument("--frames", type=int, default=8, help="frames of each speed clip")
    parser.add_argument("--jitter-frames", type=int, default=48)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}")
    jitter_figures(args)
    with tempfile.TemporaryDirectory(prefix="hfgi-bench-faces-") as tmp:
        speed(args, Path(tmp))


if __name__ == "__main__":
    main()
