"""The contact sheet of a clip's tracks: each person's largest detected face, named by its track
id and frame span, so ``--faces`` can be chosen by eye."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..images import save_image
from ..previews import grid
from .tracking import TrackInfo

SHEET_CELL = 256


def track_label(track: TrackInfo) -> str:
    return f"face {track.id}: frames {track.first}-{track.last}"


def contact_sheet(tracks: list[TrackInfo], columns: int = 6) -> Image.Image | None:
    """One labelled cell per track with a crop (None when no track has one)."""
    panels = [(track_label(t), t.best_crop) for t in tracks if t.best_crop is not None]
    return grid(panels, columns=columns, cell=SHEET_CELL) if panels else None


def write_contact_sheet(tracks: list[TrackInfo], path: Path) -> bool:
    """Save ``contact_sheet(tracks)`` to ``path`` (its suffix picks JPEG or PNG); False, and no file,
    when no track has a crop."""
    picture = contact_sheet(tracks)
    if picture is None:
        return False
    save_image(picture, path, quality=92)
    return True
