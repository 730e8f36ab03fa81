"""``hfgi align``: photos -> FFHQ-aligned face crops on disk, each with its JSON sidecar."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .align import DEFAULT_SIZE, MIN_QSIZE, save_aligned
from .detect import find_faces
from .images import load_picture
from .inputs import InputError, InputItem, face_name


@dataclass
class AlignReport:
    """What ``align_items`` did: written crops, photos without a usable face, and notes."""

    written: list[Path] = field(default_factory=list)
    failed: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def align_items(
    items: Sequence[InputItem],
    out_dir: str | os.PathLike[str],
    size: int = DEFAULT_SIZE,
    *,
    max_faces: int | None = None,
    min_qsize: float = MIN_QSIZE,
    min_face: float | None = None,
    detector: str = "hog",
    on_note: Callable[[str], None] | None = None,
    on_photo_done: Callable[[Path], None] | None = None,
) -> AlignReport:
    """Align every face of every photo into ``OUT/<item>_<k>.png`` (+ ``.json``).

    ``k`` counts the written faces of one photo in reading order (``inputs.face_name``); ``<item>`` is the input's
    place under OUT as ``inputs.collect_inputs`` lays it out (the same rule as ``invert``/``edit``).
    A photo that cannot be read or has no usable face is reported and the run goes on.
    ``detector``: see ``detect.detect_faces``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = AlignReport()

    def note(msg: str) -> None:
        report.notes.append(msg)
        if on_note:
            on_note(msg)

    for item in items:
        try:
            photo = load_picture(item.path)
            found = find_faces(photo.image, size, max_faces=max_faces, min_qsize=min_qsize, min_face=min_face,
                               source=str(item.path), detector=detector)
        except Exception as exc:  # one bad photo must not end the run (load_picture names the cause)
            note(str(exc) if isinstance(exc, InputError) else f"{item.path}: cannot read ({exc})")
            report.failed.append(item.path)
        else:
            for line in found.notes(str(item.path)):
                note(line)
            problem = found.problem(str(item.path))
            if problem:
                note(problem)
                report.failed.append(item.path)
            for k, face in enumerate(found.faces):
                target = out / item.rel.parent / (face_name(item.rel.name, k, len(found.faces)) + ".png")
                save_aligned(face, target)
                report.written.append(target)
        if on_photo_done:
            on_photo_done(item.path)
    return report
