"""Latent edits: InterFaceGAN directions, GANSpace components and user-supplied directions.

An edit maps W+ codes [B, n_latent, 512] to edited codes of the same shape. Every edit is a pure
function of the codes, so edits computed from a stored latent equal edits computed from the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch


class EditError(ValueError):
    """An unknown attribute or an unreadable / ill-shaped direction file (CLI exit code 2)."""


@dataclass(frozen=True)
class GanspaceEdit:
    component: int
    start: int
    end: int
    value: float


INTERFACEGAN = {"age": "age.pt", "smile": "smile.pt", "pose": "pose.pt"}
GANSPACE = {
    # as the HFGI authors publish them
    "eyes": GanspaceEdit(54, 7, 8, 20),
    "beard": GanspaceEdit(58, 7, 9, -20),
    "lip": GanspaceEdit(34, 10, 11, 20),
    # from e4e's published edits
    "white_hair": GanspaceEdit(57, 7, 10, -24),
    "trimmed_beard": GanspaceEdit(58, 7, 9, 20),
}
INTERFACEGAN_RANGE = (-3.0, 3.0)
GANSPACE_RANGE = (-1.0, 1.0)  # strength multiplies the published value; 1 is the published edit


def list_attributes() -> list[tuple[str, str, str]]:
    """(name, kind, default range) for ``hfgi edit --list-attrs``."""
    rows = [(n, "interfacegan", f"strength {INTERFACEGAN_RANGE[0]:g}..{INTERFACEGAN_RANGE[1]:g}") for n in INTERFACEGAN]
    for name, g in GANSPACE.items():
        rows.append(
            (name, "ganspace",
             f"strength {GANSPACE_RANGE[0]:g}..{GANSPACE_RANGE[1]:g} (component {g.component}, "
             f"rows {g.start}:{g.end}, value {g.value:g})")
        )
    return rows


def _load_tensor_file(path: Path) -> object:
    if not path.is_file():
        raise EditError(f"direction file not found: {path}")
    try:
        if path.suffix.lower() == ".npy":
            return torch.from_numpy(np.load(path, allow_pickle=False)).float()
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EditError(f"{path}: cannot read direction file ({str(exc).splitlines()[0][:100]})") from None


def load_direction(path: str | Path, n_latent: int, style_dim: int = 512) -> torch.Tensor:
    """A direction of shape [style_dim], [1, style_dim] or [n_latent, style_dim] -> [n_latent, style_dim]."""
    path = Path(path)
    d = _load_tensor_file(path)
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


def load_ganspace(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    pca = _load_tensor_file(path)
    if not isinstance(pca, dict) or not {"mean", "comp", "std"} <= set(pca):
        raise EditError(f"{path}: not a GANSpace PCA file (needs 'mean', 'comp', 'std')")
    return {k: pca[k].float() for k in ("mean", "comp", "std")}


Strength = Union[float, torch.Tensor]
"""One strength for the batch, or a [B] tensor with one per row."""


def interfacegan_edit(latent: torch.Tensor, direction: torch.Tensor, strength: Strength) -> torch.Tensor:
    """W' = W+ + strength * d."""
    if torch.is_tensor(strength):
        strength = strength.to(latent).view(-1, 1, 1)
    return latent + strength * direction.to(latent)


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


@dataclass(frozen=True)
class EditSpec:
    """One requested output: a named attribute, a custom direction file or a GANSpace tuple
    (component, first row, end row, value), and its strength."""

    attr: str
    strength: float
    direction_file: str | None = None
    ganspace: GanspaceEdit | None = None

    @property
    def label(self) -> str:
        name = Path(self.direction_file).stem if self.direction_file else self.attr
        return f"{name}{self.strength:+g}"

    @property
    def key(self) -> str:
        """What the edit moves along (the same for every strength)."""
        if self.ganspace is not None:
            return f"ganspace:{self.ganspace}"
        return self.direction_file or self.attr


Edits = Union[Mapping[Union[str, Path, tuple], float], Sequence[EditSpec], EditSpec, None]
"""Edits as the Python API takes them: ``{"smile": 2, "age": -1}`` (names; paths of direction
files; ``(component, start, end, value)`` GANSpace tuples), EditSpecs, or None (inversion)."""

DIRECTION_SUFFIXES = (".pt", ".npy")


