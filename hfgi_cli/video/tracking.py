"""Every face, and where its crop square is, on every frame: tracking and temporal smoothing.

Editing every frame on its own (as the paper does) flickers: the per-frame FFHQ crop jitters with
the landmark noise, and the model sees a slightly different crop each frame. Following "Stitch it
in Time" (Tzaban et al. 2022), per face:

1. the 68 landmarks of every face are detected on every frame, and each detection is given to a
   track (``Associator``): by position (the square of the track's last detection, within
   ``max_gap`` frames and no further than a shot cut allows) and by identity (dlib's 128-D
   descriptor, as ``quality`` uses it, against the mean descriptor of the track). A detection
   near exactly one track, which was seen on the frame before, has no other detection near and
   looks as it did there (a 16 px grey thumbnail correlated above ``SAME_LOOK``: a shot cut that
   puts another person in the same place fails it), keeps it without a descriptor; every other
   case (two faces close or crossing, a face seen again after a gap, a cut or leaving the
   picture, a new face) is decided by the descriptors, one assignment for the frame (Hungarian).
   A face far from where its track was is given that track only when the descriptors say it is
   the same person (distance below ``REIDENTIFY``); a detection no track takes starts a new
   track, numbered in order of appearance;
2. each detection becomes the FFHQ crop square, written as centre ``c`` and half-side vector
   ``x`` (the square's corners are ``c -+ x -+ y``, ``y`` = ``x`` turned 90 degrees, so averaging
   (c, x) is averaging the corners); frames of a track without a detection are filled from its
   neighbours (linear interpolation across gaps of at most ``max_gap`` frames, else the nearest
   detection is held for up to ``MAX_HOLD`` frames, else the face is left as it is), and a
   track is split into segments wherever its square jumps (centre moves more than ``CUT_SHIFT``
   of the face size a frame, or the size changes more than ``CUT_SCALE`` x: a shot cut);
3. (c, x) and the landmarks are smoothed over a centred window of ``smooth_window`` frames that
   never crosses a segment boundary (a local quadratic least-squares fit, Savitzky-Golay, so a
   moving head is followed without lag).

Everything streams: a frame is decided, for every track, at most ``max_gap + 1 +
smooth_window // 2`` frames after it was read.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..align import MIN_QSIZE, align_quad, face_quad
from ..detect import detect_faces
from .ffmpeg import VideoError

DEFAULT_SMOOTH_WINDOW = 9
MAX_GAP = 10
"""Frames without a detection that are filled from their neighbours (see the module docstring)."""
MAX_HOLD = 3
"""Frames a detection is held past the end of its track's stretch: a face that left the picture
or the shot is not edited into the place where it was."""
REIDENTIFY = 0.55
"""Descriptor distance below which a face far from every track's last place is that track's
person (dlib's same-person threshold is 0.6; the mean descriptor of a track is steadier than one)."""
CONTINUE = 0.75
"""Descriptor distance above which a face near a track's last place is not that track's person."""
SAME_LOOK = 0.9
"""Correlation of a face's thumbnail with its track's last one above which position alone decides
(the same face a frame later: ~0.98; two different aligned faces of the shared set: at most 0.72)."""
DESCRIBE_EVERY = 25
"""Frames after which a track's descriptor is refreshed from an unambiguous, unoccluded detection."""
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


def continues(seen: int, seen_vec: np.ndarray, frame: int, vec: np.ndarray, max_gap: int) -> bool:
    """Whether a detection at ``frame`` can continue one at ``seen``: at most ``max_gap`` frames
    between them and their squares not a cut apart (the shift allowed grows with the frames)."""
    return frame - seen - 1 <= max_gap and not is_cut(seen_vec, vec, CUT_SHIFT * (frame - seen))


Track = tuple[int, "np.ndarray | None", int, bool]
"""(frame index, crop vector or None, shot number or -1, detected on this frame)."""


class GapFiller:
    """Stage 1: fill frames without a detection from their neighbours and number the shots.

    Emits every frame once, in order, at most ``max_gap + 1`` frames after it was pushed. A
    detection is held (before the first, after the last of a stretch) for at most ``max_hold``
    frames (default ``max_gap``).
    """

    def __init__(self, max_gap: int = MAX_GAP, max_hold: int | None = None) -> None:
        self.max_gap = max_gap
        self.max_hold = max_gap if max_hold is None else max_hold
        self.last: tuple[int, np.ndarray, int] | None = None
        self.pending: list[int] = []
        self.shots = 0

    def _hold_previous(self, j: int) -> Track:
        if self.last is not None and j - self.last[0] <= self.max_hold:
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
        if last is not None and continues(last[0], last[1], i, vec, self.max_gap):
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
                if before <= self.max_hold and before <= after:
                    out.append(self._hold_previous(j))
                elif after <= self.max_hold:
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




# ------------------------------------------------------------------------------------ association
def _thumbnail(grey: Image.Image, vec: np.ndarray, n: int = 16) -> np.ndarray:
    """The face's centre (eyes to mouth) as a zero-mean, unit-norm n x n grey patch."""
    c, r = vec[0:2], 0.6 * float(np.hypot(*vec[2:4]))
    patch = grey.resize((n, n), Image.Resampling.BILINEAR, box=(c[0] - r, c[1] - r, c[0] + r, c[1] + r))
    t = np.asarray(patch, np.float32).ravel()
    t = t - t.mean()
    return t / (float(np.linalg.norm(t)) + 1e-6)


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    """Two crop squares close enough that one face may hide part of the other."""
    return bool(np.hypot(*(a[0:2] - b[0:2])) < 0.7 * (np.hypot(*a[2:4]) + np.hypot(*b[2:4])))


@dataclass
class TrackInfo:
    """What is known of one track (one person) once the clip has been read."""

    id: int
    first: int
    """First frame with a detection."""
    last: int
    """Last frame with a detection."""
    detected: int = 0
    """Frames with a detection."""
    best_frame: int = -1
    best_quad: np.ndarray | None = None
    """The square of the track's largest detection (for a contact sheet)."""
    best_crop: Image.Image | None = None
    """That detection's aligned crop, ``SHEET_CROP`` px."""
    descriptor_sum: np.ndarray = field(default_factory=lambda: np.zeros(128))
    descriptor_count: int = 0
    described: int = -1
    """Frame of the last descriptor added."""

    @property
    def descriptor(self) -> np.ndarray | None:
        return self.descriptor_sum / self.descriptor_count if self.descriptor_count else None


SHEET_CROP = 128


class Associator:
    """Step 1 of the module docstring: detections of one frame -> track ids."""

    def __init__(self, max_gap: int = MAX_GAP) -> None:
        self.max_gap = max_gap
        # a track's id is its index here: tracks are appended with the next index, never removed,
        # so ids, columns of ``near`` and ``cost``, and indices into this list are one number
        self.tracks: list[TrackInfo] = []
        # track id -> (vector, thumbnail) of its last detection, at frame ``self.tracks[id].last``
        self._last: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.descriptors_computed = 0

    def _near(self, track: int, frame: int, vec: np.ndarray) -> bool:
        seen = self._last.get(track)
        return seen is not None and continues(self.tracks[track].last, seen[0], frame, vec, self.max_gap)

    def assign(self, frame: int, pixels: np.ndarray, faces: list[np.ndarray]) -> list[int]:
        """The track id of each face (landmarks) of frame ``frame``; new faces start new tracks."""
        vecs = [quad_vector(lm) for lm in faces]
        grey = Image.fromarray(pixels).convert("L")
        thumbs = [_thumbnail(grey, v) for v in vecs]
        ids = [t.id for t in self.tracks]
        near = np.array([[self._near(t, frame, v) for t in ids] for v in vecs], dtype=bool).reshape(len(vecs), len(ids))
        described: dict[int, np.ndarray] = {}

        def describe(k: int) -> np.ndarray:
            if k not in described:
                from ..quality import descriptor

                described[k] = descriptor(pixels, faces[k])
                self.descriptors_computed += 1
            return described[k]

        alone = [not any(_overlaps(v, w) for j, w in enumerate(vecs) if j != k) for k, v in enumerate(vecs)]
        for k in range(len(vecs)):
            tracks_near = np.flatnonzero(near[k])
            only = self.tracks[tracks_near[0]] if len(tracks_near) == 1 else None
            plain = (only is not None and near[:, tracks_near[0]].sum() == 1 and only.last == frame - 1
                     and float(thumbs[k] @ self._last[only.id][1]) > SAME_LOOK)
            stale = plain and frame - self.tracks[tracks_near[0]].described >= DESCRIBE_EVERY and alone[k]
            if not plain or stale:
                describe(k)
        cost = np.full((len(vecs), len(ids)), np.inf)
        for k, v in enumerate(vecs):
            for j, track in enumerate(self.tracks):
                mean = track.descriptor
                distance = float(np.linalg.norm(described[k] - mean)) if k in described and mean is not None else None
                if near[k, j]:
                    seen = self._last[track.id][0]
                    shift = float(np.hypot(*(v[0:2] - seen[0:2]))) / (2.0 * float(np.hypot(*seen[2:4])))
                    if distance is None:
                        cost[k, j] = shift
                    elif distance < CONTINUE:
                        cost[k, j] = shift + distance
                elif distance is not None and distance < REIDENTIFY:
                    cost[k, j] = 1.0 + distance  # a near match is preferred to a re-identified one
        out = [-1] * len(vecs)
        if vecs and ids:
            from scipy.optimize import linear_sum_assignment

            rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, 1e6))
            for k, j in zip(rows, cols):
                if np.isfinite(cost[k, j]):
                    out[k] = ids[j]
        for k, v in enumerate(vecs):
            if out[k] < 0:
                describe(k)
                self.tracks.append(TrackInfo(len(self.tracks), frame, frame))
                out[k] = self.tracks[-1].id
            track = self.tracks[out[k]]
            track.last, track.detected = frame, track.detected + 1
            self._last[track.id] = (v, thumbs[k])
            if k in described and (alone[k] or not track.descriptor_count):  # a first one even if overlapped
                track.descriptor_sum = track.descriptor_sum + described[k]
                track.descriptor_count += 1
                track.described = frame
            if track.best_quad is None or np.hypot(*v[2:4]) > 1.05 * np.hypot(*track.best_quad[2:4]):
                track.best_frame, track.best_quad = frame, v
                track.best_crop = align_quad(Image.fromarray(pixels), vector_quad(v), SHEET_CROP).image
        return out


