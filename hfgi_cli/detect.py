"""Face detection: dlib's HOG detector and its 68-point landmark predictor, and ``find_faces``,
the photo -> aligned face crops step that the engine and ``hfgi align`` share.

The predictor file ships in the PyPI package ``face-recognition-models``; dlib itself comes from
``dlib-bin`` (a prebuilt wheel). Both are loaded once per process, at first use.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .align import DEFAULT_SIZE, MIN_QSIZE, AlignedFace, Landmarks, SkippedFace, align_faces

DEFAULT_MIN_FACE = 128.0
"""Faces whose FFHQ crop is at least this many photo pixels (and at least ``MIN_FACE_FRACTION`` of
the photo's long side) are searched for; ``min_face`` trades speed for smaller faces."""
MIN_FACE_FRACTION = 0.04
DETECT_ANGLES = (0.0, -22.0, 22.0)
"""In-plane rotations the HOG detector scans at. Upright, dlib's frontal model finds most faces
tilted by up to ~30 degrees but misses some from ~10 degrees on (10-11 of the 12 shared faces at
12-33 degrees); the turned passes find those (benchmarks/bench_detect.py: 99 % of the goal faces
tilted up to 30 degrees, against 83 % upright on a 1024 px copy)."""
DETECT_MIN_SCORE = 0.5
"""dlib HOG score below which a detection is dropped; real faces score > 1 in our samples while
weak hits (the mission patch in the astronaut photo, at 0.12) are rejected."""
HOG_MIN_BOX = 80.0
"""The HOG window: dlib finds no face whose box is smaller than this in the image it scans."""
CROP_PER_BOX = 1.9
"""FFHQ crop side / dlib box side: 1.67-1.91 measured on the shared and example photos, the top of
that range taken, so the box of the smallest face searched for (min_face / CROP_PER_BOX) is not
underestimated."""
MAX_UPSCALE = 2.0
ROLL_REFINE = 4.0
"""Landmarks of a face tilted by more than this (degrees) are predicted again on a crop turned
upright, where the predictor is as accurate as on an upright face."""


def _shape_predictor_path() -> Path:
    """The 68-point model shipped by PyPI ``face-recognition-models``.

    Its ``__init__`` imports ``pkg_resources`` (gone from new setuptools), so find the folder
    without importing the package.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the face-recognition-models package is not installed (pip install it)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / "shape_predictor_68_face_landmarks.dat"
        if path.is_file():
            return path
    raise RuntimeError("face-recognition-models has no models/shape_predictor_68_face_landmarks.dat")


_predictor_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _load_predictor() -> Any:
    import dlib  # heavy import, only needed when faces are actually searched

    return dlib.shape_predictor(str(_shape_predictor_path()))


def _predictor() -> Any:
    """The landmark predictor, once per process (it takes ~0.7 s and 100 MB to read, so threads
    asking at once wait for one load; predicting is thread-safe)."""
    with _predictor_lock:
        return _load_predictor()


_idle_detectors: queue.SimpleQueue[Any] = queue.SimpleQueue()


@contextlib.contextmanager
def _detector() -> Iterator[Any]:
    """A HOG detector for this scan alone: one object scanning in two threads at once crashes the
    process (it keeps its feature pyramid inside), and a new one takes ~0.4 s to build, so they
    are lent out and returned."""
    try:
        detector = _idle_detectors.get_nowait()
    except queue.Empty:
        import dlib

        detector = dlib.get_frontal_face_detector()
    try:
        yield detector
    finally:
        _idle_detectors.put(detector)


@dataclass
class _Candidate:
    centre: np.ndarray  # (x, y) photo pixel coordinates
    side: float  # box side in photo pixels
    angle: float  # the rotation (degrees, counter-clockwise) that makes the face upright
    score: float


def _axes(angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Photo directions of the x (along the eyes) and y (down the face) axes of a face tilted by
    ``angle`` degrees counter-clockwise (as ``Image.rotate`` would show an upright face)."""
    a = math.radians(angle)
    return np.array([math.cos(a), -math.sin(a)]), np.array([math.sin(a), math.cos(a)])


def _scan(image: Image.Image, angle: float, min_score: float) -> list[_Candidate]:
    """One HOG pass over ``image`` turned by ``-angle`` about its centre (so faces tilted by
    ``angle`` stand upright; the corners that turn out of the frame are not scanned in this pass,
    faces there are left to the upright one, which finds most faces up to ~30 degrees);
    candidates in ``image``'s coordinates."""
    rotated = image.rotate(-angle, Image.Resampling.BILINEAR) if angle else image
    with _detector() as detector:
        boxes, scores, _ = detector.run(np.asarray(rotated), 0, 0.0)
    ex, ey = _axes(angle)
    centre_in, centre_out = np.array(image.size) / 2.0, np.array(rotated.size) / 2.0
    found = []
    for box, score in zip(boxes, scores):
        if score < min_score:
            continue
        d = np.array([(box.left() + box.right()) / 2.0 + 0.5, (box.top() + box.bottom()) / 2.0 + 0.5]) - centre_out
        found.append(_Candidate(centre_in + d[0] * ex + d[1] * ey, float(box.width()), angle, float(score)))
    return found


def _suppress(candidates: list[_Candidate]) -> list[_Candidate]:
    """One candidate per face (the best scoring) among the passes' overlapping detections."""
    kept: list[_Candidate] = []
    for c in sorted(candidates, key=lambda c: -c.score):
        if all(np.hypot(*(c.centre - k.centre)) > 0.5 * max(c.side, k.side) for k in kept):
            kept.append(c)
    return kept


def _landmarks(
    predictor: Any, photo: Image.Image, pixels: np.ndarray, centre: np.ndarray, side: float, angle: float
) -> Landmarks:
    """68 landmarks of the face at ``centre`` (box ``side``), predicted on a crop of the photo turned
    by ``-angle`` so the face stands upright, then mapped back to photo coordinates (an upright
    face: on the photo's own pixels)."""
    import dlib

    width = max(1, round(side))  # dlib rectangles include their right and bottom edges
    if angle == 0.0:
        x0, y0 = round(centre[0] - (width - 1) / 2), round(centre[1] - (width - 1) / 2)
        box = dlib.rectangle(x0, y0, x0 + width - 1, y0 + width - 1)
        return np.array([[p.x, p.y] for p in predictor(pixels, box).parts()], dtype=np.float64)
    size = int(math.ceil(2.5 * side)) | 1
    ex, ey = _axes(angle)
    half = size / 2.0
    # crop pixel centre (u, v) + 0.5 -> photo continuous point; PIL takes (a, b, c, d, e, f)
    origin = centre + 0.5 - half * ex - half * ey
    data = (ex[0], ey[0], origin[0], ex[1], ey[1], origin[1])
    crop = photo.transform((size, size), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)
    lo = round(half - 0.5 - (width - 1) / 2)  # the face's centre is at pixel index half - 0.5
    shape = predictor(np.asarray(crop), dlib.rectangle(lo, lo, lo + width - 1, lo + width - 1))
    uv = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64) + 0.5
    return origin[None, :] + uv[:, :1] * ex[None, :] + uv[:, 1:] * ey[None, :] - 0.5