def as_edit_specs(edits: Edits) -> list[EditSpec]:
    """Every accepted form of ``Edits`` as a list of EditSpec, in order; nothing is loaded here."""
    if edits is None:
        return []
    if isinstance(edits, EditSpec):
        return [edits]
    if not isinstance(edits, Mapping):
        specs = list(edits)
        if not all(isinstance(s, EditSpec) for s in specs):
            raise EditError("edits must be a mapping {name: strength} or a list of EditSpec")
        return specs
    specs = []
    for key, strength in edits.items():
        if isinstance(key, tuple):
            try:
                component, start, end, value = key
                g = GanspaceEdit(int(component), int(start), int(end), float(value))
            except (TypeError, ValueError):
                raise EditError(f"a GANSpace edit is (component, start, end, value), not {key!r}") from None
            specs.append(EditSpec(f"ganspace{g.component}_{g.start}-{g.end}", float(strength), ganspace=g))
        elif str(key).lower().endswith(DIRECTION_SUFFIXES):
            specs.append(EditSpec(Path(key).stem, float(strength), direction_file=str(key)))
        else:
            specs.append(EditSpec(str(key), float(strength)))
    return specs


def check_names(specs: Sequence[EditSpec]) -> None:
    """What can be checked without reading a file: each named attribute is known, and no edit is
    asked for twice (their outputs would share a name)."""
    labels = [s.label for s in specs]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise EditError(f"the same edit is asked for twice ({', '.join(twice)})")
    for spec in specs:
        if not spec.direction_file and spec.ganspace is None:
            check_attribute(spec.attr)


def check_attribute(name: str) -> None:
    """Unknown names fail before anything is loaded, with the list of known ones."""
    if name not in INTERFACEGAN and name not in GANSPACE:
        known = ", ".join([*INTERFACEGAN, *GANSPACE])
        raise EditError(f"unknown attribute '{name}' (known: {known})")


class Editor:
    """Resolves edit specs against a directions folder and applies them to batches of codes."""

    def __init__(
        self, directions_dir: str | Path | None, n_latent: int, style_dim: int = 512, domain: str = "ffhq"
    ) -> None:
        self.directions_dir = Path(directions_dir) if directions_dir else None
        self.pca_file = "cars_pca.pt" if domain == "cars" else "ffhq_pca.pt"
        self.n_latent = n_latent
        self.style_dim = style_dim
        self._cache: dict[str, object] = {}

    def _folder_file(self, *parts: str) -> Path:
        if self.directions_dir is None:
            raise EditError("no directions folder: pass --directions DIR or run `hfgi weights download`")
        return self.directions_dir.joinpath(*parts)

    def check(self, spec: EditSpec) -> None:
        """Fail early (before any image is processed) on an unknown attribute or a bad file."""
        self._resolve(spec)

    def _resolve(self, spec: EditSpec) -> object:
        key = spec.key
        if key in self._cache:
            return self._cache[key]
        if spec.ganspace is not None:
            value: object = load_ganspace(self._folder_file("ganspace", self.pca_file))
        elif spec.direction_file:
            value = load_direction(spec.direction_file, self.n_latent, self.style_dim)
        elif spec.attr in INTERFACEGAN:
            value = load_direction(
                self._folder_file("interfacegan", INTERFACEGAN[spec.attr]), self.n_latent, self.style_dim
            )
        elif spec.attr in GANSPACE:
            value = load_ganspace(self._folder_file("ganspace", self.pca_file))
        else:
            check_attribute(spec.attr)
            raise AssertionError("unreachable")
        self._cache[key] = value
        return value

    def apply(self, latent: torch.Tensor, spec: EditSpec | Sequence[EditSpec]) -> torch.Tensor:
        """Edited codes for a batch [B, n_latent, dim]: one spec for every row, or one per row
        (the same edit at per-row strengths, e.g. a strength ramp over video frames)."""
        specs = [spec] if isinstance(spec, EditSpec) else list(spec)
        first = specs[0]
        if len(specs) == 1:
            strength: Strength = first.strength
        else:
            if len(specs) != latent.shape[0] or any(s.key != first.key for s in specs):
                raise EditError("per-row edits must be one edit, one strength per row")
            strength = torch.tensor([s.strength for s in specs], dtype=torch.float32)
        value = self._resolve(first)
        if isinstance(value, dict):
            return ganspace_edit(latent, value, first.ganspace or GANSPACE[first.attr], strength)
        return interfacegan_edit(latent, value, strength)  # type: ignore[arg-type]
