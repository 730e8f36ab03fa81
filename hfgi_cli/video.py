"""Temporally consistent face edits on video, streamed frame by frame.

Editing every frame on its own (as the paper does) flickers: the per-frame FFHQ crop jitters with
the landmark noise, and the model sees a slightly different crop each frame. Following "Stitch it
in Time" (Tzaban et al. 2022) this module

1. detects the 68 landmarks on every frame and follows ONE face: the largest at the start, then the
   one nearest to the previous frame's face (a face that jumped further than a shot cut allows is
   replaced by the largest one);
2. turns each detection into the FFHQ crop square, written as centre ``c`` and half-side vector
   ``x`` (the square's corners are ``c -+ x -+ y``, ``y`` = ``x`` turned 90 degrees, so averaging
   (c, x) is averaging the corners), fills frames without a detection from their neighbours
   (linear interpolation across gaps of at most ``max_gap`` frames, else the nearest detection
   is held for up to ``max_gap`` frames, else the frame is left as it is), and splits the clip
   into shots wherever the square jumps (centre moves more than ``CUT_SHIFT`` of the face size,
   or the size changes more than ``CUT_SCALE`` x);
3. smooths (c, x) and the landmarks over a centred window of ``smooth_window`` frames that never
   crosses a shot boundary (a local quadratic least-squares fit, Savitzky-Golay, so a moving head
   is followed without lag), and aligns each frame with that smoothed square (``align.align_quad``);
4. inverts the crops in batches (``HFGI.encode`` at 256 px), optionally smooths W+ over time
   (an exponential moving average, restarted at shot cuts), applies the edit with the same
   strength on every frame (or a linear ramp), decodes at full resolution and pastes the face
   back with ``align.paste_back``'s soft mask, so pixels away from the face are untouched;
5. encodes H.264 (libx264, yuv420p, CRF 18) at the input's frame rate and size (an odd width or
   height gets one replicated column / row, as yuv420p needs even sizes) and copies the input's
   audio track into it.

Memory does not grow with the clip's length: frames are read from and written to ffmpeg pipes,
and only a look-ahead of ``max_gap + 1 + smooth_window // 2`` frames plus one model batch is held.
The per-frame distortion maps (float16, 3x256x256 = 384 KB a frame) are streamed to
``OUT.distortion.npy``; ``OUT.pt`` holds the rest per frame (W+ before editing, the smoothed and
the raw crop squares, smoothed landmarks, face found / detected, shot number) and the source path,
frame rate, size and checkpoint name. ``OUT.pt`` is written at the end; its W+ table is the one
thing that grows with the length (n_latent x 512 float32 = 36 KB a frame for the published model).
Giving ``OUT.pt`` as the input re-runs any edit from these codes without running the encoder.

Every file is written under a temporary name in the output folder and renamed into place at the
end; an interrupted or failed run removes its temporary files and leaves no partial output.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageSequence

from . import io as hio
from .align import MIN_QSIZE, AlignedFace, align_quad, detect_faces, face_quad, paste_back
from .edits import Editor, EditSpec
from .models.hfgi import ENCODER_INPUT_SIZE, HFGI
from .pipeline import autocast_context, configure_backends

VIDEO_FORMAT = "hfgi-video/1"
DEFAULT_SMOOTH_WINDOW = 9
MAX_GAP = 10
"""Frames without a detection that are filled from their neighbours (see the module docstring)."""
CUT_SHIFT = 0.4
"""A shot cut: the crop centre moves by more than this fraction of the crop side between detections."""
CUT_SCALE = 1.3
"""... or the crop side changes by more than this factor."""
DEFAULT_FRAMES_FPS = 25.0
CRF = 18
_N_LM = 68
_NPY_HEADER = 128

ProgressCallback = Callable[[int, "int | None"], None]
"""Called with (frames written so far, total frames or None when unknown)."""


class VideoError(Exception):
    """An input that cannot be read, a latent file that does not fit, or an encoder failure."""


# ----------------------------------------------------------------------------------------- reading
@dataclass
class VideoSource:
    """A clip to read: a video file, an animated GIF or a folder of frames."""

    path: Path
    kind: str  # video | gif | frames
    fps: float
    size: tuple[int, int]  # (width, height)
    n_frames: int | None  # exact for gif/frames; estimated from the duration for videos
    has_audio: bool = False
    files: list[Path] = field(default_factory=list)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_streams(path: Path) -> str:
    """ffmpeg's description of a file's streams (its stderr for ``ffmpeg -i PATH``)."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True, errors="replace",
        stdin=subprocess.DEVNULL,
    )
    return proc.stderr


