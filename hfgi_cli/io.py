"""Inputs and outputs: finding inputs, decoding images defensively, writing files atomically.

Every output is written to a temporary name in its final folder and renamed into place, so a
killed run never leaves a half-written file under a real name, and a re-run can trust that any
file it finds is complete.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
LATENT_EXTS = {".pt"}
# Refuse images whose header claims more pixels than this (decompression bombs); ~ 16k x 16k.
MAX_IMAGE_PIXELS = 256_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


class InputError(Exception):
    """An input that cannot be used; the message names the file and the cause."""


class InputProblem(str):
    """A command-line input that gave nothing to process: the message, with the input in ``.path``."""

    path: str

    def __new__(cls, path: Path | str, cause: str) -> InputProblem:
        problem = super().__new__(cls, f"{path}: {cause}")
        problem.path = str(path)
        return problem


@dataclass(frozen=True)
class InputItem:
    """One input file and where its outputs go, relative to the output folder."""

    path: Path
    rel: Path  # relative output stem location (mirrors the input layout under OUT)

    @property
    def is_latent(self) -> bool:
        return self.path.suffix.lower() in LATENT_EXTS


def _is_input_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in IMAGE_EXTS or suffix in LATENT_EXTS


def collect_inputs(
    inputs: list[str], stdin: IO[str] | None = None, exclude: Path | None = None
) -> tuple[list[InputItem], list[str]]:
    """Expand files, folders (their images, sorted, recursively) and ``-`` (paths from stdin).

    Files under ``exclude`` (the output folder, when it lies inside an input folder) are not
    inputs: a second run must not pick up the first run's results.

    Returns the items and the problems found (missing paths), so the run can go on without them.
    Output locations (as ``hfgi invert --help`` says): a file given by path -> its name; a file found in a
    folder -> its path inside that folder, under the folder's own name when several folders are
    given, so ``a/x.jpg`` and ``b/x.jpg`` never overwrite each other; any remaining clash (``x.jpg``
    and ``x.png``) -> ``x``, ``x-1``, ``x-2``... in input order.
    """
    raw: list[str] = []
    for arg in inputs:
        if arg == "-":
            stream = stdin if stdin is not None else sys.stdin
            for line in stream:
                exact = line.rstrip("\r\n")  # keep spaces that belong to the name
                if exact.strip():
                    raw.append(exact if os.path.lexists(exact) else exact.strip())
        else:
            raw.append(arg)
    several_folders = len({Path(arg).resolve() for arg in raw if Path(arg).is_dir()}) > 1
    items: list[InputItem] = []
    problems: list[str] = []
    seen: set[Path] = set()
    taken: set[Path] = set()

    def add(path: Path, rel: Path) -> None:
        resolved = path.resolve()
        if resolved in seen:
            return
        seen.add(resolved)
        rel = rel.with_suffix("")
        base, k = rel, 1
        while rel in taken:  # same stem twice (x.jpg and x.png, or two folders' x.jpg given as files)
            rel = base.with_name(f"{base.name}-{k}")
            k += 1
        taken.add(rel)
        items.append(InputItem(path, rel))

    for arg in raw:
        path = Path(arg)
        if path.is_dir():
            skip = exclude.resolve() if exclude is not None and exclude.resolve() != path.resolve() else None
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and _is_input_file(p) and not (skip and p.resolve().is_relative_to(skip))
            )
            if not found:
                problems.append(InputProblem(path, "folder holds no images"))
            top = Path(path.resolve().name or "root") if several_folders else Path()
            for p in found:
                add(p, top / p.relative_to(path))
        elif path.is_file():
            add(path, Path(path.name))
        elif path.exists():
            problems.append(InputProblem(path, "not a regular file"))
        else:
            problems.append(InputProblem(path, "no such file or folder"))
    return items, problems


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
        raise InputError(f"{path}: image too large (more than {MAX_IMAGE_PIXELS:,} pixels)") from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{path}: not an image (unrecognised format)") from None
    except OSError as exc:
        raise InputError(f"{path}: unreadable image ({str(exc).splitlines()[0][:100]})") from None
    except Exception as exc:  # decoders raise many types on corrupt data
        raise InputError(f"{path}: unreadable image ({exc.__class__.__name__}: {str(exc)[:80]})") from None


def open_image(path: Path) -> Image.Image:
    """Image.open (header only) that refuses pixel counts above our limit before decoding them.

    (A per-call check instead of a warnings filter: filters are process-wide and not thread-safe.)
    """
    img = Image.open(path)
    if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:
        img.close()
        raise InputError(f"{path}: image too large (more than {MAX_IMAGE_PIXELS:,} pixels)")
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
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    t = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
    return t.float().div(255).sub(0.5).div(0.5)


def tensor_to_image(t: torch.Tensor) -> Image.Image:
    """[3,H,W] in [-1,1] -> RGB image, uint8 = round((clamp(x)+1)/2*255)."""
    arr = ((t.detach().float().clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).cpu().numpy(), "RGB")


# ------------------------------------------------------------------------------------------ latents
LATENT_FORMAT = "hfgi-latent/1"


def read_latent(path: Path, n_latent: int, style_dim: int) -> dict[str, Any]:
    """Load a latent file written by ``hfgi invert`` and check it fits the loaded model."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except Exception as exc:
        first = (str(exc).splitlines() or [exc.__class__.__name__])[0].split(". ")[0]  # torch adds a long hint
        raise InputError(f"{path}: not a latent file ({first[:100]})") from None
    if not isinstance(data, dict) or not torch.is_tensor(data.get("latent")) or not torch.is_tensor(
        data.get("distortion")
    ):
        raise InputError(f"{path}: not a latent file written by hfgi (needs 'latent' and 'distortion')")
    latent = data["latent"].float()
    if tuple(latent.shape) != (n_latent, style_dim):
        raise InputError(
            f"{path}: latent of shape {tuple(latent.shape)} does not fit this model ({n_latent}x{style_dim})"
        )
    if tuple(data["distortion"].shape) != (3, 256, 256):
        raise InputError(f"{path}: distortion map of shape {tuple(data['distortion'].shape)}, expected 3x256x256")
    return data


