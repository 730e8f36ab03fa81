"""Face detection: dlib's HOG detector, its CNN (MMOD) face detector and 68-point landmark
predictor, and ``find_faces``, the photo -> aligned face crops step that the engine and ``hfgi
align`` share.

``detector="hog"`` (the default): HOG scans a grey copy of the photo; a hit scoring
``DETECT_MIN_SCORE`` or more is a face, a weaker one (``CONFIRM_MIN_SCORE`` up to that: a face under
a cap, behind a hand, in side light, but also a patch of texture) is shown to the CNN on a small
upright crop around it and kept when the CNN finds a face there (a weak hit that is not a face
hides none of the hits near it: ``_faces_among``). Weaker hits still (``RESCUE_MIN_SCORE`` up:
faces in deep shade, under a hat's shadow, and ~10 patches of texture a photo) are kept when the
CNN is surer (``RESCUE_CNN_CONFIDENCE``) on their crop or on that crop with the light evened out.
The CNN is dlib's network run by PyTorch (``models/mmod.py``: ~7 ms a crop on a 2-core CPU, where
dlib's own code takes ~150 ms).
``detector="cnn"``: the CNN scans the whole photo (see README for its cost).

The model files ship in the PyPI package ``face-recognition-models``; dlib itself comes from
``dlib-bin`` (a prebuilt wheel). They are loaded at first use; the CNN's first use imports torch.
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
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

from .align import DEFAULT_SIZE, MIN_QSIZE, AlignedFace, Landmarks, SkippedFace, align_faces

if TYPE_CHECKING:
    from .models.mmod import MMODDetector

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
"""dlib HOG score from which a hit is a face without confirmation (clean faces score > 1 in our
samples; faces under caps, in side light or turned score 0-0.5, like the mission patch in the
astronaut photo at 0.12 on a colour scan, -0.02 on the grey one scanned now). The thresholds here
were chosen on colour scans; on grey the hard-face benchmark found as many faces or more with
them (README)."""
CONFIRM_MIN_SCORE = 0.0
"""HOG hits from this score up to ``DETECT_MIN_SCORE`` are confirmed by the CNN. On the shared faces
under caps, hats and side light (tests/face_photos.py), a face that scores below 0 scores below
-0.5 too: a lower floor finds no more of them and sends more texture to the CNN."""
RESCUE_MIN_SCORE = -0.5
"""HOG hits from this score up to ``CONFIRM_MIN_SCORE`` are faces when the CNN finds one on their
crop with more than ``RESCUE_CNN_CONFIDENCE`` (on the plain crop or, failing that, on the crop with
the light evened out: a face in deep side light can be too dark for it). Faces in side light or
under a hat's shadow score -0.5-0 on the scan copy (every face rescued in
benchmarks/bench_detect.py --conditions scored -0.35 or more; a floor of -0.7 found no more), like
~10 texture hits a photo."""
RESCUE_CNN_CONFIDENCE = 0.3
"""The CNN confidence a hit under ``CONFIRM_MIN_SCORE`` needs (other weak hits: above 0). On the
benchmark's photos (seed 0, 638 such hits), 76 of the 88 hits on faces scored over it on the plain
crop, 79 on either; of 550 texture hits 546 scored 0 or under (median -1.47)."""
CONFIRM_BOX = 96.0
"""The CNN confirms a weak hit on a crop scaled so that the HOG box is this many pixels (its
smallest face is ~80 px) and turned upright, ``CONFIRM_CROP`` times the box wide."""
CONFIRM_CROP = 2.0
CNN_BOX_RATIO = 0.94
"""CNN box side / HOG box side, and the CNN box centre's offset (fraction of the side, downwards)
from the HOG box's: measured on the 12 shared faces (0.76-1.10 and -0.21-0.02), so that the
landmark predictor, trained on HOG boxes, gets a box like HOG's from a CNN detection."""
CNN_BOX_DROP = 0.08
DETECTORS = ("hog", "cnn")
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