def has_audio_stream(path: Path) -> bool:
    return re.search(r"Stream #\S+.*: Audio:", ffmpeg_streams(path)) is not None


def open_source(path: str | os.PathLike[str], fps: float | None = None, exact_count: bool = False) -> VideoSource:
    """Probe ``path`` (no frames are kept). ``fps`` sets the rate of a folder of frames."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in hio.IMAGE_EXTS)
        if not files:
            raise VideoError(f"{path}: folder holds no image frames")
        first = hio.read_image(files[0]) if files else None
        assert first is not None
        return VideoSource(path, "frames", float(fps or DEFAULT_FRAMES_FPS), first.size, len(files), files=files)
    if not path.is_file():
        raise VideoError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".gif":
        try:
            with Image.open(path) as im:
                n = getattr(im, "n_frames", 1)
                duration = float(im.info.get("duration") or 0)
                size = im.size
        except OSError as exc:
            raise VideoError(f"{path}: unreadable GIF ({exc})") from None
        rate = fps or (1000.0 / duration if duration > 0 else 10.0)
        return VideoSource(path, "gif", float(rate), size, n)
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
    except (RuntimeError, OSError, StopIteration) as exc:
        first = str(exc).strip().splitlines()
        raise VideoError(f"{path}: not a readable video ({first[0][:120] if first else 'no frames'})") from None
    rate = float(fps or meta.get("fps") or 0)
    if rate <= 0:
        raise VideoError(f"{path}: unknown frame rate")
    size = tuple(int(v) for v in meta["size"])
    if exact_count:
        n_frames: int | None = int(imageio_ffmpeg.count_frames_and_secs(str(path))[0])
    else:
        duration = float(meta.get("duration") or 0)
        n_frames = max(1, round(duration * rate)) if duration > 0 else None
    return VideoSource(path, "video", rate, (size[0], size[1]), n_frames, has_audio_stream(path))


def iter_frames(src: VideoSource) -> Iterator[np.ndarray]:
    """The clip's frames as (H, W, 3) uint8 arrays, one at a time."""
    w, h = src.size
    if src.kind == "frames":
        for p in src.files:
            img = hio.read_image(p)
            if img.size != src.size:
                raise VideoError(f"{p}: frame of {img.size[0]}x{img.size[1]} in a {w}x{h} sequence")
            yield np.asarray(img)
        return
    if src.kind == "gif":
        with Image.open(src.path) as im:
            for frame in ImageSequence.Iterator(im):
                yield np.asarray(hio.to_rgb8(frame.copy()))
        return
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(src.path))
    try:
        meta = next(reader)
        fw, fh = (int(v) for v in meta["size"])
        while True:
            try:
                buf = next(reader)
            except StopIteration:
                return
            except (RuntimeError, OSError) as exc:  # a truncated or corrupt stream
                first = (str(exc).strip().splitlines() or ["ffmpeg failed"])[0][:120]
                raise VideoError(f"{src.path}: cannot decode ({first})") from None
            yield np.frombuffer(buf, np.uint8).reshape(fh, fw, 3)
    finally:
        reader.close()


