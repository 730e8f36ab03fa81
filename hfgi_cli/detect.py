"""Face detection: dlib's HOG detector and its 68-point landmark predictor, and ``find_faces``,
the photo -> aligned face crops step that the engine and ``hfgi align`` share.

The predictor file ships in the PyPI package ``face-recognition-models``; dlib itself comes from
``dlib-bin`` (a prebuilt wheel). Both are loaded once per process, at first use.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .align import DEFAULT_SIZE, MIN_QSIZE, AlignedFace, Landmarks, SkippedFace, align_faces

DETECT_MAX_SIDE = 1024
"""Detection runs on a copy whose long side is at most this, so that big photos stay fast."""
DETECT_MIN_SCORE = 0.5
"""dlib HOG score below which a detection is dropped; real faces score > 1 in our samples while
weak hits (the mission patch in the astronaut photo, at 0.12) are rejected."""


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


@functools.lru_cache(maxsize=1)
def _dlib_models() -> tuple[Any, Any]:
    """Load detector and predictor once per process (the predictor takes ~0.7 s to read)."""
    import dlib  # heavy import, only needed when faces are actually searched

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(_shape_predictor_path()))


def detect_faces(
    image: Image.Image,
    *,
    max_side: int = DETECT_MAX_SIDE,
    upsample: int = 1,
    min_score: float = DETECT_MIN_SCORE,
) -> list[Landmarks]:
    """Return 68 landmarks for every face in ``image``, ordered left to right.

    The HOG detector runs on a copy down-scaled to ``max_side`` (its cost grows with the pixel
    count, its accuracy does not need more); the boxes are scaled back and the landmark
    predictor runs on the full-resolution pixels, so landmarks keep full precision.
    """
    import dlib

    detector, predictor = _dlib_models()
    rgb = image.convert("RGB")
    full = np.asarray(rgb)
    scale = min(1.0, max_side / max(rgb.size))
    if scale < 1.0:
        small_size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        small = np.asarray(rgb.resize(small_size, Image.Resampling.BILINEAR, reducing_gap=2.0))
        sx, sy = rgb.width / small_size[0], rgb.height / small_size[1]
    else:
        small, sx, sy = full, 1.0, 1.0
    boxes, scores, _ = detector.run(small, upsample, 0.0)
    faces = []
    for box, score in zip(boxes, scores):
        if score < min_score:
            continue
        full_box = dlib.rectangle(
            round(box.left() * sx), round(box.top() * sy), round(box.right() * sx), round(box.bottom() * sy)
        )
        shape = predictor(full, full_box)
        faces.append(np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64))
    faces.sort(key=lambda lm: (float(lm[:, 0].mean()), float(lm[:, 1].mean())))
    return faces


@dataclass
class FoundFaces:
    """The faces of one photo: aligned crops (left to right), skipped detections, and how many
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
    source: str | None = None,
) -> FoundFaces:
    """Detect every face of an upright RGB photo and align each as FFHQ was made, at ``size``."""
    landmarks = detect_faces(image)
    faces, skipped = align_faces(image, landmarks, size, max_faces=max_faces, min_qsize=min_qsize, source=source)
    return FoundFaces(faces, skipped, len(landmarks))