def _roll(landmarks: Landmarks) -> float:
    """The face's in-plane tilt (degrees, counter-clockwise) from its eye line."""
    left, right = landmarks[36:42].mean(axis=0), landmarks[42:48].mean(axis=0)
    return -math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def reading_order(faces: list[Landmarks]) -> list[Landmarks]:
    """Rows from top to bottom (a face starts a new row when its centre is lower than the row's
    first face by more than half that face's height), each row left to right."""
    def centre(lm: Landmarks) -> np.ndarray:
        return lm.mean(axis=0)

    def height(lm: Landmarks) -> float:
        return float(np.ptp(lm[:, 1]))

    rows: list[list[Landmarks]] = []
    for lm in sorted(faces, key=lambda lm: float(centre(lm)[1])):
        if rows and centre(lm)[1] - centre(rows[-1][0])[1] <= 0.5 * max(height(rows[-1][0]), 1.0):
            rows[-1].append(lm)
        else:
            rows.append([lm])
    return [lm for row in rows for lm in sorted(row, key=lambda lm: float(centre(lm)[0]))]


def detect_faces(
    image: Image.Image,
    *,
    min_face: float | None = None,
    angles: tuple[float, ...] = DETECT_ANGLES,
    min_score: float = DETECT_MIN_SCORE,
) -> list[Landmarks]:
    """Return 68 landmarks for every face in ``image``, in reading order (``reading_order``).

    The HOG detector scans a copy scaled so that the smallest face searched for (FFHQ crop
    ``min_face`` px; default at least 128 px and 4 % of the long side) just fills its window: big
    photos are scanned smaller, small ones larger. It scans once per angle of ``angles``, the copy
    turned so faces tilted by that angle stand upright; overlapping hits are merged. The landmark
    predictor runs on the full-resolution pixels, on a crop turned upright for a tilted face.
    """
    predictor = _predictor()
    rgb = image.convert("RGB")
    if min_face is None:
        min_face = max(DEFAULT_MIN_FACE, MIN_FACE_FRACTION * max(rgb.size))
    scale = min(MAX_UPSCALE, HOG_MIN_BOX * CROP_PER_BOX / max(float(min_face), 1.0))
    small_size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    small = rgb if small_size == rgb.size else rgb.resize(small_size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    sx, sy = rgb.width / small.width, rgb.height / small.height
    # dlib releases the GIL while it scans: the passes run side by side (2 cores: ~1.7x)
    with ThreadPoolExecutor(max(1, min(len(angles), os.cpu_count() or 1))) as pool:
        passes = pool.map(lambda angle: _scan(small, angle, min_score), angles)
        candidates = [c for found in passes for c in found]
    faces, pixels = [], np.asarray(rgb)
    for c in _suppress(candidates):
        centre = c.centre * [sx, sy] - 0.5  # pixel-index coordinates of the full photo
        side = c.side * (sx + sy) / 2
        landmarks = _landmarks(predictor, rgb, pixels, centre, side, c.angle)
        roll = _roll(landmarks)
        if abs(roll - c.angle) > ROLL_REFINE:
            landmarks = _landmarks(predictor, rgb, pixels, centre, side, roll)
        faces.append(landmarks)
    return reading_order(faces)


@dataclass
class FoundFaces:
    """The faces of one photo: aligned crops (in reading order), skipped detections, and how many
    the detector found in all."""

    faces: list[AlignedFace]
    skipped: list[SkippedFace]
    detected: int

    def notes(self, source: str) -> list[str]:
        """One line per skipped face, naming where it is in the photo and why."""
        lines = []
        for s in self.skipped:
            x, y = s.landmarks.mean(axis=0)
            lines.append(f"{source}: skipped a face at ({x:.0f}, {y:.0f}): {s.reason}")
        return lines

    def problem(self, source: str) -> str | None:
        """Why the photo gave no face to work on, or None when it gave some."""
        if self.faces:
            return None
        return f"no face found in {source}" if not self.detected else f"no face large enough in {source}"


def find_faces(
    image: Image.Image,
    size: int = DEFAULT_SIZE,
    *,
    max_faces: int | None = None,
    min_qsize: float = MIN_QSIZE,
    min_face: float | None = None,
    source: str | None = None,
) -> FoundFaces:
    """Detect every face of an upright RGB photo and align each as FFHQ was made, at ``size``.

    ``min_face`` under ``min_qsize`` raises ValueError: smaller faces would be found only to be
    skipped (the one rule behind ``--min-face``'s lower bound and the Python API's)."""
    if min_face is not None and min_face < min_qsize:
        raise ValueError(f"min_face {min_face:g} px is under {min_qsize:g} px, the smallest face square that is "
                         "used; smaller faces cannot be edited")
    landmarks = detect_faces(image, min_face=min_face)
    faces, skipped = align_faces(image, landmarks, size, max_faces=max_faces, min_qsize=min_qsize, source=source)
    return FoundFaces(faces, skipped, len(landmarks))
