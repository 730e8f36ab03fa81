"""``hfgi video``: the edit loop. A frame's path, top to bottom (``edit_video``):

    ffmpeg.iter_frames                  decoded frames, one at a time
    tracking.Tracker                    every face's track id and smoothed crop square (+ look-ahead)
    align.align_quad                    the 256 px crop the encoder needs, per chosen track
    FrameEditor                         batches of faces (of one or several frames) through the engine:
        Model.encode_faces                  W+ and distortion map (kept in OUT.pt / OUT.distortion.npy)
        LatentEMA                           optional moving average of W+ over frames, per track
        Model.decode_faces                  the edit, at each frame's strength (a ramp, or constant)
                                            (--quality: the inversion too)
        Model.finish                        one paste-back per frame of all its faces with their soft
                                            masks, smaller (farther) faces first so the nearer is on
                                            top (and the inversions' quality against the crops)
    ffmpeg.VideoOutput                  H.264 at the input's rate and size, audio copied

A re-run from ``OUT.pt`` (``edit_video_from_latents``) replaces the first three lines by the stored
squares and codes of the chosen tracks and runs the same ``FrameEditor``. Memory does not grow with
the clip's length: only the tracker's look-ahead and one batch of frames are held (and the W+
tables bound for OUT.pt).
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
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..align import MIN_QSIZE, AlignedFace, align_quad
from ..edits import Edited, Output, describe, is_per_image
from ..engine import FaceWork, Model, Slot, Work, slot_detail, slot_label
from ..images import Photo, image_to_tensor
from ..models.hfgi import ENCODER_INPUT_SIZE
from ..quality import FaceQuality
from .ffmpeg import VideoError, VideoOutput, VideoSource, iter_frames, open_source
from .store import FaceRecord, NpyRows, VideoStore, read_video_latents
from .tracking import (
    DEFAULT_SMOOTH_WINDOW,
    MAX_GAP,
    TrackedFace,
    Tracker,
    TrackInfo,
    vector_landmarks,
    vector_quad,
)


@dataclass
class Progress:
    """How far a run is, for a progress bar or a status line."""

    frames: int
    """Frames written."""
    total: int | None
    """Frames in the clip, None when unknown."""
    faces: int
    """Faces edited so far (a face on one frame)."""
    people: int
    """Tracks found (first run) or edited (re-run) so far."""


ProgressCallback = Callable[[Progress], None]

PER_IMAGE_MOVE_SMOOTHING = 0.8
"""Weight of the previous frame in the moving average of a per-image edit's move (GradCtrl): about
five frames' worth, so a move that changes with the frame's own codes does not flicker."""


@dataclass
class VideoOptions:
    edit: Output
    """The edit; its strength applies to every frame unless ``ramp`` is given."""
    ramp: tuple[float, float] | None = None
    """Strength from A on the first frame to B on the last."""
    faces: tuple[int, ...] | None = None
    """Track ids to edit (``hfgi video --list-faces`` shows them); None: every face."""
    batch_size: int = 4
    """Faces per model batch (of one frame or several)."""
    smooth_window: int = DEFAULT_SMOOTH_WINDOW
    latent_smooth: float = 0.0
    """EMA weight of the previous frame's W+ (0: off)."""
    fps: float | None = None
    """Frame rate of a folder of frames (default 25)."""
    max_gap: int = MAX_GAP
    min_qsize: float = MIN_QSIZE
    quality: bool = False
    """Also decode each face's inversion and measure it against the tracked crop (a first run
    only: a re-run from OUT.pt has no crops)."""


@dataclass
class VideoResult:
    output: Path
    latents: Path | None
    """OUT.pt (a first run only)."""
    distortion: Path | None
    """OUT.distortion.npy (a first run only)."""
    frames: int
    faces: int
    """Faces edited, summed over frames (a face on two frames counts twice)."""
    detected: int
    """Of those, the ones detected on their frame (the others were filled from neighbours)."""
    tracks: list[TrackInfo]
    """Every person found (first run) or stored (re-run), by id."""
    edited: list[int]
    """The ids of the tracks edited."""
    missing: list[int]
    """Ids asked for with ``faces`` that the clip has no track of (a first run: known at the end)."""
    segments: int
    audio: bool
    from_latents: bool
    seconds: float = 0.0
    quality: list[tuple[int, int, FaceQuality]] = dataclasses.field(default_factory=list)
    """(frame, track, its inversion's quality) with --quality."""


