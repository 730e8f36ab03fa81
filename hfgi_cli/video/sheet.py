"""The contact sheet of a clip's tracks: each person's largest detected face, named by its track
id and frame span, so ``--faces`` can be chosen by eye."""

from __future__ import annotations

from PIL import Image

from ..previews import grid
from .tracking import TrackInfo

SHEET_CELL = 256


def track_label(track: TrackInfo) -> str:
    return f"face {track.id}: frames {track.first}-{track.last}"


def contact_sheet(tracks: list[TrackInfo], columns: int = 6) -> Image.Image | None:
    """One labelled cell per track with a crop (None when no track has one)."""
    panels = [(track_label(t), t.best_crop) for t in tracks if t.best_crop is not None]
    return grid(panels, columns=columns, cell=SHEET_CELL) if panels else None