# ----------------------------------------------------------------------------------------- writing
class H264Writer:
    """Raw RGB frames -> H.264 MP4 (libx264, yuv420p) through an ffmpeg pipe."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float, crf: int = CRF) -> None:
        import imageio_ffmpeg

        w, h = size
        self.pad = (h % 2, w % 2)
        self.size = (w + self.pad[1], h + self.pad[0])
        self._gen = imageio_ffmpeg.write_frames(
            str(path), self.size, fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=None,
            macro_block_size=1, ffmpeg_log_level="error", output_params=["-crf", str(crf), "-f", "mp4"],
        )
        self._gen.send(None)

    def write(self, frame: np.ndarray) -> None:
        if any(self.pad):
            frame = np.pad(frame, ((0, self.pad[0]), (0, self.pad[1]), (0, 0)), mode="edge")
        self._gen.send(np.ascontiguousarray(frame, dtype=np.uint8))

    def close(self) -> None:
        self._gen.close()


def mux_audio(video: Path, source: Path, out: Path, seconds: float) -> None:
    """``video``'s picture + ``source``'s first audio track (copied, else re-encoded to AAC) -> ``out``.

    The audio is cut at ``seconds`` (the video's length); ``-shortest`` is not used because it can
    drop the last video frame when the audio track ends a little early.
    """
    err = ""
    for codec in (["-c:a", "copy"], ["-c:a", "aac", "-b:a", "192k"]):
        cmd = [ffmpeg_exe(), "-y", "-v", "error", "-i", str(video), "-i", str(source), "-map", "0:v:0",
               "-map", "1:a:0?", "-c:v", "copy", *codec, "-t", f"{seconds:.6f}", "-f", "mp4", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL,
                              start_new_session=True)
        if proc.returncode == 0:
            return
        err = proc.stderr.strip()
    raise VideoError(f"cannot copy the audio of {source} ({err.splitlines()[-1][:160] if err else 'ffmpeg failed'})")


class _NpyAppender:
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


class _NpyRows:
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


# ------------------------------------------------------------------------------ tracking, smoothing
def quad_vector(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks -> [cx, cy, xx, xy, 136 landmark coordinates] (the crop square as centre + half side)."""
    quad, _ = face_quad(landmarks)
    return np.concatenate([quad.mean(axis=0), (quad[3] - quad[0]) / 2.0, np.asarray(landmarks, np.float64).ravel()])


def vector_quad(vec: np.ndarray) -> np.ndarray:
    """The crop square (4, 2), in ``face_quad``'s corner order, of a ``quad_vector``."""
    c, x = vec[0:2], vec[2:4]
    y = np.array([-x[1], x[0]])
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def vector_landmarks(vec: np.ndarray) -> np.ndarray:
    return vec[4:].reshape(_N_LM, 2)


def is_cut(a: np.ndarray, b: np.ndarray, shift: float = CUT_SHIFT, scale: float = CUT_SCALE) -> bool:
    """True when the squares of two detections are too far apart to be the same shot."""
    ra, rb = float(np.hypot(*a[2:4])), float(np.hypot(*b[2:4]))
    side = ra + rb  # the mean side (a side is twice the half-side)
    return bool(np.hypot(*(a[0:2] - b[0:2])) > shift * side or max(ra, rb) > scale * min(ra, rb))


def pick_face(faces: list[np.ndarray], previous: np.ndarray | None, min_qsize: float = MIN_QSIZE) -> np.ndarray | None:
    """The tracked face among one frame's detections, as a ``quad_vector``."""
    vecs = [v for v in (quad_vector(lm) for lm in faces) if 2.0 * np.hypot(*v[2:4]) >= min_qsize]
    if not vecs:
        return None
    if previous is not None:
        nearest = min(vecs, key=lambda v: float(np.hypot(*(v[0:2] - previous[0:2]))))
        if not is_cut(previous, nearest):
            return nearest
    return max(vecs, key=lambda v: float(np.hypot(*v[2:4])))


Track = tuple[int, "np.ndarray | None", int, bool]
"""(frame index, crop vector or None, shot number or -1, detected on this frame)."""


class GapFiller:
    """Stage 1: fill frames without a detection from their neighbours and number the shots.

    Emits every frame once, in order, at most ``max_gap + 1`` frames after it was pushed.
    """

    def __init__(self, max_gap: int = MAX_GAP) -> None:
        self.max_gap = max_gap
        self.last: tuple[int, np.ndarray, int] | None = None
        self.pending: list[int] = []
        self.shots = 0

    def _hold_previous(self, j: int) -> Track:
        if self.last is not None and j - self.last[0] <= self.max_gap:
            return (j, self.last[1], self.last[2], False)
        return (j, None, -1, False)

    def push(self, i: int, vec: np.ndarray | None) -> list[Track]:
        out: list[Track] = []
        if vec is None:
            self.pending.append(i)
            while len(self.pending) > self.max_gap:  # too long to bridge: decide the oldest now
                out.append(self._hold_previous(self.pending.pop(0)))
            return out
        last = self.last
        if last is not None and i - last[0] - 1 <= self.max_gap and not is_cut(last[1], vec):
            shot = last[2]
            for j in self.pending:
                t = (j - last[0]) / (i - last[0])
                out.append((j, (1.0 - t) * last[1] + t * vec, shot, False))
        else:
            shot = self.shots
            self.shots += 1
            for j in self.pending:
                before = j - last[0] if last is not None else math.inf
                after = i - j
                if before <= self.max_gap and before <= after:
                    out.append(self._hold_previous(j))
                elif after <= self.max_gap:
                    out.append((j, vec, shot, False))
                else:
                    out.append((j, None, -1, False))
        self.pending = []
        self.last = (i, vec, shot)
        out.append((i, vec, shot, True))
        return out

    def finish(self) -> list[Track]:
        out = [self._hold_previous(j) for j in self.pending]
        self.pending = []
        return out


@functools.lru_cache(maxsize=256)
def _fit_weights(half: int) -> np.ndarray:
    """Weights over frames -half..half giving the value at 0 of a least-squares polynomial fit:
    quadratic for >= 5 frames, else a line (3 frames: their mean), else the frame itself."""
    u = np.arange(-half, half + 1, dtype=np.float64)
    degree = 2 if u.size >= 5 else 1 if u.size >= 3 else 0
    return np.linalg.pinv(np.vander(u, degree + 1, increasing=True))[0]


class WindowSmoother:
    """Stage 2: smooth the crop vectors over a centred window that never crosses a shot boundary.

    Each frame gets the value at its own time of a least-squares quadratic fitted to the window
    (a Savitzky-Golay filter): unlike a plain mean it follows a moving, accelerating head without
    lag or overshoot, while averaging out the landmark noise. Near a shot boundary (or the clip's
    ends) the window shrinks symmetrically (so it stays unbiased). Emits each frame at most
    ``window // 2`` frames after it was pushed.
    """

    def __init__(self, window: int = DEFAULT_SMOOTH_WINDOW) -> None:
        self.half = int(window) // 2 if window > 1 else 0  # an even window grows to the next odd one
        self.buf: list[Track] = []
        self.k = 0  # position in buf of the next frame to emit

    def push(self, track: Track) -> list[Track]:
        self.buf.append(track)
        return self._drain(final=False)

    def finish(self) -> list[Track]:
        return self._drain(final=True)

    def _same(self, a: Track, shot: int) -> bool:
        return a[1] is not None and a[2] == shot

    def _drain(self, final: bool) -> list[Track]:
        out: list[Track] = []
        h = self.half
        while self.k < len(self.buf):
            i, vec, shot, detected = self.buf[self.k]
            if vec is None:
                out.append(self.buf[self.k])
                self.k += 1
                continue
            after, closed = 0, final
            for e in self.buf[self.k + 1 : self.k + 1 + h]:
                if not self._same(e, shot):
                    closed = True
                    break
                after += 1
            if after < h and not closed:
                break  # wait for more frames
            before = 0
            for e in reversed(self.buf[max(0, self.k - h) : self.k]):
                if not self._same(e, shot):
                    break
                before += 1
            r = min(h, before, after)
            window = np.stack([e[1] for e in self.buf[self.k - r : self.k + r + 1]])
            out.append((i, _fit_weights(r) @ window, shot, detected))
            self.k += 1
        drop = max(0, self.k - h)
        if drop:
            del self.buf[:drop]
            self.k -= drop
        return out


class Tracker:
    """Detection, face choice, gap filling and crop smoothing over a stream of frames."""

    def __init__(self, opts: VideoOptions) -> None:
        self.opts = opts
        self.filler = GapFiller(opts.max_gap)
        self.smoother = WindowSmoother(opts.smooth_window)
        self.previous: np.ndarray | None = None

    @property
    def shots(self) -> int:
        return self.filler.shots

    def detect(self, pixels: np.ndarray) -> np.ndarray | None:
        vec = pick_face(detect_faces(Image.fromarray(pixels)), self.previous, self.opts.min_qsize)
        if vec is not None:
            self.previous = vec
        return vec

    def run(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, Track, np.ndarray | None]]:
        """(pixels, smoothed track, raw detection vector or None) for every frame, in order.

        A frame is yielded once its crop is decided: at most ``max_gap + 1 + window // 2`` frames
        after it was read, which bounds the look-ahead held in memory.
        """
        waiting: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        shape: tuple[int, ...] | None = None

        def decided(tracks: list[Track]) -> Iterator[tuple[np.ndarray, Track, np.ndarray | None]]:
            for track in tracks:
                for smooth in self.smoother.push(track):
                    pixels, raw = waiting.pop(smooth[0])
                    yield pixels, smooth, raw

        for i, pixels in enumerate(frames):
            if shape is None:
                shape = pixels.shape
            elif pixels.shape != shape:
                raise VideoError(f"frame {i} is {pixels.shape[1]}x{pixels.shape[0]}, the first {shape[1]}x{shape[0]}")
            raw = self.detect(pixels)
            waiting[i] = (pixels, raw)
            yield from decided(self.filler.push(i, raw))
        yield from decided(self.filler.finish())
        for smooth in self.smoother.finish():
            pixels, raw = waiting.pop(smooth[0])
            yield pixels, smooth, raw


