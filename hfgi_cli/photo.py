"""Open and save user photos so that an edit changes faces and nothing else.

Detection, alignment and paste-back all work on upright RGB pixels. A user's file may be stored
sideways with an EXIF orientation tag, be grayscale, carry an alpha channel, or be a JPEG with a
particular chroma subsampling. ``open_photo`` remembers all of that and ``save_photo`` restores
it, so the written file has the input's stored size, mode, orientation tag and format.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, JpegImagePlugin

from .io import atomic_path, open_image, to_rgb8

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
JPEG_QUALITY = 95

# EXIF orientation -> the transpose that undoes what ImageOps.exif_transpose applied.
_UNDO_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@dataclass
class Photo:
    """An opened photo: upright RGB pixels to work on plus what is needed to write it back alike."""

    image: Image.Image
    """Upright RGB pixels (EXIF orientation applied); every face operation uses these."""
    mode: str
    """Mode of the file as stored (``RGB``, ``RGBA``, ``L``, ...); restored on save."""
    format: str | None
    """PIL format name of the file (``JPEG``, ``PNG``, ...); ``save_photo`` keeps it."""
    orientation: int = 1
    """EXIF orientation that was undone to get ``image`` upright (1 = none)."""
    alpha: Image.Image | None = None
    """Upright alpha channel, kept aside so that edits never touch it."""
    save_params: dict[str, Any] = field(default_factory=dict)
    """Encoder settings and metadata (exif, icc_profile, dpi, JPEG subsampling) to write back."""
    path: Path | None = None

    @property
    def stored_size(self) -> tuple[int, int]:
        """(width, height) of the pixels as stored in the file, before orientation."""
        w, h = self.image.size
        return (h, w) if self.orientation in (5, 6, 7, 8) else (w, h)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def open_photo(path: str | os.PathLike[str]) -> Photo:
    """Read a photo upright as RGB, remembering mode, format, orientation, alpha and metadata."""
    path = Path(path)
    with open_image(path) as raw:
        raw.load()
        fmt = raw.format
        mode = raw.mode
        orientation = int(raw.getexif().get(0x0112, 1) or 1)
        if orientation not in _UNDO_ORIENTATION:
            orientation = 1
        params = _save_params(raw, fmt)
        upright = ImageOps.exif_transpose(raw) if orientation != 1 else raw.copy()
    alpha = None
    if "A" in upright.getbands() or (upright.mode == "P" and "transparency" in upright.info):
        alpha = upright.convert("RGBA").getchannel("A")
    # 16-bit and float pixels are scaled to 8 bits (a plain convert would clip them to white)
    high_depth = upright.mode in ("I", "F") or upright.mode.startswith("I;16")
    image = to_rgb8(upright) if high_depth else upright.convert("RGB")
    image.info.pop("transparency", None)  # the alpha channel is kept aside instead
    return Photo(
        image=image,
        mode=mode,
        format=fmt,
        orientation=orientation,
        alpha=alpha,
        save_params=params,
        path=path,
    )


def _save_params(raw: Image.Image, fmt: str | None) -> dict[str, Any]:
    """Metadata and encoder settings that make the re-encoded file as close to the input as possible."""
    params: dict[str, Any] = {}
    for key in ("exif", "icc_profile", "dpi"):
        if raw.info.get(key):
            params[key] = raw.info[key]
    if fmt == "JPEG":
        params["quality"] = JPEG_QUALITY
        sampling = JpegImagePlugin.get_sampling(raw)
        if sampling in (0, 1, 2):
            params["subsampling"] = sampling
        if raw.info.get("progressive") or raw.info.get("progression"):
            params["progressive"] = True
    elif fmt == "WEBP":
        params["quality"] = JPEG_QUALITY
        params.pop("dpi", None)
    return params


def restore(photo: Photo, rgb: Image.Image) -> Image.Image:
    """Turn an upright RGB result back into the stored orientation and mode of ``photo``."""
    if rgb.size != photo.image.size:
        raise ValueError(f"result is {rgb.size}, photo is {photo.image.size}")
    out = rgb.convert("RGB")
    out.info = {}  # stale hints (e.g. an RGB "transparency" colour) would confuse the encoder
    if photo.alpha is not None:
        out.putalpha(photo.alpha)  # the alpha channel is the input's, bit for bit
    if photo.orientation != 1:
        out = out.transpose(_UNDO_ORIENTATION[photo.orientation])
    if out.mode != photo.mode:
        if photo.mode == "P":  # a new palette; octree quantisation keeps transparency
            out = out.quantize(256, Image.Quantize.FASTOCTREE) if out.mode == "RGBA" else out.convert(
                "P", palette=Image.Palette.ADAPTIVE
            )
        else:
            try:
                out = out.convert(photo.mode)
            except ValueError:  # modes PIL cannot convert to (e.g. 16-bit); keep 8-bit RGB(A)
                pass
    return out


def save_photo(photo: Photo, rgb: Image.Image, path: str | os.PathLike[str], fmt: str | None = None) -> None:
    """Write an upright RGB result in the input's mode/orientation/format (JPEG quality 95), atomically."""
    path = Path(path)
    fmt = fmt or Image.registered_extensions().get(path.suffix.lower()) or photo.format or "PNG"
    params = dict(photo.save_params) if fmt == photo.format else {}
    image = restore(photo, rgb)
    if fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt, **params))


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` for a temporary file beside ``path``, then rename it into place.

    Readers never see a half-written file and an interrupted run leaves the old file intact.
    """
    with atomic_path(Path(path)) as tmp:
        write(tmp)
