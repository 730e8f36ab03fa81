"""The latent file beside every output: ``<output>.pt`` (``hfgi-latent/1``), one per face.

A ``torch.save`` dict of tensors and plain values (loads with ``weights_only=True``):

- ``latent``: the W+ codes that made this output [n_latent, style_dim] (edited for an edit);
- ``inversion_latent``: the encoder's W+ before any edit; ``distortion``: the distortion map
  [3, 256, 256] that HFGI's second pass consults, in float16 (384 KB), so an edit from this file
  needs no encoder (absent when written with ``--latents codes``);
- ``edit`` (label or None) and ``edit_spec`` (``edits.describe``: detail and, per edit, family,
  name or text, neutral text, beta, strength; None for an inversion), ``checkpoint`` (file name),
  ``n_latent``, ``source`` (the input). A text edit moves StyleSpace, not W+: its ``latent`` is
  the inversion's, and ``edit_spec`` is what re-makes the image;
- for a face found in a photo: ``face`` (its index) and ``alignment`` (``AlignedFace.to_json``);
- when the run measured it: ``quality`` (``FaceQuality.to_json``: the inversion's identity
  distance, PSNR and SSIM against the aligned input).
- ``precision``: what the model ran in (fp32, the exact published model; fp16; bf16).

Giving such a file as an input re-runs any edit from its codes (``Model.edit_latents``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from .atomic import write_bytes
from .inputs import InputError
from .reasons import short_reason

LATENT_FORMAT = "hfgi-latent/1"


def make_record(
    latent: torch.Tensor,
    inversion_latent: torch.Tensor,
    distortion: torch.Tensor | None,
    *,
    edit: str | None,
    checkpoint: str,
    edit_spec: dict[str, Any] | None = None,
    source: dict[str, Any],
    face: int | None = None,
    alignment: dict[str, Any] | None = None,
    quality: dict[str, Any] | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """One face's latent record (see the module docstring); ``source`` holds ``source`` and, for
    an input that was itself a latent file, ``from_latent``. ``distortion`` None: codes only."""
    record: dict[str, Any] = {
        "format": LATENT_FORMAT,
        "latent": latent.float().cpu().clone(),  # clones: never the storage of a whole batch
        "inversion_latent": inversion_latent.float().cpu().clone(),
        "edit": edit,
        "edit_spec": edit_spec,
        "checkpoint": checkpoint,
        "n_latent": int(latent.shape[0]),
        **source,
    }
    if distortion is not None:
        record["distortion"] = distortion.half().cpu().clone()
    if alignment is not None:
        record["alignment"] = alignment
        record["face"] = face
    if quality is not None:
        record["quality"] = quality
    if precision is not None:
        record["precision"] = precision
    return record


def save_record(record: dict[str, Any], path: Path) -> None:
    """Serialise first, then write atomically (a failing save leaves no file)."""
    buf = io.BytesIO()
    torch.save(record, buf)
    write_bytes(path, buf.getvalue())


def read_latent(path: Path, n_latent: int, style_dim: int) -> dict[str, Any]:
    """Load a latent file written by ``hfgi invert``/``edit`` and check it fits the loaded model."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except Exception as exc:
        first = (str(exc).splitlines() or [exc.__class__.__name__])[0].split(". ")[0]  # torch adds a long hint
        raise InputError(f"{path}: not a latent file ({short_reason(first, 100)})") from None
    if not isinstance(data, dict) or not torch.is_tensor(data.get("latent")):
        raise InputError(f"{path}: not a latent file written by hfgi (no 'latent' codes)")
    if not torch.is_tensor(data.get("distortion")):
        raise InputError(f"{path}: holds codes only (written with --latents codes); an edit needs the distortion "
                         f"map too: invert again with --latents full")
    latent = data["latent"].float()
    if tuple(latent.shape) != (n_latent, style_dim):
        raise InputError(
            f"{path}: latent of shape {tuple(latent.shape)} does not fit this model ({n_latent}x{style_dim})"
        )
    if tuple(data["distortion"].shape) != (3, 256, 256):
        raise InputError(f"{path}: distortion map of shape {tuple(data['distortion'].shape)}, expected 3x256x256")
    return data


def is_complete_latent(path: Path) -> bool:
    """A quick validity check used to skip finished work on re-runs."""
    return latent_fits(path, full=False)


def latent_fits(path: Path, full: bool) -> bool:
    """The file loads as a latent file, with the distortion map too when ``full``."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(data, dict) and torch.is_tensor(data.get("latent")) and (
        not full or torch.is_tensor(data.get("distortion"))
    )