# ------------------------------------------------------------------------------------------ editing
@dataclass
class VideoOptions:
    attr: str
    strength: float = 0.0
    ramp: tuple[float, float] | None = None  # strength from A on the first frame to B on the last
    batch_size: int = 4
    precision: str = "fp32"
    smooth_window: int = DEFAULT_SMOOTH_WINDOW
    latent_smooth: float = 0.0  # EMA weight of the previous frame's W+ (0: off)
    fps: float | None = None  # frame rate of a folder of frames (default 25)
    max_gap: int = MAX_GAP
    min_qsize: float = MIN_QSIZE


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


@dataclass
class _Frame:
    index: int
    pixels: np.ndarray
    track: Track | None = None
    face: AlignedFace | None = None
    latent: torch.Tensor | None = None  # [n_latent, dim] float32 cpu
    distortion: np.ndarray | None = None  # [3, 256, 256] float16


class _Editing:
    """Latent smoothing, edit, decode and paste-back of batches of frames, in frame order."""

    def __init__(self, model: HFGI, editor: Editor, opts: VideoOptions, n_frames: int | None) -> None:
        if opts.ramp is not None and not n_frames:
            raise VideoError("--strength-ramp needs the number of frames, which this input does not tell")
        self.model, self.editor, self.opts, self.n_frames = model, editor, opts, n_frames
        self._ema: tuple[int, int, torch.Tensor] | None = None  # (frame index, shot, smoothed W+)

    def strength(self, index: int) -> float:
        if self.opts.ramp is None:
            return self.opts.strength
        a, b = self.opts.ramp
        n = max(1, (self.n_frames or 1) - 1)
        return a + (b - a) * min(index, n) / n

    def smoothed(self, frame: _Frame) -> torch.Tensor:
        assert frame.latent is not None and frame.track is not None
        a = self.opts.latent_smooth
        shot = frame.track[2]
        w = frame.latent
        if a > 0 and self._ema is not None and self._ema[0] == frame.index - 1 and self._ema[1] == shot:
            w = a * self._ema[2] + (1.0 - a) * w
        self._ema = (frame.index, shot, w)
        return w

    @torch.inference_mode()
    def render(self, frames: list[_Frame]) -> list[np.ndarray]:
        faces = [f for f in frames if f.face is not None]
        if faces:
            device = self.model.device
            latent = torch.stack([self.smoothed(f) for f in faces]).to(device)
            if self.opts.ramp is None:
                codes = self.editor.apply(latent, EditSpec(self.opts.attr, self.opts.strength))
            else:
                specs = [EditSpec(self.opts.attr, self.strength(f.index)) for f in faces]
                codes = torch.cat([self.editor.apply(latent[k : k + 1], spec) for k, spec in enumerate(specs)])
            distortion = torch.from_numpy(np.stack([f.distortion for f in faces])).float().to(device)
            with autocast_context(device, self.opts.precision):
                images = self.model.decode(codes, distortion).float().cpu()
            for f, img in zip(faces, images):
                photo = Image.fromarray(f.pixels)
                assert f.face is not None
                f.pixels = np.asarray(paste_back(photo, [(hio.tensor_to_image(img), f.face)]))
        return [f.pixels for f in frames]


