"""Pictures in and out: defensive decoding, model tensors, and photos written back as they came.

Detection, alignment and paste-back all work on upright RGB pixels. A user's file may be stored
sideways with an EXIF orientation tag, be grayscale, carry an alpha channel, be 16-bit, or be a
JPEG with a particular chroma subsampling. ``open_photo`` remembers all of that and
``save_photo`` restores it, so the written file has the input's stored size, mode, orientation
tag and format. Whatever a decoder raises on a bad file becomes one ``InputError`` naming the
file and the cause.

Phone formats: HEIC/HEIF is read and written through ``pillow-heif``, AVIF through Pillow's own
support (Pillow >= 11.2; an older one uses ``pillow-avif-plugin`` when it is installed), WebP by
Pillow. Their openers are registered by ``register_formats``, which every reader and writer here
calls first, so importing ``hfgi_cli`` registers nothing. A result whose format this process
cannot write (``can_write``) is written as a quality-95 JPEG (``output_suffix``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, features

from .atomic import atomic_path
from .inputs import InputError
from .reasons import short_reason

if TYPE_CHECKING:
    import torch

MAX_IMAGE_PIXELS = 256_000_000
"""Images whose header claims more pixels than this (~16k x 16k) are refused before decoding
(decompression bombs). PIL has its own, lower, limit (``Image.MAX_IMAGE_PIXELS``), which the
``hfgi`` program raises to this one; a library user keeps PIL's as they set it."""
JPEG_QUALITY = 95

PictureLike = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]
"""A photo as the Python API takes it: a path, a PIL image, or an HxWx3 (or HxW) uint8 array."""


def pixel_limit() -> int:
    """The pixel count above which an image is refused: ours, or PIL's own error limit if lower."""
    pil = Image.MAX_IMAGE_PIXELS
    return MAX_IMAGE_PIXELS if pil is None else min(MAX_IMAGE_PIXELS, 2 * int(pil))


