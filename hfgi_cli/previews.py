"""Pictures to look at and choose from: a labelled strip per photo, a labelled grid per face.

``strip`` (``--preview``): the original with its faces boxed and numbered, the inversion, then each
edit, side by side at one height, small enough to browse. Only the original is boxed: the edited
panels are what the user came to see. ``grid`` (``--sweep``): one face across strengths, so a
strength can be picked by eye before a whole folder is run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PREVIEW_HEIGHT = 512
GRID_CELL = 256
_LABEL_PAD = 4
BOX_COLOUR = (255, 220, 0)
_TAG_PAD = 3

Point = tuple[float, float]
Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def _label_font(height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return _font(max(12, height // 24))


def band_height(height: int, text: str = "Ag") -> int:
    """Height of the dark label band across the top of a panel ``height`` px high."""
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((_LABEL_PAD, _LABEL_PAD), text, font=_label_font(height))
    return box[3] + _LABEL_PAD


def _label(img: Image.Image, text: str) -> Image.Image:
    """``img`` with ``text`` in white on a dark band across its top."""
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, 0, out.width, band_height(out.height) - 1), fill=(20, 20, 20))
    draw.text((_LABEL_PAD, _LABEL_PAD), text, fill=(255, 255, 255), font=_label_font(out.height))
    return out


def fit_height(img: Image.Image, height: int) -> Image.Image:
    width = max(1, round(img.width * height / img.height))
    return img.convert("RGB").resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)


# ---------------------------------------------------------------------------------------------- face marks
def tag_size(height: int) -> int:
    """Font size of the face numbers in a preview ``height`` px high: readable without zooming
    (32 px at 512, digits about 23 px high)."""
    return max(14, height // 16)


def _text_image(text: str, size: int) -> Image.Image:
    """``text`` in black on the box colour at font size ``size``, cut to its glyphs. The bitmap
    font of a Pillow without FreeType has one small size: it is enlarged to the same digit height
    (about 0.7 of the size), so the number stays readable either way."""
    font = _font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=font)
    img = Image.new("RGB", (x1 - x0, y1 - y0), BOX_COLOUR)
    ImageDraw.Draw(img).text((-x0, -y0), text, fill=(0, 0, 0), font=font)
    digits = round(0.7 * size)
    if not isinstance(font, ImageFont.FreeTypeFont) and img.height < digits:
        img = img.resize((max(1, round(img.width * digits / img.height)), digits), Image.Resampling.NEAREST)
    return img


def _clip(polygon: Sequence[Point], rect: tuple[float, float, float, float]) -> list[Point]:
    """The part of a convex ``polygon`` inside ``rect`` (x0, y0, x1, y1), as a polygon
    (Sutherland-Hodgman against the four sides)."""
    x0, y0, x1, y1 = rect
    sides = ((0, x0, 1.0), (0, x1, -1.0), (1, y0, 1.0), (1, y1, -1.0))  # (axis, limit, inside sign)
    points = [(float(x), float(y)) for x, y in polygon]
    for axis, limit, sign in sides:
        if not points:
            break
        kept: list[Point] = []
        for i, cur in enumerate(points):
            prev = points[i - 1]
            cur_in = (cur[axis] - limit) * sign >= 0
            prev_in = (prev[axis] - limit) * sign >= 0
            if cur_in != prev_in:
                t = (limit - prev[axis]) / (cur[axis] - prev[axis])
                kept.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cur_in:
                kept.append(cur)
        points = kept
    return points


@dataclass(frozen=True)
class FaceMark:
    """Where one face's box and number go on the original panel."""

    name: str
    outline: list[Point]  # the face square, clipped to the visible part of the panel
    tag: Rect  # the number's box
    text: Image.Image  # the number itself (``_text_image``), pasted inside the box


def face_marks(boxes: Sequence[tuple[str, np.ndarray]], scale: float, size: tuple[int, int],
               top: int) -> list[FaceMark]:
    """Boxes (name, (4, 2) face square in the picture's pixels) laid out on a panel of ``size``
    whose rows above ``top`` are the label band: the outline is the square's visible part, so an
    edge beyond the photo is drawn along its border; the number sits just above the box, or inside
    its top when there is no room, and always wholly in the visible area."""
    width, height = size
    size = tag_size(height)
    line = line_width(height)
    inset = line / 2
    area = (inset, top + inset, width - 1 - inset, height - 1 - inset)
    marks = []
    for name, quad in boxes:
        outline = _clip([tuple(p) for p in (np.asarray(quad, dtype=np.float64) + 0.5) * scale], area)
        if len(outline) < 3:
            continue  # the face is not on this panel
        text = _text_image(name, size)
        w, h = text.width + 2 * _TAG_PAD, text.height + 2 * _TAG_PAD
        xs, ys = [p[0] for p in outline], [p[1] for p in outline]
        x = round(min(xs))
        y = round(min(ys)) - h if min(ys) - h >= top else round(min(ys)) + line
        x = min(max(x, 0), width - w)
        y = min(max(y, top), height - h)
        marks.append(FaceMark(name, outline, (x, y, x + w, y + h), text))
    return marks


def line_width(height: int) -> int:
    return max(2, height // 170)


def _draw_marks(tile: Image.Image, marks: Sequence[FaceMark]) -> None:
    draw = ImageDraw.Draw(tile)
    for mark in marks:
        draw.polygon(mark.outline, outline=BOX_COLOUR, width=line_width(tile.height))
    for mark in marks:
        x0, y0, x1, y1 = mark.tag
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=BOX_COLOUR)
        tile.paste(mark.text, (x0 + _TAG_PAD, y0 + _TAG_PAD))


def strip(
    panels: Sequence[tuple[str, Image.Image]],
    boxes: Sequence[tuple[str, np.ndarray]] = (),
    height: int = PREVIEW_HEIGHT,
) -> Image.Image:
    """Panels (label, picture) side by side at ``height``; ``boxes`` (name, (4, 2) face square in
    the first picture's pixel coordinates) are drawn and numbered on the first panel only."""
    tiles = []
    for i, (label, picture) in enumerate(panels):
        tile = fit_height(picture, height)
        if boxes and i == 0:
            _draw_marks(tile, face_marks(boxes, height / picture.height, tile.size, band_height(height)))
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