@dataclass
class FrameFace:
    """One chosen track on one frame, on its way through the model."""

    track: int
    segment: int
    work: FaceWork
    detected: bool
    record: FaceRecord | None = None  # its line in OUT.pt (a first run)


@dataclass
class Frame:
    index: int
    pixels: np.ndarray
    faces: list[FrameFace]  # none: the frame passes through unedited


def strength_at(opts: VideoOptions, index: int, n_frames: int | None) -> float:
    """The edit's strength on frame ``index``: constant, or linear from A to B over the clip."""
    if opts.ramp is None:
        return opts.edit.strength
    a, b = opts.ramp
    n = max(1, (n_frames or 1) - 1)
    return a + (b - a) * min(index, n) / n


class LatentEMA:
    """Exponential moving average of W+ over consecutive frames of one segment of one track
    (restarts at a cut or after a frame without the face); ``weight`` is the previous frame's share
    (0: off)."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self._last: tuple[int, int, torch.Tensor] | None = None  # (frame index, segment, smoothed W+)

    def __call__(self, index: int, shot: int, latent: torch.Tensor) -> torch.Tensor:
        last, a = self._last, self.weight
        if a > 0 and last is not None and last[0] == index - 1 and last[1] == shot:
            latent = a * last[2] + (1.0 - a) * latent
        self._last = (index, shot, latent)
        return latent


def _batches(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class FrameEditor:
    """Batches frames in order, runs the engine on their faces (``batch_size`` faces a model call,
    from one frame or several), returns finished frames in order."""

    def __init__(
        self, model: Model, opts: VideoOptions, n_frames: int | None, source: str, store: VideoStore | None = None
    ) -> None:
        if opts.ramp is not None and not n_frames:
            raise VideoError("--strength-ramp needs the number of frames, which this input does not tell")
        self.model, self.opts, self.n_frames, self.source, self.store = model, opts, n_frames, source, store
        self.emas: dict[int, LatentEMA] = {}
        self.move_emas: dict[int, LatentEMA] | None = {} if is_per_image(opts.edit) else None
        self.pending: list[Frame] = []
        self.quality: list[tuple[int, int, FaceQuality]] = []
        self.faces = self.detected = 0
        # frames held at most for one model batch (a long stretch without a face must not pile up)
        self.max_pending = max(16, 2 * opts.batch_size)

    def push(self, frame: Frame) -> list[np.ndarray]:
        self.pending.append(frame)
        faces = sum(len(f.faces) for f in self.pending)
        if faces >= self.opts.batch_size or len(self.pending) >= self.max_pending:
            return self.flush()
        return []

    def flush(self) -> list[np.ndarray]:
        frames, self.pending = self.pending, []
        faces = [(frame, face) for frame in frames for face in frame.faces]
        if not faces:
            return [f.pixels for f in frames]
        for batch in _batches([face for _, face in faces if face.work.latent is None], self.opts.batch_size):
            self._encode(batch)
        for frame, face in faces:
            ema = self.emas.setdefault(face.track, LatentEMA(self.opts.latent_smooth))
            face.work.latent = ema(frame.index, face.segment, face.work.latent)  # type: ignore[arg-type]
        measure = self.opts.quality and all(face.work.picture is not None for _, face in faces)
        slots: list[Slot] = []
        for batch in _batches(faces, self.opts.batch_size):
            slot = self._slot([frame.index for frame, _ in batch])
            slots = [None, slot] if measure else [slot]
            if self.move_emas is None:
                self.model.decode_faces([face.work for _, face in batch], slots)
            else:
                if measure:
                    self.model.decode_faces([face.work for _, face in batch], [None])
                self._decode_smoothed_move(batch, slot)
        label = slot_label(slots[-1])
        for frame in frames:
            if not frame.faces:
                continue
            # paste-back blends in order: the smaller (farther) faces first, the nearest on top
            order = sorted(frame.faces, key=lambda f: f.work.alignment.qsize)  # type: ignore[union-attr]
            photo = Photo(Image.fromarray(frame.pixels), "RGB", None)
            work = Work(self.source, [f.work for f in order], photo=photo)
            result = self.model.finish(work, slots, paste=[label], quality=measure)
            frame.pixels = np.asarray(result.image)
            self.faces += len(order)
            self.detected += sum(f.detected for f in order)
            for face, done in zip(order, result.faces):
                if done.quality is not None:
                    self.quality.append((frame.index, face.track, done.quality))
                    if face.record is not None:
                        face.record.quality = done.quality
                face.work.outputs.clear()
        return [f.pixels for f in frames]

    def _decode_smoothed_move(self, batch: list[tuple[Frame, FrameFace]], slot: Slot) -> None:
        """A per-image edit (GradCtrl) computes its move of W+ on every frame; each track's moves
        are averaged over frames (``PER_IMAGE_MOVE_SMOOTHING``) so that the edit does not flicker."""
        assert self.move_emas is not None
        latent = torch.stack([face.work.latent for _, face in batch])  # type: ignore[misc]
        with self.model.runtime.session():
            edited = self.model.apply_edit(latent.to(self.model.device), slot)
        moves = edited.codes.float().cpu() - latent
        smoothed = torch.stack([
            self.move_emas.setdefault(face.track, LatentEMA(PER_IMAGE_MOVE_SMOOTHING))(frame.index, face.segment, m)
            for (frame, face), m in zip(batch, moves)])
        self.model.decode_codes([face.work for _, face in batch], Edited(latent + smoothed, edited.offsets),
                                slot_detail(slot))

    def _encode(self, faces: list[FrameFace]) -> None:
        self.model.encode_faces([f.work for f in faces])
        for face in faces:
            work = face.work
            assert work.latent is not None and work.distortion is not None
            distortion16 = work.distortion.half()
            if self.store is not None and face.record is not None:
                self.store.add_codes(face.record, work.latent, distortion16.numpy())
            # the edit decodes the float16 map that is stored, so a re-run gives the same pixels
            work.distortion = distortion16.float()

    def _slot(self, frames: list[int]) -> Slot:
        if self.opts.ramp is None:
            return self.opts.edit
        return [dataclasses.replace(self.opts.edit, strength=strength_at(self.opts, i, self.n_frames)) for i in frames]


def _checked_output(output: str | os.PathLike[str]) -> Path:
    output = Path(output)
    if output.suffix.lower() != ".mp4":
        raise ValueError(f"-o {output}: the output must be an .mp4 file")
    if output.is_dir():
        raise ValueError(f"-o {output}: is a folder")
    return output


class _Writer:
    """Encodes finished frames and reports progress; a set ``stop`` (Ctrl-C) ends the run here,
    between frames, and the caller's ExitStack removes every temporary file."""

    def __init__(self, out: VideoOutput, editor: FrameEditor, total: int | None, people: Callable[[], int],
                 on_progress: ProgressCallback | None, stop: threading.Event | None) -> None:
        self.out, self.editor, self.total, self.people = out, editor, total, people
        self.on_progress, self.stop = on_progress, stop

    def __call__(self, frames: list[np.ndarray]) -> None:
        if self.stop is not None and self.stop.is_set():
            raise KeyboardInterrupt
        if frames:
            self.out.write(frames)
            if self.on_progress is not None:
                self.on_progress(Progress(self.out.frames, self.total, self.editor.faces, self.people()))


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