@contextlib.contextmanager
def _temp_beside(final: Path, suffix: str) -> Iterator[Path]:
    """A temporary file name in ``final``'s folder, removed on exit unless it was renamed away."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    path = Path(tmp)
    os.chmod(path, hio.FILE_MODE)  # mkstemp makes 0600; the outputs get the usual permissions
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class _Output:
    """The video writer plus the final audio mux and rename."""

    def __init__(self, stack: contextlib.ExitStack, output: Path, size: tuple[int, int], fps: float) -> None:
        self.output, self.fps = output, fps
        self.video_tmp = stack.enter_context(_temp_beside(output, ".video.mp4"))
        self.mux_tmp = stack.enter_context(_temp_beside(output, ".mux.mp4"))
        self.writer = H264Writer(self.video_tmp, size, fps)
        stack.callback(self.writer.close)
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(frame)
        self.frames += 1

    def finish(self, audio_from: Path | None) -> tuple[Path, bool]:
        """Close the encoder and add the audio: (the complete temporary file, whether audio was copied)."""
        self.writer.close()
        if self.frames == 0:
            raise VideoError("the input has no frames")
        if audio_from is not None and has_audio_stream(audio_from):
            mux_audio(self.video_tmp, audio_from, self.mux_tmp, self.frames / self.fps)
            return self.mux_tmp, True
        return self.video_tmp, False


def _max_pending(opts: VideoOptions) -> int:
    """Frames held for one model batch at most (a long stretch without a face must not pile up)."""
    return max(16, 2 * opts.batch_size)


def _check_output(output: Path) -> None:
    if output.suffix.lower() != ".mp4":
        raise ValueError(f"-o {output}: the output must be an .mp4 file")
    if output.is_dir():
        raise ValueError(f"-o {output}: is a folder")


def edit_video(
    model: HFGI,
    editor: Editor,
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    opts: VideoOptions,
    on_progress: ProgressCallback | None = None,
) -> VideoResult:
    """Detect, smooth, invert, edit and paste back every frame of ``source``; write ``output`` (.mp4),
    ``output.pt`` and ``output.distortion.npy``."""
    import time

    started = time.perf_counter()
    output = Path(output)
    _check_output(output)
    src = open_source(source, opts.fps, exact_count=opts.ramp is not None)
    pt_path = output.with_suffix(".pt")
    npy_path = output.with_suffix(".distortion.npy")
    size = ENCODER_INPUT_SIZE
    configure_backends(model.device, opts.precision)
    editing = _Editing(model, editor, opts, src.n_frames)
    tracker = Tracker(opts)
    batch: list[_Frame] = []
    rec: dict[str, list[Any]] = {k: [] for k in ("latent", "found", "detected", "quad", "raw_quad", "landmarks",
                                                 "segment", "distortion_row")}
    n_latent, dim = model.n_latent, model.config.style_dim

    with contextlib.ExitStack() as stack:
        out = _Output(stack, output, src.size, src.fps)
        npy_tmp = stack.enter_context(_temp_beside(npy_path, ".part"))
        npy = _NpyAppender(npy_tmp, (3, size, size))
        stack.callback(npy.close)

        def flush(final: bool = False) -> None:
            faces = [f for f in batch if f.face is not None]
            if not final and len(faces) < opts.batch_size and len(batch) < _max_pending(opts):
                return
            if faces:
                x = torch.stack([hio.image_to_tensor(f.face.image, size) for f in faces])  # type: ignore[union-attr]
                with torch.inference_mode(), autocast_context(model.device, opts.precision):
                    enc = model.encode(x.to(model.device))
                dist16 = enc["distortion"].float().cpu().half().numpy()
                for k, f in enumerate(faces):
                    f.latent = enc["latent"][k].float().cpu()
                    # the edit decodes the float16 map that is stored, so re-runs give the same pixels
                    f.distortion = dist16[k]
                    f.face.image = Image.new("RGB", (1, 1))  # type: ignore[union-attr]  # crop no longer needed
                    rec["distortion_row"][f.index] = npy.rows
                    rec["latent"][f.index] = f.latent
                    npy.append(dist16[k])
            for pixels in editing.render(batch):
                out.write(pixels)
            if on_progress:
                on_progress(out.frames, src.n_frames)
            batch.clear()

        for pixels, track, raw in tracker.run(iter_frames(src)):
            i, vec, shot, detected = track
            frame = _Frame(i, pixels, track)
            rec["raw_quad"].append(vector_quad(raw) if raw is not None else np.full((4, 2), np.nan))
            rec["found"].append(vec is not None)
            rec["detected"].append(detected)
            rec["segment"].append(shot)
            rec["quad"].append(vector_quad(vec) if vec is not None else np.full((4, 2), np.nan))
            rec["landmarks"].append(vector_landmarks(vec) if vec is not None else np.full((_N_LM, 2), np.nan))
            rec["latent"].append(None)
            rec["distortion_row"].append(-1)
            if vec is not None:
                frame.face = align_quad(Image.fromarray(pixels), vector_quad(vec), size, vector_landmarks(vec))
            batch.append(frame)
            flush()
        flush(final=True)
        npy.close()
        frames = out.frames

        zero = torch.zeros(n_latent, dim)
        record = {
            "format": VIDEO_FORMAT,
            "source": str(src.path.resolve()),
            "source_kind": src.kind,
            "fps": src.fps,
            "size": list(src.size),
            "n_frames": frames,
            "checkpoint": model.source,
            "n_latent": n_latent,
            "style_dim": dim,
            "latent": torch.stack([t if t is not None else zero for t in rec["latent"]]) if frames else zero[:0],
            "found": torch.tensor(rec["found"], dtype=torch.bool),
            "detected": torch.tensor(rec["detected"], dtype=torch.bool),
            "quad": torch.from_numpy(np.array(rec["quad"], dtype=np.float64).reshape(-1, 4, 2)),
            "raw_quad": torch.from_numpy(np.array(rec["raw_quad"], dtype=np.float64).reshape(-1, 4, 2)),
            "landmarks": torch.from_numpy(np.array(rec["landmarks"], dtype=np.float32).reshape(-1, _N_LM, 2)),
            "segment": torch.tensor(rec["segment"], dtype=torch.int64),
            "distortion_file": npy_path.name,
            "distortion_row": torch.tensor(rec["distortion_row"], dtype=torch.int64),
            "smooth_window": opts.smooth_window,
            "edit": {"attr": opts.attr, "strength": opts.strength, "ramp": opts.ramp,
                     "latent_smooth": opts.latent_smooth},
        }
        done, audio = out.finish(src.path if src.kind == "video" else None)
        pt_tmp = stack.enter_context(_temp_beside(pt_path, ".part"))
        torch.save(record, pt_tmp)
        # the distortion maps and the codes first, so an existing OUTPUT.mp4 always has its latents
        os.replace(npy_tmp, npy_path)
        os.replace(pt_tmp, pt_path)
        os.replace(done, output)
    found = int(sum(rec["found"]))
    return VideoResult(output, pt_path, frames, found, int(sum(rec["detected"])), tracker.shots, audio, False,
                       time.perf_counter() - started)


def read_video_latents(path: str | os.PathLike[str], n_latent: int, style_dim: int) -> dict[str, Any]:
    """Load ``OUT.pt`` written by ``edit_video`` and check that it fits the model."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VideoError(f"{path}: not a latent file ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(data, dict) or data.get("format") != VIDEO_FORMAT:
        raise VideoError(f"{path}: not a video latent file written by `hfgi video`")
    if (data["n_latent"], data["style_dim"]) != (n_latent, style_dim):
        raise VideoError(
            f"{path}: codes of {data['n_latent']}x{data['style_dim']} do not fit this model ({n_latent}x{style_dim})"
        )
    return data


