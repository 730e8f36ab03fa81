"""GANSpace (Härkönen et al. 2020): principal components of W, applied as HFGI and e4e apply them.

An edit names a component, a range of W+ rows and a value: the component's coordinate, measured
on row 0, is moved to ``strength x value`` on those rows (strength 1 is the authors' edit).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .files import EditError, read_tensor_file
from .moves import Edited, ModelShape, Move, Strength


@dataclass(frozen=True)
class GanspaceEdit:
    component: int
    start: int
    end: int
    value: float


def load_ganspace(path: str | Path, style_dim: int = 512) -> dict[str, torch.Tensor]:
    """A PCA file (``mean`` [1, dim], ``comp`` [K, 1, dim], ``std`` [K]), checked."""
    path = Path(path)
    pca = read_tensor_file(path)
    if not isinstance(pca, dict) or not {"mean", "comp", "std"} <= set(pca):
        raise EditError(f"{path}: not a GANSpace PCA file (needs 'mean', 'comp', 'std')")
    out = {k: pca[k].float() for k in ("mean", "comp", "std")}
    if out["mean"].numel() != style_dim or out["comp"].shape[-1] != style_dim:
        raise EditError(f"{path}: PCA of {out['mean'].numel()}-D codes; this model's W is {style_dim}-D")
    return out


def check_edit(edit: GanspaceEdit, pca: dict[str, torch.Tensor], n_latent: int, origin: str) -> None:
    if not 0 <= edit.component < pca["comp"].shape[0]:
        raise EditError(f"{origin}: has {pca['comp'].shape[0]} components, no component {edit.component}")
    if not 0 <= edit.start < edit.end <= n_latent:
        raise EditError(f"GANSpace rows {edit.start}:{edit.end} are outside this model's {n_latent} W+ rows")


def ganspace_edit(
    latent: torch.Tensor, pca: dict[str, torch.Tensor], edit: GanspaceEdit, strength: Strength = 1.0
) -> torch.Tensor:
    """Move the component's coordinate (measured on W+ row 0) to ``strength * value`` on rows start:end."""
    if torch.is_tensor(strength):
        strength = strength.to(latent)
    comp = pca["comp"][edit.component].reshape(-1).to(latent)
    std = pca["std"][edit.component].to(latent)
    mean = pca["mean"].reshape(-1).to(latent)
    coord = ((latent[:, 0] - mean) * comp).sum(dim=-1) / std  # [B]
    delta = (strength * edit.value - coord)[:, None] * comp[None, :] * std  # [B, 512]
    out = latent.clone()
    rows = out[:, edit.start : edit.end]
    out[:, edit.start : edit.end] = rows + delta[:, None, :]
    return out


def component_move(pca_file: Path, edit: GanspaceEdit, shape: ModelShape) -> Move:
    pca = load_ganspace(pca_file, shape.style_dim)
    check_edit(edit, pca, shape.n_latent, str(pca_file))
    return lambda latent, strength: Edited(ganspace_edit(latent, pca, edit, strength))