def _model_path(name: str) -> Path:
    """A model file shipped by PyPI ``face-recognition-models``.

    Its ``__init__`` imports ``pkg_resources`` (gone from new setuptools), so find the folder
    without importing the package.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the face-recognition-models package is not installed (pip install it)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise RuntimeError(f"face-recognition-models has no models/{name}")


def _shape_predictor_path() -> Path:
    return _model_path("shape_predictor_68_face_landmarks.dat")


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


@functools.lru_cache(maxsize=1)
def _cnn_detector() -> MMODDetector:
    """dlib's CNN (MMOD) face detector run by PyTorch (``models/mmod.py``: dlib's detections,
    ~25x faster), once per process: it keeps nothing between calls, so threads share it."""
    from .models.mmod import MMODDetector  # imports torch: only when a weak hit is checked

    return MMODDetector.from_file(_model_path("mmod_human_face_detector.dat"))


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
    candidates with scores from ``min_score`` in ``image``'s coordinates."""
    rotated = image.rotate(-angle, Image.Resampling.BILINEAR) if angle else image
    with _detector() as detector:
        boxes, scores, _ = detector.run(np.asarray(rotated), 0, min(0.0, min_score))
    ex, ey = _axes(angle)
    centre_in, centre_out = np.array(image.size) / 2.0, np.array(rotated.size) / 2.0
    found = []
    for box, score in zip(boxes, scores):
        if score < min_score:
            continue
        d = np.array([(box.left() + box.right()) / 2.0 + 0.5, (box.top() + box.bottom()) / 2.0 + 0.5]) - centre_out
        found.append(_Candidate(centre_in + d[0] * ex + d[1] * ey, float(box.width()), angle, float(score)))
    return found


def _upright_crop(image: Image.Image, c: _Candidate) -> Image.Image:
    """The square around candidate ``c`` (``CONFIRM_CROP`` x its box), turned so the face stands
    upright and scaled so its box is ``CONFIRM_BOX`` px: resized with a proper filter first (a big
    face is scaled down several times), then turned."""
    scale = CONFIRM_BOX / c.side
    size = int(round(CONFIRM_CROP * CONFIRM_BOX))
    half = 0.75 * CONFIRM_CROP * c.side  # covers the turned square (sqrt(2)/2 < 0.75)
    left, top = c.centre - half
    region = image.crop((round(left), round(top), round(left + 2 * half), round(top + 2 * half)))
    region = region.resize((max(1, round(region.width * scale)), max(1, round(region.height * scale))),
                           Image.Resampling.BILINEAR, reducing_gap=2.0)
    if c.angle:
        region = region.rotate(-c.angle, Image.Resampling.BILINEAR)
    off = (region.width - size) // 2, (region.height - size) // 2
    return region.crop((off[0], off[1], off[0] + size, off[1] + size))


def _evened(crop: Image.Image, sigma: float) -> np.ndarray:
    """``crop`` with its light evened out: each pixel divided by the Gaussian-weighted mean
    brightness around it (``sigma`` px), so a shaded half of a face has the lit half's contrast."""
    rgb = np.asarray(crop, dtype=np.float32)
    mean = np.asarray(crop.convert("L").filter(ImageFilter.GaussianBlur(sigma)), dtype=np.float32)
    return np.clip(rgb * (110.0 / (mean + 8.0))[..., None], 0, 255).astype(np.uint8)


CNN_BATCH = 4
"""Crops per CNN call: 6.7 ms a 192 px crop in fours, 8.9 ms in batches of 32 (whose layers outgrow
the caches), 6.9 ms one by one (2-core Xeon)."""
EVEN_MIN_CONFIDENCE = -1.0
"""A hit under ``CONFIRM_MIN_SCORE`` whose plain crop the CNN rejects is looked at again with the
light evened out only when the CNN's best score at the crop's middle was over this: the faces that
needed the second look scored -0.25 to 0.3 on the first; 13 of 559 rejected texture hits scored
over -1.0 (benchmarks/bench_detect.py --conditions, seed 0), so ~2 % of them get a second look."""


def _cnn_best(crops: list[np.ndarray], floor: float) -> list[float]:
    """The CNN's best confidence over ``floor`` for a face at the middle of each crop (the centre
    of its box within half a ``CONFIRM_BOX`` of the crop's; -inf when none), in batches."""
    cnn = _cnn_detector()
    best = []
    for start in range(0, len(crops), CNN_BATCH):
        batch = crops[start:start + CNN_BATCH]
        for crop, detections in zip(batch, cnn(batch, floor)):
            middle = crop.shape[1] / 2.0
            best.append(max((
                d.confidence for d in detections
                if np.hypot((d.left + d.right) / 2.0 + 0.5 - middle, (d.top + d.bottom) / 2.0 + 0.5 - middle)
                < 0.5 * CONFIRM_BOX), default=-math.inf))
    return best


