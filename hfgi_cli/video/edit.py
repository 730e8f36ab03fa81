"""``hfgi video``: the edit loop. A frame's path, top to bottom (``edit_video``):

    ffmpeg.iter_frames                  decoded frames, one at a time
    tracking.Tracker                    the followed face's smoothed crop square (+ look-ahead)
    align.align_quad                    the 256 px crop the encoder needs
    FrameEditor                         batches of frames through the engine:
        Model.encode_faces                  W+ and distortion map (kept in OUT.pt / OUT.distortion.npy)
        LatentEMA                           optional moving average of W+ over frames
        Model.decode_faces                  the edit, at each frame's strength (a ramp, or constant)
                                            (--quality: the inversion too)
        Model.finish                        paste-back with the soft face mask (and the inversion's
                                            quality against the crop, kept in OUT.pt)
    ffmpeg.VideoOutput                  H.264 at the input's rate and size, audio copied

A re-run from ``OUT.pt`` (``edit_video_from_latents``) replaces the first three lines by the stored
squares and codes and runs the same ``FrameEditor``. Memory does not grow with the clip's length:
only the tracker's look-ahead and one batch of frames are held.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from ..align import MIN_QSIZE, AlignedFace, align_quad
from ..edits import Edited, Output, describe, is_per_image
from ..engine import FaceWork, Model, Slot, Work, slot_detail, slot_label
from ..images import Photo, image_to_tensor
from ..models.hfgi import ENCODER_INPUT_SIZE
from ..quality import FaceQuality
from .ffmpeg import VideoError, VideoOutput, iter_frames, open_source
from .store import FrameRecord, NpyRows, VideoStore, read_video_latents
from .tracking import (
    DEFAULT_SMOOTH_WINDOW,
    MAX_GAP,
    N_LANDMARKS,
    Track,
    Tracker,
    vector_landmarks,
    vector_quad,
)

ProgressCallback = Callable[[int, Optional[int]], None]
"""Called with (frames written so far, total frames or None when unknown)."""


PER_IMAGE_MOVE_SMOOTHING = 0.8
"""Weight of the previous frame in the moving average of a per-image edit's move (GradCtrl): about
five frames' worth, so a move that changes with the frame's own codes does not flicker."""

@dataclass
class VideoOptions:
    edit: Output
    """The edit; its strength applies to every frame unless ``ramp`` is given."""
    ramp: tuple[float, float] | None = None
    """Strength from A on the first frame to B on the last."""
    batch_size: int = 4
    smooth_window: int = DEFAULT_SMOOTH_WINDOW
    latent_smooth: float = 0.0
    """EMA weight of the previous frame's W+ (0: off)."""
    fps: float | None = None
    """Frame rate of a folder of frames (default 25)."""
    max_gap: int = MAX_GAP
    min_qsize: float = MIN_QSIZE
    quality: bool = False
    """Also decode each frame's inversion and measure it against the tracked crop (a first run
    only: a re-run from OUT.pt has no crops)."""


@dataclass
class VideoResult:
    output: Path
    latents: Path | None
    frames: int
    faces: int  # frames with a (detected or filled) face that was edited
    detected: int
    shots: int
    audio: bool
    from_latents: bool
    seconds: float = 0.0
    quality: list[tuple[int, FaceQuality]] = dataclasses.field(default_factory=list)
    """(frame index, its inversion's quality) with --quality."""


@dataclass
class Frame:
    index: int
    pixels: np.ndarray
    shot: int
    face: FaceWork | None = None  # None: the frame passes through unedited


def strength_at(opts: VideoOptions, index: int, n_frames: int | None) -> float:
    """The edit's strength on frame ``index``: constant, or linear from A to B over the clip."""
    if opts.ramp is None:
        return opts.edit.strength
    a, b = opts.ramp
    n = max(1, (n_frames or 1) - 1)
    return a + (b - a) * min(index, n) / n


