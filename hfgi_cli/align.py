"""Find faces in ordinary photos, crop them the way FFHQ was made, and paste edited crops back.

The HFGI model only understands FFHQ-aligned crops, so every face goes through:

    detect.detect_faces(photo)     -> 68 dlib landmarks per face, in reading order
    align_face(photo, lm, size)    -> AlignedFace: the crop plus the quad it came from
    ... the model edits the crop ...
    paste_back(photo, [(edited, face), ...]) -> photo with only the face regions changed

``align_face`` is a faithful re-implementation of ``recreate_aligned_images`` from NVlabs'
ffhq-dataset (shrink, crop, reflect-pad with blurred border, QUAD transform at 4x, LANCZOS
down-sample), because a crop that differs from FFHQ's framing inverts noticeably worse.
``AlignedFace.quad`` maps the crop's corners onto photo pixels exactly, which is what paste-back
inverts. Coordinates are pixel-index coordinates: pixel (i, j) has its centre at (i, j).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .atomic import atomic_write

DEFAULT_SIZE = 1024
MIN_QSIZE = 80.0
"""Faces whose FFHQ square is smaller than this many photo pixels are skipped: the crop would be a
>3x (256 px) or >12x (1024 px) up-scale, and HFGI would invent rather than edit the face. The
square is 3.6x the eye-to-mouth distance for most faces, so this is an eye-to-mouth distance of
about 22 px."""
JSON_VERSION = 1

Landmarks = np.ndarray
"""(68, 2) float64 dlib landmarks (x, y) in photo pixel coordinates, iBUG 300-W order."""


# --------------------------------------------------------------------------- alignment


def face_quad(landmarks: Landmarks) -> tuple[np.ndarray, float]:
    """FFHQ's oriented crop square for one face: (quad (4, 2), side length ``qsize``).

    Corners are top-left, bottom-left, bottom-right, top-right of the crop (PIL QUAD order).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_left = lm[36:42].mean(axis=0)
    eye_right = lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    # x points right along the eyes, tilted by the eye-to-mouth direction; y is x turned 90 deg.
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


@dataclass
class AlignedFace:
    """One FFHQ-aligned face crop and the geometry that ties it to its photo."""

    image: Image.Image
    """The aligned crop, RGB, ``size`` x ``size``."""
    quad: np.ndarray
    """(4, 2) photo coordinates of the crop corners (0,0), (0,S), (S,S), (S,0): top-left,
    bottom-left, bottom-right, top-right. Equal to FFHQ's quad; when a huge face made FFHQ shrink
    the photo first, it includes the sub-pixel correction of that integer shrink."""
    landmarks: Landmarks
    """(68, 2) landmarks in photo coordinates."""
    source_size: tuple[int, int]
    """(width, height) of the upright photo the crop came from."""
    source: str | None = None
    """Path of the photo, for sidecars and messages."""

    @property
    def size(self) -> int:
        return self.image.width

    @property
    def qsize(self) -> float:
        """Side of the crop square in photo pixels."""
        return float(np.hypot(*(self.quad[3] - self.quad[0])))

    def crop_to_photo(self, crop_size: int | None = None) -> np.ndarray:
        """2x3 affine matrix: continuous crop coordinates (corner (0,0) .. (S,S)) -> photo pixels."""
        s = float(crop_size or self.size)
        q = self.quad
        return np.column_stack([(q[3] - q[0]) / s, (q[1] - q[0]) / s, q[0]])

    def photo_to_crop(self, points: np.ndarray, crop_size: int | None = None) -> np.ndarray:
        """Map (N, 2) photo pixel coordinates to continuous crop coordinates."""
        m = self.crop_to_photo(crop_size)
        return (np.asarray(points, dtype=np.float64) - m[:, 2]) @ np.linalg.inv(m[:, :2]).T

    def to_json(self) -> dict[str, Any]:
        """Everything but the pixels, for the ``.json`` sidecar beside a saved crop."""
        return {
            "version": JSON_VERSION,
            "source": self.source,
            "source_size": list(self.source_size),
            "size": self.size,
            "quad": np.asarray(self.quad, dtype=np.float64).tolist(),
            "quad_order": "crop corners top-left, bottom-left, bottom-right, top-right in photo pixels",
            "landmarks": np.asarray(self.landmarks, dtype=np.float64).tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], image: Image.Image) -> AlignedFace:
        """Rebuild a face from its sidecar and its (possibly edited) crop."""
        quad = np.array(data["quad"], dtype=np.float64).reshape(4, 2)
        landmarks = np.array(data["landmarks"], dtype=np.float64).reshape(68, 2)
        return cls(image.convert("RGB"), quad, landmarks, tuple(data["source_size"]), data.get("source"))