def _record(frame: int, face: TrackedFace) -> FaceRecord:
    return FaceRecord(
        track=face.track, frame=frame, detected=face.detected, segment=face.segment,
        quad=vector_quad(face.vec), raw_quad=vector_quad(face.raw) if face.raw is not None else np.full((4, 2), np.nan),
        landmarks=vector_landmarks(face.vec),
    )


def _tracked_face(pixels: np.ndarray, face: TrackedFace, record: FaceRecord) -> FrameFace:
    """The crop of a tracked face, aligned with its smoothed square."""
    aligned = align_quad(Image.fromarray(pixels), vector_quad(face.vec), ENCODER_INPUT_SIZE,
                         vector_landmarks(face.vec))
    work = FaceWork(face.track, crop=image_to_tensor(aligned.image, ENCODER_INPUT_SIZE), alignment=aligned,
                    picture=aligned.image)
    return FrameFace(face.track, face.segment, work, face.detected, record)


def parse_faces(text: str) -> tuple[int, ...]:
    """``--faces 0,2`` -> (0, 2); raises ValueError naming the bad part."""
    try:
        ids = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise ValueError(f"--faces takes track ids like 0,2, not {text!r}") from None
    if not ids or min(ids) < 0:
        raise ValueError(f"--faces takes track ids like 0,2 (0 or more), not {text!r}")
    return ids