class LatentEMA:
    """Exponential moving average of W+ over consecutive frames of one shot (restarts at a cut or
    after a frame without a face); ``weight`` is the previous frame's share (0: off)."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self._last: tuple[int, int, torch.Tensor] | None = None  # (frame index, shot, smoothed W+)

    def __call__(self, index: int, shot: int, latent: torch.Tensor) -> torch.Tensor:
        last, a = self._last, self.weight
        if a > 0 and last is not None and last[0] == index - 1 and last[1] == shot:
            latent = a * last[2] + (1.0 - a) * latent
        self._last = (index, shot, latent)
        return latent


class FrameEditor:
    """Batches frames in order, runs the engine on their faces, returns finished frames in order."""

    def __init__(
        self, model: Model, opts: VideoOptions, n_frames: int | None, source: str, store: VideoStore | None = None
    ) -> None:
        if opts.ramp is not None and not n_frames:
            raise VideoError("--strength-ramp needs the number of frames, which this input does not tell")
        self.model, self.opts, self.n_frames, self.source, self.store = model, opts, n_frames, source, store
        self.ema = LatentEMA(opts.latent_smooth)
        self.move_ema = LatentEMA(PER_IMAGE_MOVE_SMOOTHING) if is_per_image(opts.edit) else None
        self.pending: list[Frame] = []
        self.quality: list[tuple[int, FaceQuality]] = []
        # frames held at most for one model batch (a long stretch without a face must not pile up)
        self.max_pending = max(16, 2 * opts.batch_size)

    def push(self, frame: Frame) -> list[np.ndarray]:
        self.pending.append(frame)
        faces = sum(f.face is not None for f in self.pending)
        if faces >= self.opts.batch_size or len(self.pending) >= self.max_pending:
            return self.flush()
        return []

    def flush(self) -> list[np.ndarray]:
        frames, self.pending = self.pending, []
        edited = [f for f in frames if f.face is not None]
        if edited:
            self._encode([f for f in edited if f.face.latent is None])  # type: ignore[union-attr]
            for f in edited:
                f.face.latent = self.ema(f.index, f.shot, f.face.latent)  # type: ignore[union-attr]
            slot = self._slot(edited)
            measure = self.opts.quality and all(f.face.picture is not None for f in edited)  # type: ignore[union-attr]
            slots: list[Slot] = [None, slot] if measure else [slot]
            faces = [f.face for f in edited]
            if self.move_ema is None:
                self.model.decode_faces(faces, slots)  # type: ignore[arg-type]
            else:
                if measure:
                    self.model.decode_faces(faces, [None])  # type: ignore[arg-type]
                self._decode_smoothed_move(edited, slot)
            for f in edited:
                photo = Photo(Image.fromarray(f.pixels), "RGB", None)
                work = Work(self.source, [f.face], photo=photo)  # type: ignore[list-item]
                result = self.model.finish(work, slots, paste=[slot_label(slot)], quality=measure)
                f.pixels = np.asarray(result.image)
                if result.faces[0].quality is not None:
                    self.quality.append((f.index, result.faces[0].quality))
                    if self.store is not None:
                        self.store.frames[f.index].quality = result.faces[0].quality
        return [f.pixels for f in frames]

    def _decode_smoothed_move(self, frames: list[Frame], slot: Slot) -> None:
        """A per-image edit (GradCtrl) computes its move of W+ on every frame; the moves are
        averaged over frames (``PER_IMAGE_MOVE_SMOOTHING``) so that the edit does not flicker."""
        assert self.move_ema is not None
        latent = torch.stack([f.face.latent for f in frames])  # type: ignore[union-attr]
        with self.model.runtime.session():
            edited = self.model.apply_edit(latent.to(self.model.device), slot)
        moves = edited.codes.float().cpu() - latent
        smoothed = torch.stack([self.move_ema(f.index, f.shot, m) for f, m in zip(frames, moves)])
        self.model.decode_codes([f.face for f in frames], Edited(latent + smoothed, edited.offsets),  # type: ignore[misc]
                                slot_detail(slot))

    def _encode(self, frames: list[Frame]) -> None:
        if not frames:
            return
        self.model.encode_faces([f.face for f in frames])  # type: ignore[misc]
        for f in frames:
            face = f.face
            assert face is not None and face.latent is not None and face.distortion is not None
            distortion16 = face.distortion.half()
            if self.store is not None:
                self.store.add_codes(f.index, face.latent, distortion16.numpy())
            # the edit decodes the float16 map that is stored, so a re-run gives the same pixels
            face.distortion = distortion16.float()

    def _slot(self, frames: list[Frame]) -> Slot:
        if self.opts.ramp is None:
            return self.opts.edit
        return [dataclasses.replace(self.opts.edit, strength=strength_at(self.opts, f.index, self.n_frames))
                for f in frames]


def _checked_output(output: str | os.PathLike[str]) -> Path:
    output = Path(output)
    if output.suffix.lower() != ".mp4":
        raise ValueError(f"-o {output}: the output must be an .mp4 file")
    if output.is_dir():
        raise ValueError(f"-o {output}: is a folder")
    return output


def _write(out: VideoOutput, frames: list[np.ndarray], total: int | None,
           on_progress: ProgressCallback | None, stop: threading.Event | None) -> None:
    """Encode finished frames; a set ``stop`` (Ctrl-C) ends the run here, between frames, and the
    caller's ExitStack removes every temporary file."""
    if stop is not None and stop.is_set():
        raise KeyboardInterrupt
    if frames:
        out.write(frames)
        if on_progress is not None:
            on_progress(out.frames, total)