# ------------------------------------------------------------------------------------------ writing
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() would give a new file; mkstemp makes temporaries 0600


def _is_our_temp(p: Path) -> bool:
    """``.NAME.XXXXXXXX.part``: what ``atomic_path`` names a temporary (mkstemp's 8 random characters)."""
    name = p.name
    if not (name.startswith(".") and name.endswith(".part") and len(name) > 15 and name[-14] == "."):
        return False
    return Path(name[1:-14]).suffix.lower() in IMAGE_EXTS | LATENT_EXTS  # a temp of an image or latent


def remove_stale_temps(folder: Path) -> int:
    """Delete temporaries left in ``folder`` (recursively) by a killed run; returns how many.

    One scan per run, not per file written (a per-write scan costs O(N^2) on big folders). Two
    runs writing into the same folder at the same time are not supported.
    """
    removed = 0
    if not folder.is_dir():
        return 0
    for p in folder.rglob(".*.part"):
        if _is_our_temp(p):
            with contextlib.suppress(OSError):
                p.unlink()
                removed += 1
    return removed


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)  # mkstemp makes it private; outputs get the usual mode
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def save_image(img: Image.Image, final: Path, **params: Any) -> None:
    fmt = params.pop("format", None) or Image.registered_extensions().get(final.suffix.lower(), "PNG")
    with atomic_path(final) as tmp:
        img.save(tmp, format=fmt, **params)


def save_torch(obj: Any, final: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(final) as tmp:
        tmp.write_bytes(buf.getvalue())


def is_complete_latent(path: Path) -> bool:
    """A quick validity check used to skip finished work on re-runs."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(data, dict) and torch.is_tensor(data.get("latent"))