def to_rgb8(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (16-bit scaled down, alpha composited on white, CMYK converted)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if img.mode == "F":
        arr8 = np.clip(np.round(np.asarray(img) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


_register_lock = threading.Lock()
_registered: list[bool] = []


def register_formats() -> None:
    """Teach Pillow the phone formats it cannot read by itself (HEIC/HEIF through pillow-heif; AVIF
    through pillow-avif-plugin where this Pillow has no AVIF of its own). Pillow's registry is
    process-wide, so this runs once, when the first picture is read or written, not at import."""
    with _register_lock:
        if _registered:
            return
        _registered.append(True)
        with contextlib.suppress(ImportError):
            import pillow_heif

            pillow_heif.register_heif_opener()
        if not features.check("avif"):
            with contextlib.suppress(ImportError):
                import pillow_avif  # noqa: F401  (registers AVIF with Pillow when imported)


@functools.cache
def can_write(fmt: str) -> bool:
    """Whether this process can encode ``fmt`` (a PIL format name): the plugin is registered and a
    tiny image encodes (an AVIF or HEIF library may be built with a decoder only)."""
    register_formats()
    Image.init()
    if fmt not in Image.SAVE:
        return False
    try:
        Image.new("RGB", (16, 16)).save(io.BytesIO(), format=fmt)
    except Exception:  # any encoder failure means: cannot write this format here
        return False
    return True


def format_of(suffix: str) -> str | None:
    """The PIL format a file name's suffix stands for (``.heic`` -> ``HEIF``), None if unknown."""
    register_formats()
    return Image.registered_extensions().get(suffix.lower())


def output_suffix(suffix: str) -> str:
    """The suffix of a photo result of an input named ``*<suffix>``: its own, or ``.jpg`` when this
    process can read that format but not write it."""
    fmt = format_of(suffix)
    return suffix.lower() if fmt is None or can_write(fmt) else ".jpg"


_BRANDS = {b"heic": "HEIF", b"heix": "HEIF", b"heim": "HEIF", b"heis": "HEIF", b"hevc": "HEIF", b"hevx": "HEIF",
           b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def _container_format(path: Path) -> str | None:
    """HEIF or AVIF when the file starts as one (an ISO media ``ftyp`` box with their brand)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return None
    return _BRANDS.get(head[8:12]) if head[4:8] == b"ftyp" else None


@contextlib.contextmanager
def decode_errors(path: Path) -> Iterator[None]:
    """Turn whatever a decoder raises on a bad file into one InputError naming the file and cause."""
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file")
        yield
    except InputError:
        raise
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{path}: image too large (more than {pixel_limit():,} pixels)") from None
    except Image.UnidentifiedImageError:
        claimed = _container_format(path)  # a HEIF/AVIF header that no decoder accepts: a damaged file
        if claimed is None:
            raise InputError(f"{path}: not an image (unrecognised format)") from None
        raise InputError(f"{path}: unreadable {claimed} image (truncated or corrupt)") from None
    except OSError as exc:
        raise InputError(f"{path}: unreadable image ({short_reason(exc, 100)})") from None
    except Exception as exc:  # decoders raise many types on corrupt data
        claimed = _container_format(path)
        what = f"{claimed} image" if claimed else "image"
        raise InputError(f"{path}: unreadable {what} ({exc.__class__.__name__}: {short_reason(exc, 80)})") from None


def open_image(path: Path) -> Image.Image:
    """Image.open (header only) that refuses pixel counts above the limit before decoding them.

    (A per-call check instead of a warnings filter: filters are process-wide and not thread-safe.)
    """
    register_formats()
    img = Image.open(path)
    if img.size[0] * img.size[1] > pixel_limit():
        img.close()
        raise InputError(f"{path}: image too large (more than {pixel_limit():,} pixels)")
    return img


def check_size(path: Path, img: Image.Image) -> None:
    if min(img.size) < 8:
        raise InputError(f"{path}: image too small ({img.size[0]}x{img.size[1]} pixels)")


def read_image(path: Path) -> Image.Image:
    """Decode an image as upright 8-bit RGB, or raise InputError naming the cause."""
    with decode_errors(path), open_image(path) as img:
        img.load()
        rgb = to_rgb8(ImageOps.exif_transpose(img))
    check_size(path, rgb)
    return rgb


def image_to_tensor(img: Image.Image, size: int = 256) -> torch.Tensor:
    """The published preprocessing: PIL bilinear resize, ToTensor, Normalize(0.5, 0.5) -> [3,H,W]."""
    import torch

    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    t = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
    return t.float().div(255).sub(0.5).div(0.5)


def tensor_to_image(t: torch.Tensor) -> Image.Image:
    """[3,H,W] in [-1,1] -> RGB image, uint8 = round((clamp(x)+1)/2*255)."""
    import torch

    arr = ((t.detach().float().clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).cpu().numpy(), "RGB")


def save_image(img: Image.Image, final: Path, **params: Any) -> None:
    """Write an image atomically, its format from the suffix (PNG when unknown)."""
    fmt = params.pop("format", None) or format_of(final.suffix) or "PNG"
    with atomic_path(final) as tmp:
        img.save(tmp, format=fmt, **params)


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


def open_photo(path: str | os.PathLike[str]) -> Photo:
    """Read a photo upright as RGB, remembering mode, format, orientation, alpha and metadata."""
    path = Path(path)
    with open_image(path) as raw:
        raw.load()
        photo = photo_from_image(raw)
    photo.path = path
    return photo


def photo_from_image(raw: Image.Image) -> Photo:
    """A decoded PIL image as a Photo (what ``open_photo`` does after reading the file)."""
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
    elif fmt in ("WEBP", "AVIF", "HEIF"):
        params["quality"] = JPEG_QUALITY
        params.pop("dpi", None)
        if fmt != "WEBP" and raw.info.get("xmp"):
            params["xmp"] = raw.info["xmp"]
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
    """Write an upright RGB result in the input's mode/orientation/format (JPEG quality 95), atomically.

    In another format (its suffix says which, e.g. ``.jpg`` for a HEIC that cannot be written
    here) the EXIF and ICC profile go along, at quality 95 where the format has one."""
    path = Path(path)
    fmt = fmt or format_of(path.suffix) or photo.format or "PNG"
    if fmt == photo.format:
        params = dict(photo.save_params)
    else:
        params = {key: photo.save_params[key] for key in ("exif", "icc_profile") if key in photo.save_params}
        if fmt in ("JPEG", "WEBP", "AVIF", "HEIF"):
            params["quality"] = JPEG_QUALITY
    image = restore(photo, rgb)
    if fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **params)


def _array_image(source: np.ndarray, what: str) -> Image.Image:
    if source.dtype != np.uint8 or source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] not in (3, 4)):
        raise InputError(f"{what}: an array must be HxW, HxWx3 or HxWx4 uint8, not {source.dtype} {source.shape}")
    return Image.fromarray(source)


def load_crop(source: PictureLike, what: str = "image") -> Image.Image:
    """An aligned face crop (path, PIL image or uint8 array) as upright 8-bit RGB."""
    if isinstance(source, (Image.Image, np.ndarray)):
        img = source if isinstance(source, Image.Image) else _array_image(source, what)
        rgb = to_rgb8(ImageOps.exif_transpose(img))
        check_size(Path(what), rgb)
        return rgb
    return read_image(Path(source))


def load_picture(source: PictureLike, what: str = "image") -> Photo:
    """A path, PIL image or uint8 array as a Photo; a bad file raises InputError naming it."""
    if isinstance(source, (Image.Image, np.ndarray)):
        img = source if isinstance(source, Image.Image) else _array_image(source, what)
        photo = photo_from_image(img)
        check_size(Path(what), photo.image)
        return photo
    path = Path(source)
    with decode_errors(path):
        photo = open_photo(path)
    check_size(path, photo.image)
    return photo