def _finish(out: VideoOutput, audio_from: Path | None, stop: threading.Event | None) -> None:
    """Close the video and mux the audio; a Ctrl-C seen meanwhile still ends the run without output
    (whatever ffmpeg made of it)."""
    try:
        out.finish(audio_from)
    except Exception:
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt from None
        raise
    if stop is not None and stop.is_set():
        raise KeyboardInterrupt


def _frame_record(track: Track, raw: np.ndarray | None) -> FrameRecord:
    _, vec, shot, detected = track
    nan_quad, nan_marks = np.full((4, 2), np.nan), np.full((N_LANDMARKS, 2), np.nan)
    return FrameRecord(
        found=vec is not None,
        detected=detected,
        segment=shot,
        quad=vector_quad(vec) if vec is not None else nan_quad,
        raw_quad=vector_quad(raw) if raw is not None else nan_quad,
        landmarks=vector_landmarks(vec) if vec is not None else nan_marks,
    )


def _tracked_face(pixels: np.ndarray, vec: np.ndarray | None) -> FaceWork | None:
    """The crop of the tracked face, aligned with its smoothed square (None without a face)."""
    if vec is None:
        return None
    face = align_quad(Image.fromarray(pixels), vector_quad(vec), ENCODER_INPUT_SIZE, vector_landmarks(vec))
    return FaceWork(0, crop=image_to_tensor(face.image, ENCODER_INPUT_SIZE), alignment=face, picture=face.image)


