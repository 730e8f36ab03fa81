"""Pictures to look at and choose from: a labelled strip per photo, a labelled grid per face.

``strip`` (``--preview``): the original with its faces boxed, the inversion, then each edit, side
by side at one height, small enough to browse. ``grid`` (``--sweep``): one face across strengths,
so a strength can be picked by eye before a whole folder is run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PREVIEW_HEIGHT = 512
GRID_CELL = 256
_LABEL_PAD = 4


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def _label(img: Image.Image, text: str) -> Image.Image:
    """``img`` with ``text`` in white on a dark band across its top."""
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = _font(max(12, out.height // 24))
    x0, y0, x1, y1 = draw.textbbox((_LABEL_PAD, _LABEL_PAD), text, font=font)
    draw.rectangle((0, 0, out.width, y1 + _LABEL_PAD), fill=(20, 20, 20))
    draw.text((_LABEL_PAD, _LABEL_PAD), text, fill=(255, 255, 255), font=font)
    return out


def _fit_height(img: Image.Image, height: int) -> Image.Image:
    width = max(1, round(img.width * height / img.height))
    return img.convert("RGB").resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)


def strip(
    panels: Sequence[tuple[str, Image.Image]],
    boxes: Sequence[tuple[str, np.ndarray]] = (),
    height: int = PREVIEW_HEIGHT,
) -> Image.Image:
    """Panels (label, picture) side by side at ``height``; ``boxes`` (name, (4, 2) face square in
    the pictures' own pixel coordinates) are drawn and named on every panel."""
    tiles = []
    for label, picture in panels:
        tile = _fit_height(picture, height)
        if boxes:
            scale = height / picture.height
            draw = ImageDraw.Draw(tile)
            font = _font(max(10, height // 32))
            for name, quad in boxes:
                pts = [tuple(p) for p in (np.asarray(quad, dtype=np.float64) + 0.5) * scale]
                draw.polygon(pts, outline=(255, 220, 0), width=max(1, height // 256))
                draw.text(pts[0], name, fill=(255, 220, 0), font=font)
        tiles.append(_label(tile, label))
    out = Image.new("RGB", (sum(t.width for t in tiles) + 2 * (len(tiles) - 1), height), (255, 255, 255))
    x = 0
    for tile in tiles:
        out.paste(tile, (x, 0))
        x += tile.width + 2
    return out


def grid(panels: Sequence[tuple[str, Image.Image]], columns: int = 8, cell: int = GRID_CELL) -> Image.Image:
    """Square cells (label, picture) in rows of ``columns``."""
    columns = max(1, min(columns, len(panels)))
    rows = (len(panels) + columns - 1) // columns
    out = Image.new("RGB", (columns * cell + 2 * (columns - 1), rows * cell + 2 * (rows - 1)), (255, 255, 255))
    for i, (label, picture) in enumerate(panels):
        tile = _label(picture.convert("RGB").resize((cell, cell), Image.Resampling.LANCZOS), label)
        out.paste(tile, ((i % columns) * (cell + 2), (i // columns) * (cell + 2)))
    return out
