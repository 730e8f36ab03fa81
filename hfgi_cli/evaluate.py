"""``hfgi eval``: how far results are from their originals, per pair of images and per face, and
for a pair of videos, how the identity holds over time.

Images (``evaluate_pair``): PSNR, SSIM, MS-SSIM and LPIPS of the whole result against the whole
original (a result of another size is resized to the original's first); then every face found in
the original is cut from both images with the original's FFHQ square, at 256 px, and compared the
same way, plus dlib's identity distance (``quality``). A pair's ``identity_distance`` is that of
its worst face.

Videos (``evaluate_video``): the source's faces are tracked as ``hfgi video`` tracks them (so
face k is ``hfgi video``'s face k), and per person (``faces``), on the frames where it is
detected: the identity distance between the source's face and the edited frame's (both described
at the source's landmarks); STIT's TL-ID and TG-ID (Tzaban et al. 2022): the mean identity
similarity of adjacent frames (TL) or of all pairs of frames (TG) in the edited clip, divided by
the same in the source, so 1 means the edit keeps the identity as steady as the source had it
(below 1: it drifts or flickers). STIT uses ArcFace's cosine similarity; on dlib descriptors,
compared by distance, similarity here is 1 - distance. Flicker is the mean absolute change of the
face region (the FFHQ square's bounding box) between consecutive frames, 0-255, for the edited
clip and the source; the edit adds the difference. For the clip as a whole: the identity distance
over every face on every frame (mean, max), the worst person's TL-ID and TG-ID, and the flicker of
the person who flickers most.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import quality as q
from .inputs import InputItem, collect_inputs

VIDEO_EXTS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})
FACE_SIZE = q.QUALITY_SIZE
_NOT_A_RESULT = re.compile(r"(?:^|_)(?:\d+|preview|sweep-.*)$")
"""Files beside our outputs that are not whole results: face crops (``_<k>``, ``_smile+2_<k>``),
previews and sweep grids."""

METRICS = ("psnr", "ssim", "ms_ssim", "identity_distance", "lpips")


# ----------------------------------------------------------------------------- matching
@dataclass
class Pairs:
    pairs: list[tuple[Path, Path]]
    problems: list[str] = field(default_factory=list)


def is_video_pair(original: Path, result: Path) -> bool:
    """A pair of videos (by either file's extension), scored by ``evaluate_video``."""
    return original.suffix.lower() in VIDEO_EXTS or result.suffix.lower() in VIDEO_EXTS


def match_pairs(originals: list[str], results: list[str]) -> Pairs:
    """Pair each result with its original by name, as our outputs are named: ``photo.jpg`` <-
    ``photo.jpg`` (invert), ``photo_smile+2.jpg`` (edit), ``photo.png`` (an aligned crop), in the
    same sub-folder; the longest matching name wins. Two files are one pair whatever their names."""
    if len(originals) == 1 and len(results) == 1 and Path(originals[0]).is_file() and Path(results[0]).is_file():
        return Pairs([(Path(originals[0]), Path(results[0]))])
    orig_items, problems = collect_inputs(originals, latents=False)
    result_items, result_problems = collect_inputs(results, latents=False)
    by_folder: dict[Path, list[InputItem]] = {}
    for item in orig_items:
        by_folder.setdefault(item.rel.parent, []).append(item)
    pairs = []
    for item in result_items:
        candidates = [o for o in by_folder.get(item.rel.parent, [])
                      if item.rel.name == o.rel.name or item.rel.name.startswith(o.rel.name + "_")]
        if not candidates:
            if not _NOT_A_RESULT.search(item.rel.name):
                problems.append(f"{item.path}: no original named like it (NAME.ext or NAME_<edit>.ext)")
            continue
        best = max(candidates, key=lambda o: len(o.rel.name))
        rest = item.rel.name[len(best.rel.name):]
        if rest and _NOT_A_RESULT.search(rest):
            continue  # a face crop or a preview of that original
        pairs.append((best.path, item.path))
    return Pairs(pairs, [str(p) for p in problems + result_problems])


# ----------------------------------------------------------------------------- images
def _read_rgb(path: Path) -> Image.Image:
    from .images import load_picture

    return load_picture(path, str(path)).image.convert("RGB")


def _scores(a: np.ndarray, b: np.ndarray, lpips: q.Lpips | None) -> dict[str, float | None]:
    return {"psnr": q.psnr(a, b), "ssim": q.ssim(a, b), "ms_ssim": q.ms_ssim(a, b),
            "lpips": lpips(a, b) if lpips is not None else None}


def _face_crops(original: Image.Image, result: Image.Image, aligned: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """The faces of the original, cut from both images at 256 px with the original's FFHQ square
    (``aligned``: each image is one aligned face)."""
    from .align import align_quad
    from .detect import find_faces

    if aligned:
        return [(q.at_quality_size(original), q.at_quality_size(result))]
    crops = []
    for face in find_faces(original, FACE_SIZE).faces:
        other = align_quad(result, face.quad, FACE_SIZE, face.landmarks)
        crops.append((np.asarray(face.image), np.asarray(other.image)))
    return crops


def evaluate_pair(original: Path, result: Path, lpips: q.Lpips | None = None, aligned: bool = False) -> dict[str, Any]:
    """Scores of one pair (see the module docstring); raises InputError for an unreadable image.
    ``aligned``: both are aligned face crops (no detection)."""
    a_img, b_img = _read_rgb(original), _read_rgb(result)
    notes = []
    if b_img.size != a_img.size:
        notes.append(f"{result}: {b_img.width}x{b_img.height}, resized to the original's {a_img.width}x{a_img.height}")
        b_img = b_img.resize(a_img.size, Image.Resampling.LANCZOS)
    a, b = np.asarray(a_img), np.asarray(b_img)
    faces = []
    for k, (fa, fb) in enumerate(_face_crops(a_img, b_img, aligned)):
        faces.append({"face": k, **_scores(fa, fb, lpips),
                      "identity_distance": q.identity_distance(fa, fb, q.crop_landmarks(fa))})
    if not faces:
        notes.append(f"{original}: no face found, so no identity distance")
    return {"original": str(original), "result": str(result), "kind": "image", **_scores(a, b, lpips),
            "identity_distance": max((f["identity_distance"] for f in faces), default=None),
            "faces": faces, "notes": notes}


# ----------------------------------------------------------------------------- videos
def _face_box(landmarks: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, slice]:
    from .align import face_quad

    quad, _ = face_quad(landmarks)
    x0, y0 = np.clip(np.floor(quad.min(axis=0)).astype(int), 0, None)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int) + 1
    return slice(y0, min(y1, shape[0])), slice(x0, min(x1, shape[1]))


def _frame_pairs(source: Path, edited: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    from .video.ffmpeg import VideoError, iter_frames, open_source

    src, out = open_source(source), open_source(edited)
    if src.size != out.size:
        raise VideoError(f"{edited}: {out.size[0]}x{out.size[1]}, the source {source} is {src.size[0]}x{src.size[1]}")
    a_frames, b_frames = iter_frames(src), iter_frames(out)
    for a, b in itertools.zip_longest(a_frames, b_frames):
        if a is None or b is None:
            shorter = source if a is None else edited
            raise VideoError(f"{shorter}: fewer frames than the other clip")
        yield a, b


def _similarity_ratio(edited: list[np.ndarray | None], source: list[np.ndarray | None],
                      pairs: Iterator[tuple[int, int]]) -> float | None:
    """mean(1 - |E_i - E_j|) / mean(1 - |S_i - S_j|) over the pairs where both frames have a face."""
    se, ss = [], []
    for i, j in pairs:
        ei, ej, si, sj = edited[i], edited[j], source[i], source[j]
        if ei is None or ej is None or si is None or sj is None:
            continue
        se.append(1.0 - float(np.linalg.norm(ei - ej)))
        ss.append(1.0 - float(np.linalg.norm(si - sj)))
    if not ss or np.mean(ss) <= 0:
        return None
    return float(np.mean(se) / np.mean(ss))


def _track_scores(track: int, frames: list[tuple[int, np.ndarray, np.ndarray]], n: int,
                  flicker: list[float], src_flicker: list[float]) -> dict[str, Any]:
    """One person's scores from (frame, source descriptor, edited descriptor) of its frames."""
    src_desc: list[np.ndarray | None] = [None] * n
    out_desc: list[np.ndarray | None] = [None] * n
    for t, da, db in frames:
        src_desc[t], out_desc[t] = da, db
    distances = [float(np.linalg.norm(da - db)) for _, da, db in frames]
    seen = [t for t, _, _ in frames]
    return {
        "face": track, "frames": len(frames), "first": min(seen), "last": max(seen),
        "identity_distance": float(np.mean(distances)), "identity_distance_max": max(distances),
        "tl_id": _similarity_ratio(out_desc, src_desc, ((t, t + 1) for t in range(n - 1))),
        "tg_id": _similarity_ratio(out_desc, src_desc, itertools.combinations(seen, 2)),
        "flicker": float(np.mean(flicker)) if flicker else None,
        "source_flicker": float(np.mean(src_flicker)) if src_flicker else None,
    }


def evaluate_video(source: Path, edited: Path, on_frame: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Per-frame identity distance, TL-ID, TG-ID and flicker, per person (the source's faces
    tracked as ``hfgi video`` tracks them, ``faces``) and for the clip (see the module docstring);
    raises VideoError when the clips differ in size or length."""
    from .video.tracking import Tracker, vector_landmarks

    edited_frames: dict[int, np.ndarray] = {}
    psnrs: list[float] = []

    def sources() -> Iterator[np.ndarray]:
        for t, (a, b) in enumerate(_frame_pairs(source, edited)):
            edited_frames[t] = b
            psnrs.append(q.psnr(a, b))
            yield a

    per_track: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    flicker: dict[int, tuple[list[float], list[float]]] = {}
    previous: tuple[np.ndarray, np.ndarray] | None = None
    per_frame = []
    n = 0
    for t, a, faces in Tracker().run(sources()):
        b = edited_frames.pop(t)
        distances = {}
        for face in faces:
            if face.raw is None:  # filled from neighbours: no landmarks of this frame to describe it at
                continue
            landmarks = vector_landmarks(face.raw)
            da, db = q.descriptor(a, landmarks), q.descriptor(b, landmarks)
            per_track.setdefault(face.track, []).append((t, da, db))
            distances[face.track] = float(np.linalg.norm(da - db))
            if previous is not None:
                box = _face_box(landmarks, a.shape)
                pa, pb = previous
                fl = flicker.setdefault(face.track, ([], []))
                fl[0].append(float(np.abs(b[box].astype(np.int16) - pb[box]).mean()))
                fl[1].append(float(np.abs(a[box].astype(np.int16) - pa[box]).mean()))
        per_frame.append({"frame": t, "identity_distance": max(distances.values()) if distances else None,
                          "faces": distances})
        previous = (a, b)
        n = t + 1
        if on_frame is not None:
            on_frame(n)
    tracks = [_track_scores(k, rows, n, *flicker.get(k, ([], []))) for k, rows in sorted(per_track.items())]
    distances = [float(np.linalg.norm(da - db)) for rows in per_track.values() for _, da, db in rows]
    differing = [p for p in psnrs if np.isfinite(p)]  # identical frames have an infinite PSNR
    worst_flicker = max((f for f in tracks if f["flicker"] is not None), key=lambda f: f["flicker"], default=None)

    def worst(key: str) -> float | None:
        values = [f[key] for f in tracks if f[key] is not None]
        return min(values) if values else None

    return {
        "original": str(source), "result": str(edited), "kind": "video", "frames": n,
        "psnr": float(np.mean(differing)) if differing else (float("inf") if n else None),
        "ssim": None, "ms_ssim": None, "lpips": None,
        "identity_distance": float(np.mean(distances)) if distances else None,
        "identity_distance_max": max(distances) if distances else None,
        "tl_id": worst("tl_id"), "tg_id": worst("tg_id"),
        "flicker": worst_flicker["flicker"] if worst_flicker else None,
        "source_flicker": worst_flicker["source_flicker"] if worst_flicker else None,
        "faces": tracks,
        "per_frame": per_frame,
        "notes": [] if distances else [f"{source}: no face found in any frame"],
    }


# ----------------------------------------------------------------------------- one entry point
def evaluate(original: Path, result: Path, lpips: q.Lpips | None = None, aligned: bool = False) -> dict[str, Any]:
    """A pair of images or of videos (by the result's extension); errors name the file."""
    if is_video_pair(original, result):
        return evaluate_video(original, result)
    return evaluate_pair(original, result, lpips, aligned)


def json_record(scores: dict[str, Any]) -> dict[str, Any]:
    """``scores`` for --json: rounded, and null for what could not be computed or is infinite
    (the PSNR of identical images)."""
    def clean(value: Any) -> Any:
        if isinstance(value, float):
            return q.json_number(value, 4)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(scores)


def failed_record(original: Path, result: Path, message: str) -> dict[str, Any]:
    return {"original": str(original), "result": str(result), **dict.fromkeys(METRICS), "error": message}