def edit_video_from_latents(
    model: HFGI,
    editor: Editor,
    latents: str | os.PathLike[str],
    output: str | os.PathLike[str],
    opts: VideoOptions,
    on_progress: ProgressCallback | None = None,
) -> VideoResult:
    """Re-run an edit from ``OUT.pt`` (+ its distortion maps) on the original frames: no detection,
    no encoder; only the generator passes of the edit run. Writes ``output`` (.mp4) only."""
    import time

    started = time.perf_counter()
    output, latents = Path(output), Path(latents)
    _check_output(output)
    data = read_video_latents(latents, model.n_latent, model.config.style_dim)
    source = Path(data["source"])
    if not source.exists():
        raise VideoError(f"{latents}: its source {source} is gone (the frames are needed for paste-back)")
    src = open_source(source, float(data["fps"]))
    if list(src.size) != list(data["size"]):
        raise VideoError(f"{source}: now {src.size[0]}x{src.size[1]}, the latents were made at {data['size']}")
    n = int(data["n_frames"])
    rows = _NpyRows(latents.parent / data["distortion_file"])
    configure_backends(model.device, opts.precision)
    editing = _Editing(model, editor, opts, n)
    found, quads, marks = data["found"], data["quad"].numpy(), data["landmarks"].numpy().astype(np.float64)
    batch: list[_Frame] = []
    with contextlib.ExitStack() as stack:
        stack.callback(rows.close)
        out = _Output(stack, output, src.size, src.fps)

        def flush(final: bool = False) -> None:
            if final or sum(f.face is not None for f in batch) >= opts.batch_size or len(batch) >= _max_pending(opts):
                for pixels in editing.render(batch):
                    out.write(pixels)
                batch.clear()
                if on_progress:
                    on_progress(out.frames, n)

        for i, pixels in enumerate(iter_frames(src)):
            if i >= n:
                break
            frame = _Frame(i, pixels, (i, None, int(data["segment"][i]), False))
            if bool(found[i]):
                frame.face = AlignedFace(Image.new("RGB", (1, 1)), quads[i], marks[i], src.size, str(source))
                frame.latent = data["latent"][i].float()
                frame.distortion = rows[int(data["distortion_row"][i])]
            batch.append(frame)
            flush()
        flush(final=True)
        if out.frames != n:
            raise VideoError(f"{source}: has {out.frames} frames, the latents were made from {n}")
        done, audio = out.finish(src.path if src.kind == "video" else None)
        os.replace(done, output)
    return VideoResult(output, None, n, int(found.sum()), int(data["detected"].sum()),
                       int(data["segment"].max()) + 1 if n else 0, audio, True, time.perf_counter() - started)
