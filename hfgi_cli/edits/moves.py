"""What every family of edits produces: a ``Move``, from (W+ codes, strength) to ``Edited``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

Strength = Union[float, torch.Tensor]
"""One strength for the batch, or a [B] tensor with one per row."""

StyleOffsets = list[Optional[torch.Tensor]]
"""Per style layer of the generator (``Generator.style_layers`` order): [B, channels] added to the
layer's style vector (the affine layer's output), or None where the layer is left as it is."""


@dataclass
class Edited:
    """A batch after its edits: W+ codes, and StyleSpace offsets (None: a pure W+ edit)."""

    codes: torch.Tensor
    offsets: StyleOffsets | None = None


Move = Callable[[torch.Tensor, Strength], Edited]


@dataclass(frozen=True)
class ModelShape:
    """What edits need to know of the generator: W+ rows, W's size, the domain, and per style
    layer (conv1, to_rgb1, then per resolution conv0_up, conv1, to_rgb) its channels and whether it
    is a to-RGB layer."""

    n_latent: int
    style_dim: int = 512
    domain: str = "ffhq"
    style_layers: tuple[tuple[int, bool], ...] = ()


def add_offsets(a: StyleOffsets | None, b: StyleOffsets | None) -> StyleOffsets | None:
    if a is None or b is None:
        return a if b is None else b
    return [x if y is None else y if x is None else x + y for x, y in zip(a, b)]


def scaled(offsets: Sequence[torch.Tensor | None], strength: Strength, like: torch.Tensor) -> StyleOffsets:
    """Unit offsets [channels] times a strength (one, or [B]) -> [B, channels] per layer."""
    batch = like.shape[0]
    s = strength.to(like).view(-1, 1) if torch.is_tensor(strength) else torch.full((batch, 1), float(strength))
    return [None if o is None else s.to(like) * o.to(like)[None, :] for o in offsets]


