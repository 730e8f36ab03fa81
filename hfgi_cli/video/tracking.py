"""Which face, and where its crop square is, on every frame: tracking and temporal smoothing.

Editing every frame on its own (as the paper does) flickers: the per-frame FFHQ crop jitters with
the landmark noise, and the model sees a slightly different crop each frame. Following "Stitch it
in Time" (Tzaban et al. 2022):

1. the 68 landmarks are detected on every frame and ONE face is followed: the largest at the
   start, then the one nearest to the previous frame's face (a face that jumped further than a
   shot cut allows is replaced by the largest one);
2. each detection becomes the FFHQ crop square, written as centre ``c`` and half-side vector
   ``x`` (the square's corners are ``c -+ x -+ y``, ``y`` = ``x`` turned 90 degrees, so averaging
   (c, x) is averaging the corners); frames without a detection are filled from their neighbours
   (linear interpolation across gaps of at most ``max_gap`` frames, else the nearest detection
   is held for up to ``max_gap`` frames, else the frame is left as it is), and the clip is split
   into shots wherever the square jumps (centre moves more than ``CUT_SHIFT`` of the face size,
   or the size changes more than ``CUT_SCALE`` x);
3. (c, x) and the landmarks are smoothed over a centred window of ``smooth_window`` frames that
   never crosses a shot boundary (a local quadratic least-squares fit, Savitzky-Golay, so a
   moving head is followed without lag).

Everything streams: a frame is decided at most ``max_gap + 1 + smooth_window // 2`` frames after
it was read.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator

import numpy as np
from PIL import Image

from ..align import MIN_QSIZE, face_quad
from ..detect import detect_faces
from .ffmpeg import VideoError

DEFAULT_SMOOTH_WINDOW = 9
MAX_GAP = 10
"""Frames without a detection that are filled from their neighbours (see the module docstring)."""
CUT_SHIFT = 0.4
"""A shot cut: the crop centre moves by more than this fraction of the crop side between detections."""
CUT_SCALE = 1.3
"""... or the crop side changes by more than this factor."""
N_LANDMARKS = 68


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
    return vec[4:].reshape(N_LANDMARKS, 2)


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

    def __init__(
        self, smooth_window: int = DEFAULT_SMOOTH_WINDOW, max_gap: int = MAX_GAP, min_qsize: float = MIN_QSIZE
    ) -> None:
        self.min_qsize = min_qsize
        self.filler = GapFiller(max_gap)
        self.smoother = WindowSmoother(smooth_window)
        self.previous: np.ndarray | None = None

    @property
    def shots(self) -> int:
        return self.filler.shots

    def detect(self, pixels: np.ndarray) -> np.ndarray | None:
        vec = pick_face(detect_faces(Image.fromarray(pixels)), self.previous, self.min_qsize)
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
