"""All ffmpeg I/O of ``hfgi video``: probing a clip, reading its frames, writing H.264, muxing audio.

A clip is a video file (anything ffmpeg reads, through ``imageio-ffmpeg``'s bundled binary), an
animated GIF (PIL) or a folder of frames. Frames stream through pipes one at a time.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from ..atomic import temp_beside
from ..images import read_image, to_rgb8
from ..inputs import IMAGE_EXTS

DEFAULT_FRAMES_FPS = 25.0
CRF = 18


class VideoError(Exception):
    """An input that cannot be read, a latent file that does not fit, or an encoder failure."""


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
        stdin=subprocess.DEVNULL, start_new_session=True,  # a Ctrl-C is ours to handle, not ffmpeg's
    )
    return proc.stderr


def count_frames(path: Path) -> int:
    """The exact number of video frames (ffmpeg reads the stream through without decoding it)."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
        capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL, start_new_session=True,
    )
    counts = re.findall(r"frame=\s*(\d+)", proc.stderr)
    if proc.returncode != 0 or not counts:
        last = (proc.stderr.strip().splitlines() or ["ffmpeg failed"])[-1][:120]
        raise VideoError(f"{path}: cannot count the frames ({last})")
    return int(counts[-1])


def has_audio_stream(path: Path) -> bool:
    return re.search(r"Stream #\S+.*: Audio:", ffmpeg_streams(path)) is not None


def open_source(path: str | os.PathLike[str], fps: float | None = None, exact_count: bool = False) -> VideoSource:
    """Probe ``path`` (no frames are kept). ``fps`` sets the rate of a folder of frames."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise VideoError(f"{path}: folder holds no image frames")
        first = read_image(files[0]) if files else None
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
        n_frames: int | None = count_frames(path)
    else:
        duration = float(meta.get("duration") or 0)
        n_frames = max(1, round(duration * rate)) if duration > 0 else None
    return VideoSource(path, "video", rate, (size[0], size[1]), n_frames, has_audio_stream(path))


def iter_frames(src: VideoSource) -> Iterator[np.ndarray]:
    """The clip's frames as (H, W, 3) uint8 arrays, one at a time."""
    w, h = src.size
    if src.kind == "frames":
        for p in src.files:
            img = read_image(p)
            if img.size != src.size:
                raise VideoError(f"{p}: frame of {img.size[0]}x{img.size[1]} in a {w}x{h} sequence")
            yield np.asarray(img)
        return
    if src.kind == "gif":
        with Image.open(src.path) as im:
            for frame in ImageSequence.Iterator(im):
                yield np.asarray(to_rgb8(frame.copy()))
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


class VideoOutput:
    """The H.264 writer of one output, then the audio mux and the rename into place.

    Both temporaries live beside the output and are removed on exit unless renamed, so an
    interrupted or failed run leaves no partial file.
    """

    def __init__(self, stack: contextlib.ExitStack, output: Path, size: tuple[int, int], fps: float) -> None:
        self.output, self.fps = output, fps
        self.video_tmp = stack.enter_context(temp_beside(output, ".video.mp4"))
        self.mux_tmp = stack.enter_context(temp_beside(output, ".mux.mp4"))
        self.writer = H264Writer(self.video_tmp, size, fps)
        stack.callback(self.writer.close)
        self.frames = 0
        self._done = self.video_tmp

    def write(self, frames: list[np.ndarray]) -> None:
        for frame in frames:
            self.writer.write(frame)
            self.frames += 1

    def finish(self, audio_from: Path | None) -> None:
        """Close the encoder and copy the audio track of ``audio_from`` (None: no audio) into the
        result, still under its temporary name."""
        self.writer.close()
        if self.frames == 0:
            raise VideoError("the input has no frames")
        self._done = self.video_tmp
        if audio_from is not None:
            mux_audio(self.video_tmp, audio_from, self.mux_tmp, self.frames / self.fps)
            self._done = self.mux_tmp

    def commit(self) -> None:
        """Rename the finished video into place (after ``finish``)."""
        os.replace(self._done, self.output)