def _checked(image: Image.Image, hits: list[_Candidate], confirm_score: float) -> dict[int, bool]:
    """Whether the CNN finds a face on each weak hit's upright crop (by ``id``). A hit
    from ``confirm_score`` up needs a confidence over 0; a weaker one over
    ``RESCUE_CNN_CONFIDENCE``, on its crop or, when that came close (``EVEN_MIN_CONFIDENCE``), on
    the crop with the light evened out (a face in deep side light can be too dark for the CNN)."""
    crops = [_upright_crop(image, c) for c in hits]
    need = [0.0 if c.score >= confirm_score else RESCUE_CNN_CONFIDENCE for c in hits]
    best = _cnn_best([np.asarray(crop) for crop in crops], EVEN_MIN_CONFIDENCE)
    found = [b > n for b, n in zip(best, need)]
    again = [i for i, c in enumerate(hits)
             if not found[i] and c.score < confirm_score and best[i] > EVEN_MIN_CONFIDENCE]
    evened = [_evened(crops[i], CONFIRM_BOX / 3) for i in again]
    for i, b in zip(again, _cnn_best(evened, RESCUE_CNN_CONFIDENCE)):
        found[i] = b > RESCUE_CNN_CONFIDENCE
    return {id(c): ok for c, ok in zip(hits, found)}


def _cnn_scan(image: Image.Image) -> list[_Candidate]:
    """One CNN pass over ``image`` (upright; the CNN finds faces tilted by up to ~30 degrees), its
    boxes turned into HOG-like ones (``CNN_BOX_RATIO``)."""
    found = []
    for d in _cnn_detector()(np.asarray(image))[0]:
        side = d.width / CNN_BOX_RATIO
        middle = ((d.left + d.right) / 2.0 + 0.5, (d.top + d.bottom) / 2.0 + 0.5)
        centre = np.array([middle[0], middle[1] + CNN_BOX_DROP * side])
        found.append(_Candidate(centre, side, 0.0, float(d.confidence)))
    return found


def _same_face(a: _Candidate, b: _Candidate) -> bool:
    """Whether two detections (of passes at different angles, or of a pass and a face already
    taken) are of one face: centres within half the larger box."""
    return bool(np.hypot(*(a.centre - b.centre)) <= 0.5 * max(a.side, b.side))