def align_face(image: Image.Image, landmarks: Landmarks, size: int = DEFAULT_SIZE) -> AlignedFace:
    """Crop one face exactly as FFHQ's ``recreate_aligned_images`` does, at ``size`` pixels.

    Steps (constants are FFHQ's): integer shrink with LANCZOS when the face is > 2x the output,
    crop with a 10 % border, reflect-pad with a blurred, median-faded border when the square
    leaves the photo, QUAD transform (BILINEAR) at 4x ``size``, LANCZOS down to ``size``.
    """
    quad, _ = face_quad(landmarks)
    return align_quad(image, quad, size, landmarks)


def align_quad(
    image: Image.Image, quad: np.ndarray, size: int = DEFAULT_SIZE, landmarks: Landmarks | None = None
) -> AlignedFace:
    """``align_face`` for a given crop square (4, 2) (e.g. one smoothed over video frames).

    ``quad`` is in ``face_quad``'s corner order; ``landmarks`` (for the paste-back mask) default to
    an empty (0, 2) array.
    """
    import scipy.ndimage

    img = image.convert("RGB")
    source_size = img.size
    quad = np.array(quad, dtype=np.float64).reshape(4, 2)
    qsize = float(np.hypot(*(quad[3] - quad[0])))
    quad_photo = quad.copy()
    if landmarks is None:
        landmarks = np.zeros((0, 2))
    transform_size = 4 * size

    # Shrink: an integer LANCZOS reduction first, so the transform never minifies heavily.
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        # PIL resize maps continuous coordinates by the exact size ratio; record the true map.
        ratio = np.array([source_size[0] / rsize[0], source_size[1] / rsize[1]])
        img = img.resize(rsize, Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink
        quad_photo = (quad + 0.5) * ratio - 0.5

    # Crop to the square plus a border (pixels beyond it never reach the transform).
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )
    crop = (
        max(crop[0] - border, 0),
        max(crop[1] - border, 0),
        min(crop[2] + border, img.size[0]),
        min(crop[3] + border, img.size[1]),
    )
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]

    # Pad: where the square leaves the photo, mirror it and fade to blur and then to the median
    # colour, so the model sees a plausible surround instead of black.
    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    pad = (
        max(-lo[0] + border, 0),
        max(-lo[1] + border, 0),
        max(hi[0] - img.size[0] + border, 0),
        max(hi[1] - img.size[1] + border, 0),
    )
    if max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = arr.shape
        yy, xx, _ = np.ogrid[:h, :w, :1]
        fade = np.maximum(
            1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
            1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]),
        )
        blur = qsize * 0.02
        blurred = scipy.ndimage.gaussian_filter(arr, [blur, blur, 0])
        arr += (blurred - arr) * np.clip(fade * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(fade, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
        quad += pad[:2]

    # Transform at 4x and reduce: the supersampling is what makes FFHQ crops alias-free.
    img = img.transform(
        (transform_size, transform_size),
        Image.Transform.QUAD,
        (quad + 0.5).flatten(),
        Image.Resampling.BILINEAR,
    )
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    return AlignedFace(img, quad_photo, np.asarray(landmarks, dtype=np.float64), source_size)


@dataclass
class SkippedFace:
    """A detected face that was not aligned, and why."""

    landmarks: Landmarks
    reason: str


def align_faces(
    image: Image.Image,
    landmarks: Sequence[Landmarks],
    size: int = DEFAULT_SIZE,
    *,
    max_faces: int | None = None,
    min_qsize: float = MIN_QSIZE,
    source: str | None = None,
) -> tuple[list[AlignedFace], list[SkippedFace]]:
    """Align every usable face, in the given order; tiny faces (and ones over ``max_faces``) are skipped.

    ``max_faces`` keeps the largest faces, because those are the ones worth editing.
    """
    usable: list[tuple[int, Landmarks]] = []
    skipped: list[SkippedFace] = []
    for i, lm in enumerate(landmarks):
        _, qsize = face_quad(lm)
        if qsize < min_qsize:
            skipped.append(SkippedFace(lm, f"face too small ({qsize:.0f} px < {min_qsize:.0f} px square)"))
        else:
            usable.append((i, lm))
    if max_faces is not None and len(usable) > max_faces:
        by_size = sorted(usable, key=lambda item: -face_quad(item[1])[1])
        for _, lm in by_size[max_faces:]:
            skipped.append(SkippedFace(lm, f"beyond --max-faces {max_faces}"))
        usable = sorted(by_size[:max_faces], key=lambda item: item[0])
    rgb = image.convert("RGB")
    workers = min(len(usable), os.cpu_count() or 1)
    if workers > 1:  # PIL's transform/resize release the GIL: faces align in parallel
        with ThreadPoolExecutor(workers) as pool:
            faces = list(pool.map(lambda item: align_face(rgb, item[1], size), usable))
    else:
        faces = [align_face(rgb, lm, size) for _, lm in usable]
    for face in faces:
        face.source = source
    return faces, skipped


# --------------------------------------------------------------------------- paste-back


def blend_mask(face: AlignedFace, size: int | None = None) -> np.ndarray:
    """Soft face mask in crop space, float32 (size, size) in [0, 1].

    The convex hull of jaw and eyebrows, raised over the forehead, is fully opaque; outside it the
    weight falls smoothly to exactly 0 over ``0.1 * size`` pixels, and it is 0 near the crop border.
    A hard square would leave visible seams; exact zeros make the untouched area byte-identical.
    """
    s = int(size or face.size)
    pts = face.photo_to_crop(face.landmarks, s)
    e2m = np.hypot(*(pts[48:55:6].mean(axis=0) - pts[36:48].mean(axis=0)))
    brows = pts[17:27] - [0.0, 0.6 * e2m]
    hull = np.concatenate([pts[0:17], pts[17:27], brows])
    feather = 0.1 * s
    return _feathered_polygon(hull, s, feather)


def _feathered_polygon(points: np.ndarray, size: int, feather: float) -> np.ndarray:
    import scipy.ndimage
    from scipy.spatial import ConvexHull

    hull = points[ConvexHull(points).vertices]
    solid = Image.new("L", (size, size), 0)
    # PIL polygon vertices are pixel indices; crop continuous coords have centres at +0.5.
    ImageDraw.Draw(solid).polygon([tuple(p) for p in (hull - 0.5)], fill=255)
    inside = np.asarray(solid) > 0
    dist = scipy.ndimage.distance_transform_edt(~inside)
    t = np.clip(1.0 - dist / feather, 0.0, 1.0)
    mask = t * t * (3.0 - 2.0 * t)  # smoothstep: no visible edge at either end of the ramp
    # Keep a clear margin to the crop border, where the crop's own resampling edge lives.
    idx = np.arange(size, dtype=np.float64) + 0.5
    edge = np.minimum(idx, size - idx) / (0.03 * size) - 1.0
    window = np.clip(edge, 0.0, 1.0)
    return (mask * window[:, None] * window[None, :]).astype(np.float32)


def _affine_into_photo(
    face: AlignedFace, crop_size: int, box: tuple[int, int, int, int]
) -> tuple[float, ...]:
    """PIL AFFINE data taking pixels of the photo box to continuous crop coordinates."""
    m = face.crop_to_photo(crop_size)
    inv = np.linalg.inv(m[:, :2])
    # PIL asks for the source point of output pixel centre (x + 0.5, y + 0.5); in photo index
    # coordinates that centre is (box_x0 + x, box_y0 + y).
    offset = inv @ (np.array([box[0] - 0.5, box[1] - 0.5]) - m[:, 2])
    return (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])


def photo_mask(face: AlignedFace, mask_size: int = 256) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The blend weights of ``face`` in photo space: (box, float32 weights of that box).

    Pixels outside the box, and pixels inside it with weight 0, are never changed by paste-back.
    """
    w, h = face.source_size
    lo = np.floor(face.quad.min(axis=0)).astype(int) - 1
    hi = np.ceil(face.quad.max(axis=0)).astype(int) + 2
    box = (max(int(lo[0]), 0), max(int(lo[1]), 0), min(int(hi[0]), w), min(int(hi[1]), h))
    if box[2] <= box[0] or box[3] <= box[1]:
        return box, np.zeros((0, 0), np.float32)
    mask = Image.fromarray(blend_mask(face, mask_size), "F")
    warped = mask.transform(
        (box[2] - box[0], box[3] - box[1]),
        Image.Transform.AFFINE,
        _affine_into_photo(face, mask_size, box),
        Image.Resampling.BILINEAR,
        fillcolor=0.0,
    )
    return box, np.clip(np.asarray(warped, dtype=np.float32), 0.0, 1.0)


def paste_back(photo: Image.Image, faces: Sequence[tuple[Image.Image, AlignedFace]]) -> Image.Image:
    """Warp each (edited) crop back through its quad onto the full-resolution photo and blend.

    Each crop is sampled bicubically at the photo's pixel centres (after a LANCZOS reduction to 2x
    the face's photo resolution when it is finer than that, to avoid aliasing) and blended with
    ``photo_mask``. Pixels with zero weight keep their exact input values; an alpha channel is
    carried over untouched. Returns a new image of the photo's size and mode.
    """
    alpha = photo.getchannel("A") if "A" in photo.getbands() else None
    out = np.asarray(photo.convert("RGB"), dtype=np.float32).copy()
    for crop, face in faces:
        if tuple(photo.size) != tuple(face.source_size):
            raise ValueError(f"face from a {face.source_size} photo pasted onto a {photo.size} one")
        box, weight = photo_mask(face)
        if weight.size == 0 or not weight.any():
            continue
        crop = crop.convert("RGB")
        s = crop.width
        target = max(int(math.ceil(2.0 * face.qsize)), 16)
        if s > target:  # more than 2x finer than the photo: reduce first, bicubic alone would alias
            crop = crop.resize((target, target), Image.Resampling.LANCZOS)
            s = target
        warped = crop.transform(
            (box[2] - box[0], box[3] - box[1]),
            Image.Transform.AFFINE,
            _affine_into_photo(face, s, box),
            Image.Resampling.BICUBIC,
        )
        region = out[box[1] : box[3], box[0] : box[2]]
        wgt = weight[..., None]
        region += (np.asarray(warped, dtype=np.float32) - region) * wgt
    result = Image.fromarray(np.uint8(np.clip(np.rint(out), 0, 255)), "RGB")
    if alpha is not None:
        result.putalpha(alpha)
    if result.mode != photo.mode:
        result = result.convert(photo.mode)
    return result


# --------------------------------------------------------------------------- sidecars


def save_aligned(face: AlignedFace, path: str | os.PathLike[str]) -> None:
    """Write the crop as PNG and its geometry as ``<same name>.json`` beside it, each atomically."""
    path = Path(path)
    atomic_write(path, lambda tmp: face.image.save(tmp, format="PNG"))
    text = json.dumps(face.to_json(), indent=1) + "\n"
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load_aligned(path: str | os.PathLike[str]) -> AlignedFace:
    """Read a crop written by ``save_aligned`` (or an edited copy of it) with its sidecar."""
    path = Path(path)
    data = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    with Image.open(path) as im:
        return AlignedFace.from_json(data, im.convert("RGB"))