# ------------------------------------------------------------------------------------ the tracker
@dataclass
class TrackedFace:
    """One track on one frame, decided: its smoothed crop vector, segment and raw detection."""

    track: int
    vec: np.ndarray
    segment: int
    detected: bool
    raw: np.ndarray | None


class _TrackStages:
    """Steps 2 and 3 for one track."""

    def __init__(self, born: int, smooth_window: int, max_gap: int, max_hold: int) -> None:
        self.filler = GapFiller(max_gap, max_hold)
        self.smoother = WindowSmoother(smooth_window)
        self.next = born  # the next frame this track will decide
        self.decided: dict[int, Track] = {}

    def push(self, tracks: list[Track]) -> None:
        for track in tracks:
            self.take(self.smoother.push(track))

    def take(self, smooth: list[Track]) -> None:
        for s in smooth:
            if s[1] is not None:
                self.decided[s[0]] = s
            self.next = s[0] + 1


class Tracker:
    """Detection, association, gap filling and crop smoothing of every face over a stream of frames."""

    def __init__(
        self, smooth_window: int = DEFAULT_SMOOTH_WINDOW, max_gap: int = MAX_GAP, min_qsize: float = MIN_QSIZE,
        max_hold: int = MAX_HOLD,
    ) -> None:
        self.smooth_window, self.max_gap, self.max_hold, self.min_qsize = smooth_window, max_gap, max_hold, min_qsize
        self.associator = Associator(max_gap)
        self.stages: list[_TrackStages] = []

    @property
    def tracks(self) -> list[TrackInfo]:
        return self.associator.tracks

    @property
    def segments(self) -> int:
        """Segments over all tracks (a track seen in two shots has two)."""
        return sum(s.filler.shots for s in self.stages)

    def detect(self, pixels: np.ndarray) -> list[np.ndarray]:
        """Landmarks of the faces of a frame large enough to edit."""
        faces = detect_faces(Image.fromarray(pixels))
        return [lm for lm in faces if face_quad(lm)[1] >= self.min_qsize]

    def run(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[int, np.ndarray, list[TrackedFace]]]:
        """(frame index, pixels, its decided faces in track order) for every frame, in order.

        A frame is yielded once every track has decided it: at most ``max_gap + 1 + window // 2``
        frames after it was read, which bounds the look-ahead held in memory.
        """
        waiting: dict[int, tuple[np.ndarray, dict[int, np.ndarray]]] = {}
        shape: tuple[int, ...] | None = None
        emitted = 0

        def ready(final: bool) -> Iterator[tuple[int, np.ndarray, list[TrackedFace]]]:
            nonlocal emitted
            while emitted in waiting and (final or all(s.next > emitted for s in self.stages)):
                pixels, raw = waiting.pop(emitted)
                faces = []
                for t, stage in enumerate(self.stages):
                    decided = stage.decided.pop(emitted, None)
                    if decided is not None:
                        faces.append(TrackedFace(t, decided[1], decided[2], decided[3], raw.get(t)))
                yield emitted, pixels, faces
                emitted += 1

        for i, pixels in enumerate(frames):
            if shape is None:
                shape = pixels.shape
            elif pixels.shape != shape:
                raise VideoError(f"frame {i} is {pixels.shape[1]}x{pixels.shape[0]}, the first {shape[1]}x{shape[0]}")
            faces = self.detect(pixels)
            ids = self.associator.assign(i, pixels, faces)
            raw = {t: quad_vector(lm) for t, lm in zip(ids, faces)}
            while len(self.stages) < len(self.tracks):
                self.stages.append(_TrackStages(i, self.smooth_window, self.max_gap, self.max_hold))
            waiting[i] = (pixels, raw)
            for t, stage in enumerate(self.stages):
                stage.push(stage.filler.push(i, raw.get(t)))
            yield from ready(final=False)
        for stage in self.stages:
            stage.push(stage.filler.finish())
            stage.take(stage.smoother.finish())
        yield from ready(final=True)
