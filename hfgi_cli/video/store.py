"""What a first run of ``hfgi video`` keeps for re-runs: ``OUT.pt`` and ``OUT.distortion.npy``.

``OUT.distortion.npy`` holds the distortion map of every edited face on every frame (float16,
3x256x256 = 384 KB a face a frame), streamed to disk as faces are encoded; ``np.load(...,
mmap_mode="r")`` reads it, and a re-run reads one row at a time (``NpyRows``), so neither grows in
memory with the clip's length. ``OUT.pt`` (``hfgi-video/2``, written at the end) holds the source
path, frame rate, size, frame count, checkpoint name and precision, and ``tracks``: per person (track id, in
order of appearance) its frame span and, for each frame where it is edited or could be
(``frame``): the smoothed and the raw crop squares (raw: NaN where not detected), smoothed
landmarks, detected, segment (a shot cut starts a new one), and, when the run edited the track
(``inverted``), W+ before editing and the row of its distortion map (with --quality:
``quality_identity_distance``, ``quality_psnr``, ``quality_ssim``, NaN where not measured). Its W+
tables are the one thing that grows with the clip's length (n_latent x 512 float32 = 36 KB a face
a frame for the published model). Giving ``OUT.pt`` as the input re-runs any edit of any of its
inverted tracks from these codes. A ``hfgi-video/1`` file (one face) reads as one track.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import temp_beside
from ..quality import FaceQuality
from ..reasons import short_reason
from .ffmpeg import VideoError, VideoSource
from .tracking import N_LANDMARKS, TrackInfo

VIDEO_FORMAT = "hfgi-video/2"
VIDEO_FORMAT_V1 = "hfgi-video/1"
_NPY_HEADER = 128


class NpyAppender:
    """An append-only ``.npy`` file of equal rows; the header (fixed 128 bytes) is completed at close."""

    def __init__(self, path: Path, row_shape: tuple[int, ...], dtype: Any = np.float16) -> None:
        self.path, self.row_shape, self.dtype = path, row_shape, np.dtype(dtype)
        self.rows = 0
        self._f = open(path, "wb")  # noqa: SIM115 (closed in close())
        self._f.write(b"\0" * _NPY_HEADER)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype).reshape(-1, *self.row_shape)
        self._f.write(rows.tobytes())
        self.rows += rows.shape[0]

    def close(self) -> None:
        if self._f.closed:
            return
        desc = {"descr": self.dtype.str, "fortran_order": False, "shape": (self.rows, *self.row_shape)}
        text = repr(desc).encode("latin1")
        body = text + b" " * (_NPY_HEADER - 10 - len(text) - 1) + b"\n"
        self._f.seek(0)
        self._f.write(b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body)
        self._f.close()


class NpyRows:
    """Read single rows of a ``.npy`` file without mapping or loading the whole of it."""

    def __init__(self, path: Path) -> None:
        try:
            self._f = open(path, "rb")  # noqa: SIM115 (closed in close())
        except OSError as exc:
            raise VideoError(f"{path}: cannot read the distortion maps ({exc.strerror})") from None
        try:
            if np.lib.format.read_magic(self._f) != (1, 0):
                raise ValueError("unsupported .npy version")
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(self._f)
        except ValueError as exc:
            self._f.close()
            raise VideoError(f"{path}: not a distortion file ({exc})") from None
        self.shape, self.dtype, self.offset = shape, dtype, self._f.tell()
        self.row_bytes = int(np.prod(shape[1:])) * dtype.itemsize

    def __getitem__(self, row: int) -> np.ndarray:
        if not 0 <= row < self.shape[0]:
            raise VideoError(f"distortion row {row} out of range ({self.shape[0]} rows)")
        self._f.seek(self.offset + row * self.row_bytes)
        return np.frombuffer(self._f.read(self.row_bytes), self.dtype).reshape(self.shape[1:])

    def close(self) -> None:
        self._f.close()


@dataclass
class FaceRecord:
    """One track on one frame: its line in ``OUT.pt``."""

    track: int
    frame: int
    detected: bool
    segment: int
    quad: np.ndarray  # (4, 2) smoothed crop square
    raw_quad: np.ndarray  # (4, 2) the square of this frame's own detection, NaN without one
    landmarks: np.ndarray  # (68, 2) smoothed
    latent: torch.Tensor | None = None
    distortion_row: int = -1
    quality: FaceQuality | None = None  # with --quality: the inversion against the tracked crop


class VideoStore:
    """Collects the records of a first run; ``commit`` renames both files into place."""

    def __init__(self, stack: contextlib.ExitStack, output: Path, n_latent: int, style_dim: int) -> None:
        self.pt_path = output.with_suffix(".pt")
        self.npy_path = output.with_suffix(".distortion.npy")
        self.n_latent, self.style_dim = n_latent, style_dim
        self.npy_tmp = stack.enter_context(temp_beside(self.npy_path))
        self.pt_tmp = stack.enter_context(temp_beside(self.pt_path))
        self.npy = NpyAppender(self.npy_tmp, (3, 256, 256))
        stack.callback(self.npy.close)
        self.records: dict[int, list[FaceRecord]] = {}
        self.n_frames = 0

    def add(self, record: FaceRecord) -> None:
        self.records.setdefault(record.track, []).append(record)

    def add_codes(self, record: FaceRecord, latent: torch.Tensor, distortion16: np.ndarray) -> None:
        """W+ (before any smoothing) and the float16 distortion map of one face on one frame."""
        record.latent, record.distortion_row = latent, self.npy.rows
        self.npy.append(distortion16)

    def commit(self, src: VideoSource, checkpoint: str, smooth_window: int, edit: dict[str, Any],
               tracks: list[TrackInfo], inverted: set[int], precision: str | None = None) -> None:
        """Write OUT.pt, then rename the distortion maps and the codes into place (before the video,
        so an existing OUT.mp4 always has its latents)."""
        self.npy.close()
        record = {
            "format": VIDEO_FORMAT,
            "source": str(src.path.resolve()),
            "source_kind": src.kind,
            "fps": src.fps,
            "size": list(src.size),
            "n_frames": self.n_frames,
            "checkpoint": checkpoint,
            "precision": precision,
            "n_latent": self.n_latent,
            "style_dim": self.style_dim,
            "distortion_file": self.npy_path.name,
            "smooth_window": smooth_window,
            "edit": edit,
            "tracks": [self._track(t, self.records.get(t.id, []), t.id in inverted) for t in tracks],
        }
        torch.save(record, self.pt_tmp)
        os.replace(self.npy_tmp, self.npy_path)
        os.replace(self.pt_tmp, self.pt_path)

    def _track(self, info: TrackInfo, faces: list[FaceRecord], inverted: bool) -> dict[str, Any]:
        zero = torch.zeros(self.n_latent, self.style_dim)
        track: dict[str, Any] = {
            "id": info.id, "first": info.first, "last": info.last, "inverted": inverted,
            "frame": torch.tensor([f.frame for f in faces], dtype=torch.int64),
            "detected": torch.tensor([f.detected for f in faces], dtype=torch.bool),
            "segment": torch.tensor([f.segment for f in faces], dtype=torch.int64),
            "quad": torch.from_numpy(np.array([f.quad for f in faces], dtype=np.float64).reshape(-1, 4, 2)),
            "raw_quad": torch.from_numpy(np.array([f.raw_quad for f in faces], dtype=np.float64).reshape(-1, 4, 2)),
            # float64 as the first run used them: the paste-back mask is drawn from them, and a
            # float32 copy moved a mask's edge by a pixel on some frames of a re-run
            "landmarks": torch.from_numpy(
                np.array([f.landmarks for f in faces], dtype=np.float64).reshape(-1, N_LANDMARKS, 2)),
            "latent": torch.stack([f.latent if f.latent is not None else zero for f in faces])
            if inverted and faces else zero[:0],
            "distortion_row": torch.tensor([f.distortion_row for f in faces], dtype=torch.int64),
        }
        if any(f.quality is not None for f in faces):  # per frame, NaN where not measured
            for key in ("identity_distance", "psnr", "ssim"):
                track[f"quality_{key}"] = torch.tensor(
                    [getattr(f.quality, key) if f.quality is not None else math.nan for f in faces],
                    dtype=torch.float32)
        return track


def _from_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A one-face file of the first format as one track."""
    found = data["found"].bool()
    frames = torch.nonzero(found).flatten()
    track = {
        "id": 0, "first": int(frames[0]) if len(frames) else 0, "last": int(frames[-1]) if len(frames) else -1,
        "inverted": True, "frame": frames, "detected": data["detected"][found], "segment": data["segment"][found],
        "quad": data["quad"][found], "raw_quad": data["raw_quad"][found], "landmarks": data["landmarks"][found],
        "latent": data["latent"][found], "distortion_row": data["distortion_row"][found],
    }
    keep = ("source", "source_kind", "fps", "size", "n_frames", "checkpoint", "n_latent", "style_dim",
            "distortion_file", "smooth_window", "edit")
    return {**{k: data[k] for k in keep if k in data}, "format": VIDEO_FORMAT, "tracks": [track] if len(frames) else []}


def read_video_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load ``OUT.pt`` written by a first run (either format, as ``hfgi-video/2``)."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VideoError(f"{path}: not a latent file ({short_reason(exc, 80)})") from None
    if not isinstance(data, dict) or data.get("format") not in (VIDEO_FORMAT, VIDEO_FORMAT_V1):
        raise VideoError(f"{path}: not a video latent file written by `hfgi video`")
    return _from_v1(data) if data["format"] == VIDEO_FORMAT_V1 else data


def read_video_latents(path: str | os.PathLike[str], n_latent: int, style_dim: int) -> dict[str, Any]:
    """``read_video_file``, checked to fit the model."""
    data = read_video_file(path)
    if (data["n_latent"], data["style_dim"]) != (n_latent, style_dim):
        raise VideoError(
            f"{path}: codes of {data['n_latent']}x{data['style_dim']} do not fit this model ({n_latent}x{style_dim})"
        )
    return data
