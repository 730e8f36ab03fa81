"""Linear W+ directions: InterFaceGAN's (as HFGI / e4e publish them), STIT's, and the user's own.

``W' = W+ + strength x d``, on every row (a 1 x 512 direction) or per row (n_latent x 512). STIT's
own interface halves its factor; this tool does not, so its strengths are STIT's factors / 2.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .files import EditError, read_tensor_file
from .moves import Edited, Move, Strength


def load_direction(path: str | Path, n_latent: int, style_dim: int = 512) -> torch.Tensor:
    """A direction of shape [style_dim], [1, style_dim], [n_latent, style_dim] (or with a leading 1)
    -> [n_latent, style_dim]. STIT's files are [18, 512], the same direction on every row."""
    path = Path(path)
    d = read_tensor_file(path)
    if not torch.is_tensor(d):
        raise EditError(f"{path}: a direction file must hold one tensor, found {type(d).__name__}")
    d = d.float().squeeze(0) if d.ndim == 3 else d.float()
    if d.ndim == 1:
        d = d.unsqueeze(0)
    if d.ndim != 2 or d.shape[-1] != style_dim or d.shape[0] not in (1, n_latent):
        raise EditError(
            f"{path}: direction of shape {tuple(d.shape)}; expected {style_dim}, 1x{style_dim} or "
            f"{n_latent}x{style_dim}"
        )
    return d.expand(n_latent, style_dim).clone()


def add_direction(latent: torch.Tensor, direction: torch.Tensor, strength: Strength) -> torch.Tensor:
    """W' = W+ + strength * d."""
    if torch.is_tensor(strength):
        strength = strength.to(latent).view(-1, 1, 1)
    return latent + strength * direction.to(latent)


def direction_move(direction: torch.Tensor) -> Move:
    return lambda latent, strength: Edited(add_direction(latent, direction, strength))