def _suppress(candidates: list[_Candidate]) -> list[_Candidate]:
    """One candidate per face (the best scoring) among the passes' overlapping detections."""
    kept: list[_Candidate] = []
    for c in sorted(candidates, key=lambda c: -c.score):
        if not any(_same_face(c, k) for k in kept):
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
    confirm_score: float = CONFIRM_MIN_SCORE,
    rescue_score: float = RESCUE_MIN_SCORE,
    detector: str = "hog",
) -> list[Landmarks]:
    """Return 68 landmarks for every face in ``image``, in reading order (``reading_order``).

    The detector scans a copy scaled so that the smallest face searched for (FFHQ crop
    ``min_face`` px; default at least 128 px and 4 % of the long side) just fills its window: big
    photos are scanned smaller, small ones larger. ``detector="hog"``: HOG scans once per angle of
    ``angles``, the copy turned so faces tilted by that angle stand upright; overlapping hits are
    merged. Hits scoring ``min_score`` are faces; those from ``confirm_score`` up are faces when the
    CNN finds one on a crop around them (``confirm_score >= min_score``: HOG alone); those from
    ``rescue_score`` up are shown to the CNN when HOG finds a face on their evened-out crop
    (``rescue_score >= confirm_score``: none).
    ``detector="cnn"``: one upright CNN pass instead (slow: see the module docstring). The landmark
    predictor runs on the full-resolution pixels, on a crop turned upright for a tilted face.
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, not {detector!r}")
    predictor = _predictor()
    rgb = image.convert("RGB")
    if min_face is None:
        min_face = max(DEFAULT_MIN_FACE, MIN_FACE_FRACTION * max(rgb.size))
    scale = min(MAX_UPSCALE, HOG_MIN_BOX * CROP_PER_BOX / max(float(min_face), 1.0))
    small_size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    small = rgb if small_size == rgb.size else rgb.resize(small_size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    sx, sy = rgb.width / small.width, rgb.height / small.height
    if detector == "cnn":
        kept = _suppress(_cnn_scan(small))
    else:
        kept = _hog_faces(small, angles, min_score, confirm_score, rescue_score)
    faces, pixels = [], np.asarray(rgb)
    for c in kept:
        centre = c.centre * [sx, sy] - 0.5  # pixel-index coordinates of the full photo
        side = c.side * (sx + sy) / 2
        landmarks = _landmarks(predictor, rgb, pixels, centre, side, c.angle)
        roll = _roll(landmarks)
        if abs(roll - c.angle) > ROLL_REFINE:
            landmarks = _landmarks(predictor, rgb, pixels, centre, side, roll)
        faces.append(landmarks)
    return reading_order(faces)


def _faces_among(hits: list[_Candidate], min_score: float, checks: dict[int, bool]) -> list[_Candidate]:
    """The faces among ``hits``, best score first, one per face: a strong hit (``min_score`` up) is
    one, a weak hit is one when its check (``checks``, by ``id``: every weak hit not near a face
    taken must have one) found it so, and a hit near a face already taken is not. A weak hit whose
    check failed takes nothing from the hits near it (a face lit from one side can give a slightly
    better-scoring hit off its centre in one pass, which fails, and a well-placed one in another)."""
    faces: list[_Candidate] = []
    for c in sorted(hits, key=lambda c: -c.score):
        if any(_same_face(c, f) for f in faces):
            continue
        if c.score >= min_score or checks[id(c)]:
            faces.append(c)
    return faces


def _hog_faces(small: Image.Image, angles: tuple[float, ...], min_score: float,
               confirm_score: float, rescue_score: float) -> list[_Candidate]:
    """HOG's passes over the scan copy; strong hits, and weak ones the CNN confirms, as
    ``_faces_among`` picks them.

    dlib's HOG scan releases the GIL, so the passes run side by side in a pool (2 cores: ~1.7x).
    The CNN then looks at every weak hit that is not by a strong face, in batches, once the passes
    are done (PyTorch's two threads and a HOG pass on the same 2 cores slow each other: a batch of
    looks beside a pass took 4x as long). Every check is a function of its hit alone, so the faces
    are those of checking the merged hits in turn."""
    floor = min_score if confirm_score >= min_score else min(confirm_score, rescue_score)
    # HOG scans a grey copy: dlib's HOG takes the strongest channel's gradient on RGB, on grey the
    # one gradient is ~30 % faster to compute (and a turned copy a third of the bytes to turn); it
    # found as many of benchmarks/bench_detect.py's hard faces or more, no false one (see README)
    grey = small.convert("L")
    workers = max(1, min(len(angles), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        hits = [c for found in pool.map(lambda angle: _scan(grey, angle, floor), angles) for c in found]
    strong = _faces_among([c for c in hits if c.score >= min_score], min_score, {})
    weak = [c for c in hits if c.score < min_score and not any(_same_face(c, f) for f in strong)]
    return _faces_among(hits, min_score, _checked(small, weak, confirm_score) if weak else {})


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
    detector: str = "hog",
) -> FoundFaces:
    """Detect every face of an upright RGB photo and align each as FFHQ was made, at ``size``
    (``detector``: see ``detect_faces``).

    ``min_face`` under ``min_qsize`` raises ValueError: smaller faces would be found only to be
    skipped (the one rule behind ``--min-face``'s lower bound and the Python API's)."""
    if min_face is not None and min_face < min_qsize:
        raise ValueError(f"min_face {min_face:g} px is under {min_qsize:g} px, the smallest face square that is "
                         "used; smaller faces cannot be edited")
    landmarks = detect_faces(image, min_face=min_face, detector=detector)
    faces, skipped = align_faces(image, landmarks, size, max_faces=max_faces, min_qsize=min_qsize, source=source)
    return FoundFaces(faces, skipped, len(landmarks))
