"""The small Python API: load a model once, then invert and edit PIL images or tensors.

    from hfgi_cli import load_model
    model = load_model("hfgi_ffhq.pt")
    results = edit_images(model, [Image.open("face.png")], [EditSpec("smile", 2.0)])

The CLI is built on these same calls.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from . import io as hio
from .edits import Editor, EditSpec
from .models.hfgi import HFGI
from .pipeline import pick_device
from .weights import resolve_checkpoint, resolve_directions_dir


def load_model(
    checkpoint: str | Path | None = None,
    weights_dir: str | Path | None = None,
    device: str = "auto",
) -> HFGI:
    """Load an HFGI checkpoint (explicit path, else the weights folder's published one) onto a device."""
    path = resolve_checkpoint(Path(checkpoint) if checkpoint else None, Path(weights_dir) if weights_dir else None)
    return HFGI.from_checkpoint(path, device=pick_device(device))


@torch.inference_mode()
def invert_images(model: HFGI, images: list[Image.Image]) -> tuple[list[Image.Image], torch.Tensor, torch.Tensor]:
    """Aligned face crops -> (reconstructions, W+ codes [B,n,512], distortion maps [B,3,256,256])."""
    x = torch.stack([hio.image_to_tensor(im.convert("RGB")) for im in images]).to(model.device)
    enc = model.encode(x)
    out = model.decode(enc["latent"], enc["distortion"], enc["low_res"])
    return [hio.tensor_to_image(t) for t in out.cpu()], enc["latent"].cpu(), enc["distortion"].cpu()


@torch.inference_mode()
def edit_images(
    model: HFGI,
    images: list[Image.Image],
    edits: list[EditSpec],
    directions: str | Path | None = None,
) -> dict[str, list[Image.Image]]:
    """Aligned face crops -> {edit label: edited images}; one encoding serves every edit.

    ``directions`` defaults to the weights folder (see ``hfgi weights path``).
    """
    folder = resolve_directions_dir(Path(directions) if directions else None, needed=[e.attr for e in edits])
    editor = Editor(folder, model.n_latent, model.config.style_dim, model.config.domain)
    x = torch.stack([hio.image_to_tensor(im.convert("RGB")) for im in images]).to(model.device)
    enc = model.encode(x)
    results: dict[str, list[Image.Image]] = {}
    for spec in edits:
        out = model.decode(editor.apply(enc["latent"], spec), enc["distortion"])
        results[spec.label] = [hio.tensor_to_image(t) for t in out.cpu()]
    return results
