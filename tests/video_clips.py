"""Synthetic clips for the video tests and benchmarks: a photo moved along a known smooth path.

Frame t shows the photo scaled, rotated and shifted so that the photo point ``anchor`` lands on
``centre(t)``; the same similarity transform maps the photo's own FFHQ crop square to the true
square of frame t, which is what the tracked crop should follow.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

Motion = Callable[[float], tuple[float, float, float, float]]
"""phase in [0, 1] -> (centre x, centre y, scale, angle in degrees)."""


@dataclass
class Clip:
    frames: list[np.ndarray]
    true_quads: np.ndarray  # (T, 4, 2)
    fps: float


def similarity(anchor: np.ndarray, centre: tuple[float, float], scale: float, degrees: float) -> np.ndarray:
    """2x3 matrix: photo point -> frame point (rotate by ``degrees`` and scale about ``anchor``)."""
    a = math.radians(degrees)
    r = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.column_stack([r, np.asarray(centre) - r @ anchor])


def render(photo: Image.Image, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The frame (pixel-centre coordinates) of ``photo`` under the photo->frame similarity ``m``."""
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    a, t = inv[:, :2], inv[:, 2]
    # PIL maps output (x + 0.5, y + 0.5) to a continuous source point; index coordinates are 0.5 less
    off = t + 0.5 - a @ np.array([0.5, 0.5])
    data = (a[0, 0], a[0, 1], off[0], a[1, 0], a[1, 1], off[1])
    out = photo.transform(size, Image.Transform.AFFINE, data, Image.Resampling.BICUBIC, fillcolor=(90, 90, 90))
    return np.asarray(out.convert("RGB"))


def make_clip(photo: Image.Image, quad: np.ndarray, anchor: np.ndarray, motion: Motion, n: int,
              size: tuple[int, int] = (320, 240), fps: float = 25.0, noise: float = 0.0, seed: int = 0) -> Clip:
    rng = np.random.default_rng(seed)
    frames, quads = [], []
    for t in range(n):
        cx, cy, s, deg = motion(t / max(1, n - 1))
        m = similarity(anchor, (cx, cy), s, deg)
        frame = render(photo, m, size)
        if noise:
            frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        frames.append(frame)
        quads.append(quad @ m[:, :2].T + m[:, 2])
    return Clip(frames, np.array(quads), fps)


def write_tone(path: Path, seconds: float, rate: int = 44100, hz: float = 440.0) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * 32767 * np.sin(2 * math.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def write_mp4(path: Path, frames: list[np.ndarray], fps: float, audio: bool = True) -> None:
    """H.264 (near-lossless, CRF 10) with a 440 Hz tone as AAC when ``audio``."""
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    wav = path.with_suffix(".wav")
    if audio:
        write_tone(wav, len(frames) / fps + 0.5)
    gen = imageio_ffmpeg.write_frames(
        str(path), (w, h), fps=fps, codec="libx264", quality=None, macro_block_size=1, ffmpeg_log_level="error",
        output_params=["-crf", "10", "-shortest"], audio_path=str(wav) if audio else None,
        audio_codec="aac" if audio else None,
    )
    gen.send(None)
    for f in frames:
        gen.send(np.ascontiguousarray(f))
    gen.close()
    if audio:
        wav.unlink()


def read_mp4(path: Path) -> tuple[list[np.ndarray], dict]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in reader]
    return frames, meta


def jitter(quads: np.ndarray) -> float:
    """RMS over frames and corners of the second difference of the quad corners (pixels)."""
    d2 = quads[2:] - 2 * quads[1:-1] + quads[:-2]
    return float(np.sqrt(np.mean(np.sum(d2**2, axis=-1))))


# ------------------------------------------------------------------------------------ several people
@dataclass
class Person:
    """One face of a scene: an aligned face crop (its FFHQ square is the whole crop) moved by
    ``motion``; ``shown(t)`` False hides it on frame t (left the picture, or another shot)."""

    photo: Image.Image
    motion: Motion
    shown: Callable[[int], bool] = lambda t: True


@dataclass
class Scene:
    frames: list[np.ndarray]
    true_quads: np.ndarray  # (T, people, 4, 2), NaN where the person is not shown
    fps: float


def face_mask(side: int) -> Image.Image:
    """A soft ellipse over the face of an aligned crop (its corners, CelebA-HQ's background, stay
    out of the scene)."""
    u = (np.arange(side) + 0.5) / side - 0.5
    r = np.hypot(u[None, :] / 0.46, u[:, None] / 0.5)
    return Image.fromarray(np.uint8(255 * np.clip((1.0 - r) / 0.08, 0, 1)), "L")


def make_scene(people: list[Person], n: int, size: tuple[int, int] = (320, 240), fps: float = 25.0,
               background: tuple[int, int, int] = (90, 90, 90), noise: float = 0.0, seed: int = 0) -> Scene:
    """Frames with every shown person drawn on a plain background, the larger (nearer) face on top
    (``noise``: Gaussian noise of that standard deviation added to each frame)."""
    rng = np.random.default_rng(seed)
    quads = np.full((n, len(people), 4, 2), np.nan)
    frames = []
    for t in range(n):
        frame = Image.new("RGB", size, background)
        placed = []
        for k, person in enumerate(people):
            if not person.shown(t):
                continue
            side = person.photo.width
            square = np.array([[0, 0], [0, side], [side, side], [side, 0]], np.float64)
            cx, cy, s, deg = person.motion(t / max(1, n - 1))
            m = similarity(np.array([side / 2, side / 2]), (cx, cy), s, deg)
            quads[t, k] = square @ m[:, :2].T + m[:, 2]
            placed.append((s, k, m, person.photo))
        for _s, _k, m, photo in sorted(placed, key=lambda p: p[0]):
            rgb = Image.fromarray(render(photo.convert("RGB"), m, size))
            alpha = Image.fromarray(render(face_mask(photo.width).convert("RGB"), m, size)[..., 0], "L")
            frame.paste(rgb, (0, 0), alpha)
        pixels = np.asarray(frame)
        if noise:
            pixels = np.clip(pixels + rng.normal(0, noise, pixels.shape), 0, 255).astype(np.uint8)
        frames.append(pixels)
    return Scene(frames, quads, fps)