def edit_video(
    model: Model,
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    opts: VideoOptions,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> VideoResult:
    """Track, invert, edit and paste back every frame of ``source``; write ``output`` (.mp4),
    ``output.pt`` and ``output.distortion.npy``."""
    started = time.perf_counter()
    output = _checked_output(output)
    model.edit_specs([opts.edit])  # an unknown edit or a bad direction file fails before any frame
    src = open_source(source, opts.fps, exact_count=opts.ramp is not None)
    tracker = Tracker(opts.smooth_window, opts.max_gap, opts.min_qsize)
    with contextlib.ExitStack() as stack:
        out = VideoOutput(stack, output, src.size, src.fps)
        store = VideoStore(stack, output, model.n_latent, model.style_dim)
        editor = FrameEditor(model, opts, src.n_frames, str(src.path), store)
        for pixels, track, raw in tracker.run(iter_frames(src)):
            store.add_frame(_frame_record(track, raw))
            frame = Frame(track[0], pixels, track[2], _tracked_face(pixels, track[1]))
            _write(out, editor.push(frame), src.n_frames, on_progress, stop)
        _write(out, editor.flush(), src.n_frames, on_progress, stop)
        audio = src.kind == "video" and src.has_audio
        _finish(out, src.path if audio else None, stop)
        edit = {**describe(opts.edit), "ramp": opts.ramp, "latent_smooth": opts.latent_smooth}
        # the codes before the video: an existing OUT.mp4 always has its latents
        store.commit(src, model.checkpoint, opts.smooth_window, edit)
        out.commit()
    frames = store.frames
    return VideoResult(output, store.pt_path, len(frames), sum(f.found for f in frames),
                       sum(f.detected for f in frames), tracker.shots, audio, False, time.perf_counter() - started,
                       editor.quality)


def _stored_frames(data: dict[str, Any], rows: NpyRows, frames: Iterable[np.ndarray], size: tuple[int, int],
                   source: str) -> Iterable[Frame]:
    """The frames of a re-run with their stored squares and codes (no detection, no encoder)."""
    found, quads = data["found"], data["quad"].numpy()
    marks = data["landmarks"].numpy().astype(np.float64)
    for i, pixels in enumerate(frames):
        if i >= int(data["n_frames"]):
            return
        face = None
        if bool(found[i]):
            alignment = AlignedFace(Image.new("RGB", (1, 1)), quads[i], marks[i], size, source)
            distortion = torch.from_numpy(rows[int(data["distortion_row"][i])].copy()).float()
            face = FaceWork(0, latent=data["latent"][i].float(), distortion=distortion, alignment=alignment)
        yield Frame(i, pixels, int(data["segment"][i]), face)


def edit_video_from_latents(
    model: Model,
    latents: str | os.PathLike[str],
    output: str | os.PathLike[str],
    opts: VideoOptions,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> VideoResult:
    """Re-run an edit from ``OUT.pt`` (+ its distortion maps) on the original frames: no detection,
    no encoder; only the generator passes of the edit run. Writes ``output`` (.mp4) only."""
    started = time.perf_counter()
    output, latents = _checked_output(output), Path(latents)
    model.edit_specs([opts.edit])
    data = read_video_latents(latents, model.n_latent, model.style_dim)
    source = Path(data["source"])
    if not source.exists():
        raise VideoError(f"{latents}: its source {source} is gone (the frames are needed for paste-back)")
    src = open_source(source, float(data["fps"]))
    if list(src.size) != list(data["size"]):
        raise VideoError(f"{source}: now {src.size[0]}x{src.size[1]}, the latents were made at {data['size']}")
    n = int(data["n_frames"])
    rows = NpyRows(latents.parent / data["distortion_file"])
    with contextlib.ExitStack() as stack:
        stack.callback(rows.close)
        out = VideoOutput(stack, output, src.size, src.fps)
        editor = FrameEditor(model, opts, n, str(source), None)
        for frame in _stored_frames(data, rows, iter_frames(src), src.size, str(source)):
            _write(out, editor.push(frame), n, on_progress, stop)
        _write(out, editor.flush(), n, on_progress, stop)
        if out.frames != n:
            raise VideoError(f"{source}: has {out.frames} frames, the latents were made from {n}")
        audio = src.kind == "video" and src.has_audio
        _finish(out, src.path if audio else None, stop)
        out.commit()
    return VideoResult(output, None, n, int(data["found"].sum()), int(data["detected"].sum()),
                       int(data["segment"].max()) + 1 if n else 0, audio, True, time.perf_counter() - started)