def track_clip(
    source: str | os.PathLike[str],
    fps: float | None = None,
    smooth_window: int = DEFAULT_SMOOTH_WINDOW,
    min_qsize: float = MIN_QSIZE,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> tuple[VideoSource, list[TrackInfo], int]:
    """Track every face of a clip without the model (``hfgi video --list-faces``): (the source, its
    tracks by id, frames read)."""
    src = open_source(source, fps)
    tracker = Tracker(smooth_window, min_qsize=min_qsize)
    n = 0
    for index, _pixels, _faces in tracker.run(iter_frames(src)):
        n = index + 1
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        if on_progress is not None:
            on_progress(Progress(n, src.n_frames, 0, len(tracker.tracks)))
    return src, tracker.tracks, n


def edit_video(
    model: Model,
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    opts: VideoOptions,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> VideoResult:
    """Track every face of ``source``, invert, edit and paste back the chosen ones (``opts.faces``,
    default all) on every frame; write ``output`` (.mp4), ``output.pt`` and
    ``output.distortion.npy``."""
    started = time.perf_counter()
    output = _checked_output(output)
    model.edit_specs([opts.edit])  # an unknown edit or a bad direction file fails before any frame
    src = open_source(source, opts.fps, exact_count=opts.ramp is not None)
    tracker = Tracker(opts.smooth_window, opts.max_gap, opts.min_qsize)
    chosen = None if opts.faces is None else set(opts.faces)
    with contextlib.ExitStack() as stack:
        out = VideoOutput(stack, output, src.size, src.fps)
        store = VideoStore(stack, output, model.n_latent, model.style_dim)
        editor = FrameEditor(model, opts, src.n_frames, str(src.path), store)
        write = _Writer(out, editor, src.n_frames, lambda: len(tracker.tracks), on_progress, stop)
        for index, pixels, faces in tracker.run(iter_frames(src)):
            edited = []
            for face in faces:
                record = _record(index, face)
                store.add(record)
                if chosen is None or face.track in chosen:
                    edited.append(_tracked_face(pixels, face, record))
            store.n_frames = index + 1
            write(editor.push(Frame(index, pixels, edited)))
        write(editor.flush())
        audio = src.kind == "video" and src.has_audio
        _finish(out, src.path if audio else None, stop)
        edit = {**describe(opts.edit), "ramp": opts.ramp, "latent_smooth": opts.latent_smooth}
        ids = [t.id for t in tracker.tracks]
        inverted = {k for k in ids if chosen is None or k in chosen}
        # the codes before the video: an existing OUT.mp4 always has its latents
        store.commit(src, model.checkpoint, opts.smooth_window, edit, tracker.tracks, inverted,
                     model.runtime.precision)
        out.commit()
    return VideoResult(output, store.pt_path, store.npy_path, store.n_frames, editor.faces, editor.detected,
                       tracker.tracks, sorted(inverted), sorted((chosen or set()) - set(ids)), tracker.segments,
                       audio, False, time.perf_counter() - started, editor.quality)


def stored_tracks(data: dict[str, Any]) -> list[TrackInfo]:
    """The tracks of an ``OUT.pt``, as ``TrackInfo`` (no crops: the file keeps no pixels)."""
    return [TrackInfo(int(t["id"]), int(t["first"]), int(t["last"]), int(t["detected"].sum())) for t in data["tracks"]]


def _chosen_tracks(data: dict[str, Any], faces: tuple[int, ...] | None, latents: Path) -> list[dict[str, Any]]:
    """The stored tracks to edit; an id not stored, or stored without codes, is an error naming it."""
    by_id = {int(t["id"]): t for t in data["tracks"]}
    if not by_id:
        raise VideoError(f"{latents}: holds no face (no face was found in {data['source']})")
    if faces is None:
        chosen = [t for t in by_id.values() if t["inverted"]]
    else:
        missing = [k for k in faces if k not in by_id]
        if missing:
            raise VideoError(f"{latents}: no face {', '.join(map(str, missing))} (its tracks: "
                             f"{', '.join(map(str, by_id))})")
        chosen = [by_id[k] for k in faces]
        bare = [k for k in faces if not by_id[k]["inverted"]]
        if bare:
            raise VideoError(f"{latents}: face {', '.join(map(str, bare))} was not inverted in that run (its "
                             f"--faces left it out); run the clip again with it")
    return chosen


def _stored_frames(tracks: list[dict[str, Any]], rows: NpyRows, frames: Iterable[np.ndarray], n_frames: int,
                   size: tuple[int, int], source: str) -> Iterable[Frame]:
    """The frames of a re-run with their chosen tracks' stored squares and codes (no detection, no
    encoder)."""
    at = [0] * len(tracks)  # per track: its next stored row
    for i, pixels in enumerate(frames):
        if i >= n_frames:
            return
        faces = []
        for k, track in enumerate(tracks):
            row = at[k]
            if row < len(track["frame"]) and int(track["frame"][row]) == i:
                at[k] += 1
                quad = track["quad"][row].numpy()
                marks = track["landmarks"][row].numpy().astype(np.float64)
                alignment = AlignedFace(Image.new("RGB", (1, 1)), quad, marks, size, source)
                distortion = torch.from_numpy(rows[int(track["distortion_row"][row])].copy()).float()
                work = FaceWork(int(track["id"]), latent=track["latent"][row].float(), distortion=distortion,
                                alignment=alignment)
                faces.append(FrameFace(int(track["id"]), int(track["segment"][row]), work,
                                       bool(track["detected"][row])))
        yield Frame(i, pixels, faces)


def edit_video_from_latents(
    model: Model,
    latents: str | os.PathLike[str],
    output: str | os.PathLike[str],
    opts: VideoOptions,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> VideoResult:
    """Re-run an edit from ``OUT.pt`` (+ its distortion maps) on the original frames, for the
    tracks ``opts.faces`` (default: every track the first run inverted): no detection, no encoder;
    only the generator passes of the edit run. Writes ``output`` (.mp4) only."""
    started = time.perf_counter()
    output, latents = _checked_output(output), Path(latents)
    model.edit_specs([opts.edit])
    data = read_video_latents(latents, model.n_latent, model.style_dim)
    chosen = _chosen_tracks(data, opts.faces, latents)
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
        write = _Writer(out, editor, n, lambda: len(chosen), on_progress, stop)
        for frame in _stored_frames(chosen, rows, iter_frames(src), n, src.size, str(source)):
            write(editor.push(frame))
        write(editor.flush())
        if out.frames != n:
            raise VideoError(f"{source}: has {out.frames} frames, the latents were made from {n}")
        audio = src.kind == "video" and src.has_audio
        _finish(out, src.path if audio else None, stop)
        out.commit()
    segments = sum(int(t["segment"].max()) + 1 for t in chosen if len(t["segment"]))
    return VideoResult(output, None, None, n, editor.faces, editor.detected, stored_tracks(data),
                       [int(t["id"]) for t in chosen], [], segments, audio, True, time.perf_counter() - started)
