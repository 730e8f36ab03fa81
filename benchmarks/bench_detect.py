#!/usr/bin/env python
"""Face detection recall, false faces and speed on composite photos with known faces.

    python benchmarks/bench_detect.py [--photos 24] [--seed 0] [--legacy] [--angles 0,-22,22]
    python benchmarks/bench_detect.py --conditions [--per-condition 4] [--designs before,after]

Each test photo (1 to 12 MP) is a background with 1-8 of the 12 aligned faces of
``../shared/data/faces`` pasted in, each scaled so that its FFHQ crop is 80-600 px and rotated by
-30..+30 degrees (an aligned 256 px face crop IS its FFHQ crop, so the pasted square is the truth).
Backgrounds are blurred, tiled pieces of the shared photos away from their faces, plus noise,
so the detector sees textures, not a flat colour. A further set of photos has no face at all.

A true face counts as found when a detected face's FFHQ square has its centre within 25 % of the
true side and a side within 0.7-1.4x of it. Reported: recall by crop size and by tilt, recall of
the faces the goal covers (crop >= 128 px and >= 4 % of the photo's long side, |tilt| <= 30),
false faces per photo (detections matching no true face; on the no-face photos separately), the
median alignment error of found faces (corner distance / side), and seconds per photo by size.
``--legacy`` measures the previous detector (one upright HOG pass on a copy of at most 1024 px).

``--conditions``: the faces that break detectors in real photos, made from the same faces by
occluding and degrading them as ``tests/face_photos.py`` describes (caps, hats, glasses,
sunglasses, a hand or a microphone over the face, strong side light, motion blur, turned heads
approximated by a squeeze with perspective; low light and heavy JPEG over the whole photo).
``--per-condition`` photos per condition (cycling through 1, 3, 6 and 12 MP), each with 2-6 goal
faces (crop >= 140 px and >= 4.5 % of the long side, tilt -30..30) all under that condition, the
truth being the clean face's landmarks carried through the same changes; plus ``--empty`` photos
without a face. Every design runs on the same photos: ``before`` is HOG alone (hits >= 0.5, the
detector before CNN confirmation), ``confirm`` HOG with its hits from 0 up confirmed by the CNN,
``after`` the default detector (that, and the hits from -0.5 up confirmed by the CNN when it is
surer, on their crop or on it with the light evened out), ``cnn`` the CNN everywhere. Printed per
design: recall per condition, false faces per photo with faces and in the photos without, seconds
per photo by size.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

from hfgi_cli.align import face_quad  # noqa: E402
from hfgi_cli.detect import _detector, _predictor, detect_faces  # noqa: E402
from tests import face_photos  # noqa: E402

SIZES_MP = (1.0, 3.0, 6.0, 12.0)
ASPECT = 4 / 3


@dataclass
class TrueFace:
    quad: np.ndarray  # (4, 2) FFHQ square corners, face_quad order
    side: float
    tilt: float

    @property
    def centre(self) -> np.ndarray:
        return self.quad.mean(axis=0)


def _square(cx: float, cy: float, side: float, tilt: float) -> np.ndarray:
    """FFHQ square corners (top-left, bottom-left, bottom-right, top-right) of a face turned by ``tilt``
    degrees counter-clockwise (as PIL's rotate shows it)."""
    a = math.radians(tilt)
    x = np.array([math.cos(a), -math.sin(a)]) * side / 2  # along the eyes, left to right
    y = np.array([math.sin(a), math.cos(a)]) * side / 2  # down the face
    c = np.array([cx, cy])
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Blurred, tiled pieces of the shared photos (regions without faces) plus mild noise."""
    sources = [
        Image.open(SHARED / "data" / "photos" / "astronaut.png").convert("RGB").crop((300, 0, 512, 512)),
        Image.open(SHARED / "data" / "photos" / "grace_hopper.jpg").convert("RGB").crop((0, 300, 140, 600)),
        Image.open(SHARED / "data" / "photos" / "astronaut.png").convert("RGB").crop((0, 300, 200, 512)),
    ]
    canvas = Image.new("RGB", size)
    tile = int(rng.integers(300, 700))
    for y in range(0, size[1], tile):
        for x in range(0, size[0], tile):
            piece = sources[int(rng.integers(len(sources)))].resize((tile, tile), Image.Resampling.BILINEAR)
            if rng.random() < 0.5:
                piece = piece.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            canvas.paste(piece, (x, y))
    canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 4))))
    arr = np.asarray(canvas, dtype=np.float32) + rng.normal(0, 4, (size[1], size[0], 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def free_spot(rng: np.random.Generator, size: tuple[int, int], side: float,
              placed: list[TrueFace]) -> tuple[float, float] | None:
    """A centre for a face of ``side`` px inside a photo of ``size``, clear of the faces already
    placed (30 random tries), or None when none was found."""
    w, h = size
    for _attempt in range(30):
        cx, cy = rng.uniform(0.75 * side, w - 0.75 * side), rng.uniform(0.75 * side, h - 0.75 * side)
        if all(np.hypot(cx - f.centre[0], cy - f.centre[1]) > 0.8 * (side + f.side) for f in placed):
            return float(cx), float(cy)
    return None


def compose(rng: np.random.Generator, faces: list[Image.Image], mp: float) -> tuple[Image.Image, list[TrueFace]]:
    w = int(math.sqrt(mp * 1e6 * ASPECT))
    h = int(w / ASPECT)
    photo = background(rng, (w, h))
    placed: list[TrueFace] = []
    for _ in range(int(rng.integers(1, 9))):
        side = float(rng.uniform(80, min(600, 0.45 * h)))
        tilt = float(rng.uniform(-30, 30))
        spot = free_spot(rng, (w, h), side, placed)
        if spot is None:
            continue
        cx, cy = spot
        face = faces[int(rng.integers(len(faces)))].resize((round(side), round(side)), Image.Resampling.LANCZOS)
        mask = Image.new("L", face.size, 255)
        rotated = face.rotate(tilt, Image.Resampling.BICUBIC, expand=True)
        mask = mask.rotate(tilt, Image.Resampling.BICUBIC, expand=True)
        photo.paste(rotated, (round(cx - rotated.width / 2), round(cy - rotated.height / 2)), mask)
        placed.append(TrueFace(_square(cx, cy, side, tilt), side, tilt))
    return photo, placed


def legacy_detect(image: Image.Image) -> list[np.ndarray]:
    """The detector before the rotation sweep: one upright HOG pass (upsampled once) on a copy of
    at most 1024 px, landmarks on the full-resolution photo."""
    import dlib

    predictor = _predictor()
    full = np.asarray(image)
    scale = min(1.0, 1024 / max(image.size))
    small_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    small = np.asarray(image.resize(small_size, Image.Resampling.BILINEAR, reducing_gap=2.0)) if scale < 1 else full
    sx, sy = image.width / small.shape[1], image.height / small.shape[0]
    with _detector() as detector:
        boxes, scores, _ = detector.run(small, 1, 0.0)
    faces = []
    for box, score in zip(boxes, scores):
        if score >= 0.5:
            rect = dlib.rectangle(round(box.left() * sx), round(box.top() * sy), round(box.right() * sx),
                                  round(box.bottom() * sy))
            faces.append(np.array([[p.x, p.y] for p in predictor(full, rect).parts()], dtype=np.float64))
    return faces


def match(found: list[np.ndarray], truth: list[TrueFace]) -> tuple[list[float | None], int]:
    """Per true face: the alignment error of its match (None: missed); and the unmatched detections."""
    quads = [face_quad(lm)[0] for lm in found]
    used: set[int] = set()
    errors: list[float | None] = []
    for t in truth:
        best, best_d = None, math.inf
        for i, q in enumerate(quads):
            side = np.hypot(*(q[3] - q[0]))
            d = np.hypot(*(q.mean(0) - t.centre))
            if i not in used and d < 0.25 * t.side and 0.7 < side / t.side < 1.4 and d < best_d:
                best, best_d = i, d
        if best is None:
            errors.append(None)
        else:
            used.add(best)
            errors.append(float(np.linalg.norm(quads[best] - t.quad, axis=1).mean() / t.side))
    return errors, len(quads) - len(used)


DESIGNS = {
    "before": {"confirm_score": 0.5},
    "confirm": {"rescue_score": 0.0},
    "after": {},
    "cnn": {"detector": "cnn"},
}


def compose_condition(rng: np.random.Generator, faces: list[Image.Image], mp: float,
                      condition: str) -> tuple[Image.Image, list[TrueFace]]:
    """A photo of 2-6 goal faces, every one under ``condition``; the truth is the FFHQ square of
    the clean face's landmarks carried through the condition's change and the paste."""
    w = int(math.sqrt(mp * 1e6 * ASPECT))
    h = int(w / ASPECT)
    photo = background(rng, (w, h))
    placed: list[TrueFace] = []
    for _ in range(int(rng.integers(2, 7))):
        side = float(rng.uniform(max(140, 0.045 * w), min(600, 0.45 * h)))
        tilt = float(rng.uniform(-30, 30))
        spot = free_spot(rng, (w, h), side, placed)
        if spot is None:
            continue
        cx, cy = spot
        face = faces[int(rng.integers(len(faces)))]
        made = face_photos.apply(condition, face, rng)
        lm = face_photos.paste(photo, made, side, tilt, (cx, cy), face_photos.landmarks(face))
        quad, qside = face_quad(lm)
        placed.append(TrueFace(quad, qside, tilt))
    return face_photos.degrade_photo(condition, photo, rng), placed


def conditions_main(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    faces = face_photos.shared_faces()
    designs = args.designs.split(",")
    photos: list[tuple[str, float, Image.Image, list[TrueFace]]] = []
    for condition in face_photos.CONDITIONS:
        for k in range(args.per_condition):
            mp = SIZES_MP[k % len(SIZES_MP)]
            photos.append((condition, mp, *compose_condition(rng, faces, mp, condition)))
    for k in range(args.empty):
        mp = SIZES_MP[k % len(SIZES_MP)]
        w = int(math.sqrt(mp * 1e6 * ASPECT))
        photos.append(("no face", mp, background(rng, (w, int(w / ASPECT))), []))
    found: dict[str, dict[str, list[int]]] = {d: {} for d in designs}  # design -> condition -> [hits, faces, false]
    seconds: dict[str, dict[float, list[float]]] = {d: {mp: [] for mp in SIZES_MP} for d in designs}
    for condition, mp, photo, truth in photos:
        for design in designs:
            start = time.perf_counter()
            detected = detect_faces(photo, **DESIGNS[design])
            seconds[design][mp].append(time.perf_counter() - start)
            errors, extra = match(detected, truth)
            row = found[design].setdefault(condition, [0, 0, 0, 0])
            row[0] += sum(e is not None for e in errors)
            row[1] += len(truth)
            row[2] += extra
            row[3] += 1
            print(f"  {condition} {mp:.0f} MP {design}: {sum(e is not None for e in errors)}/{len(truth)} found, "
                  f"{extra} false, {seconds[design][mp][-1]:.2f} s", file=sys.stderr, flush=True)
    print(f"{len(photos)} photos ({args.per_condition} per condition, {args.empty} without faces), seed {args.seed}")
    print(f"{'condition':12s} {'faces':>5s}  " + "  ".join(f"{d + ' recall':>14s} {'false':>5s}" for d in designs))
    for condition in [*face_photos.CONDITIONS, "no face"]:
        n = found[designs[0]][condition][1]
        cells = []
        for d in designs:
            hits, total, false, count = found[d][condition]
            recall = f"{100 * hits / total:5.1f} % ({hits:>2d})" if total else "      -      "
            cells.append(f"{recall:>14s} {false / count:5.2f}")
        print(f"{condition:12s} {n:5d}  " + "  ".join(cells))
    print("false faces per photo: with faces / without faces")
    for d in designs:
        with_faces = [v for c, v in found[d].items() if c != "no face"]
        per_photo = sum(v[2] for v in with_faces) / max(1, sum(v[3] for v in with_faces))
        print(f"  {d:8s} {per_photo:.2f} / {found[d]['no face'][2]} in {found[d]['no face'][3]} photos")
    print("seconds per photo (detection + landmarks), mean (max):")
    for mp in SIZES_MP:
        print(f"  {mp:4.0f} MP  " + "  ".join(
            f"{d} {np.mean(seconds[d][mp]):5.2f} ({np.max(seconds[d][mp]):5.2f})" for d in designs if seconds[d][mp]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conditions", action="store_true", help="recall per hard condition, designs side by side")
    ap.add_argument("--per-condition", type=int, default=4, help="photos per condition (with --conditions)")
    ap.add_argument("--designs", default="before,after", help=f"with --conditions: of {', '.join(DESIGNS)}")
    ap.add_argument("--photos", type=int, default=24, help="photos with faces (spread over 1-12 MP)")
    ap.add_argument("--empty", type=int, default=8, help="photos without a face")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--legacy", action="store_true", help="measure the previous detector")
    ap.add_argument("--angles", default=None, help="angles to scan, e.g. 0,-22,22 (default: the detector's)")
    ap.add_argument("--min-face", type=float, default=None, help="min_face of the detector (default: its own)")
    args = ap.parse_args()
    if args.conditions:
        conditions_main(args)
        return
    rng = np.random.default_rng(args.seed)
    faces = [Image.open(p).convert("RGB") for p in sorted((SHARED / "data" / "faces").glob("*.jpg"))]
    options: dict = {}
    if args.angles:
        options["angles"] = tuple(float(a) for a in args.angles.split(","))
    if args.min_face is not None:
        options["min_face"] = args.min_face

    def detect(photo: Image.Image) -> list[np.ndarray]:
        return legacy_detect(photo) if args.legacy else detect_faces(photo, **options)

    rows: list[tuple[TrueFace, float | None, float]] = []  # (face, error or None, photo long side)
    false_faces, seconds = [], {mp: [] for mp in SIZES_MP}
    for k in range(args.photos):
        mp = SIZES_MP[k % len(SIZES_MP)]
        photo, truth = compose(rng, faces, mp)
        start = time.perf_counter()
        found = detect(photo)
        seconds[mp].append(time.perf_counter() - start)
        errors, extra = match(found, truth)
        false_faces.append(extra)
        rows += [(t, e, max(photo.size)) for t, e in zip(truth, errors)]
    empty_false = []
    for k in range(args.empty):
        mp = SIZES_MP[k % len(SIZES_MP)]
        w = int(math.sqrt(mp * 1e6 * ASPECT))
        photo = background(rng, (w, int(w / ASPECT)))
        start = time.perf_counter()
        empty_false.append(len(detect(photo)))
        seconds[mp].append(time.perf_counter() - start)

    def recall(selected: list[tuple[TrueFace, float | None, float]]) -> str:
        if not selected:
            return "   -   (0)"
        hits = sum(e is not None for _, e, _ in selected)
        return f"{100 * hits / len(selected):5.1f} % ({hits}/{len(selected)})"

    print(f"detector: {'legacy (upright, <= 1024 px)' if args.legacy else f'detect_faces {options}'}; "
          f"{args.photos} photos with {len(rows)} faces, {args.empty} without")
    print("recall by FFHQ crop size:")
    for lo, hi in ((80, 128), (128, 200), (200, 350), (350, 601)):
        print(f"  {lo:>3}-{hi - 1:<3} px  {recall([r for r in rows if lo <= r[0].side < hi])}")
    print("recall by tilt:")
    for lo, hi in ((0, 10), (10, 20), (20, 31)):
        print(f"  |tilt| {lo:>2}-{hi - 1:<2} deg  {recall([r for r in rows if lo <= abs(r[0].tilt) < hi])}")
    goal = [r for r in rows if r[0].side >= 128 and r[0].side >= 0.04 * r[2]]
    print(f"goal faces (crop >= 128 px and >= 4 % of the long side): recall {recall(goal)}")
    errs = [e for _, e, _ in rows if e is not None]
    if errs:
        print(f"alignment error of found faces (mean corner distance / side): median {np.median(errs):.3f}, "
              f"90th percentile {np.percentile(errs, 90):.3f}")
    print(f"false faces: {np.mean(false_faces):.2f} per photo with faces, "
          f"{sum(empty_false)} in {args.empty} photos without faces")
    print("seconds per photo (detection + landmarks):")
    for mp, times in seconds.items():
        if times:
            print(f"  {mp:4.0f} MP  mean {np.mean(times):5.2f} s  max {np.max(times):5.2f} s")


if __name__ == "__main__":
    main()
