"""Resolving outputs against the edit files, and applying them to batches of W+ codes.

Every family turns a spec into a ``Move``: a function of (W+ codes [B, n_latent, dim], strength)
giving the edited codes and, for StyleSpace edits, per-layer offsets of the generator's style
vectors. The engine calls ``Editor.apply`` and knows nothing of families.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from . import catalog, ganspace, gradctrl, styleclip, wdirections
from .files import EditError
from .moves import Edited, ModelShape, Move, add_offsets
from .spec import Combined, EditSpec, Output


class Editor:
    """Resolves specs against a directions folder (files read once, cached) and applies them."""

    def __init__(self, directions_dir: str | Path | None, shape: ModelShape, text_encoder: object = None) -> None:
        """``text_encoder``: something with ``embed(texts) -> [N, 512]`` in place of CLIP (tests)."""
        self.directions_dir = Path(directions_dir) if directions_dir else None
        self.shape = shape
        self._text_encoder = text_encoder
        self._text_resources: styleclip.Resources | None = None
        self._moves: dict[str, Move] = {}
        self._lock = threading.Lock()  # writer threads and the model thread may resolve at once

    def _file(self, relative: str) -> Path:
        if self.directions_dir is None:
            raise EditError("no directions folder: pass --directions DIR or run `hfgi weights download`")
        return self.directions_dir / relative

    def check(self, output: Output) -> None:
        """Fail early (before any image is processed) on an unknown name or a bad file."""
        for part in output.parts:
            self._move(part)

    def _move(self, spec: EditSpec) -> Move:
        key = spec.move_key  # detail is the decoder's business, not the move's
        with self._lock:
            if key not in self._moves:
                self._moves[key] = self._resolve(spec)
            return self._moves[key]

    def _resolve(self, spec: EditSpec) -> Move:
        shape = self.shape
        if spec.text is not None:
            if self._text_resources is None:
                self._text_resources = styleclip.load_resources(self.directions_dir, shape, self._text_encoder)
            return styleclip.text_move(self._text_resources, spec.text, spec.neutral or styleclip.DEFAULT_NEUTRAL,
                                       spec.beta or styleclip.DEFAULT_BETA)
        if spec.direction_file:
            return wdirections.direction_move(
                wdirections.load_direction(spec.direction_file, shape.n_latent, shape.style_dim))
        if spec.ganspace is not None:
            return ganspace.component_move(self._file(catalog.pca_files(shape.domain)[0]), spec.ganspace, shape)
        entry = catalog.lookup(spec.attr, shape.domain)
        files = [self._file(f) for f in entry.files]
        if entry.family in ("interfacegan", "stit"):
            return wdirections.direction_move(wdirections.load_direction(files[0], shape.n_latent, shape.style_dim))
        if entry.family == "ganspace":
            assert entry.ganspace is not None
            return ganspace.component_move(files[0], entry.ganspace, shape)
        if entry.family == "gradctrl":
            assert entry.attribute is not None
            return gradctrl.gradctrl_move(files[0], files[1], entry.attribute, shape)
        raise AssertionError(f"no loader for family {entry.family}")

    def apply(self, latent: torch.Tensor, output: Output | Sequence[EditSpec]) -> Edited:
        """Edit a batch [B, n_latent, dim]: one output for every row, or one spec per row (the same
        edit at per-row strengths, e.g. a strength ramp over video frames)."""
        if isinstance(output, (EditSpec, Combined)):
            edited = Edited(latent)
            for part in output.parts:
                moved = self._move(part)(edited.codes, part.strength)
                edited = Edited(moved.codes, add_offsets(edited.offsets, moved.offsets))
            return edited
        specs = list(output)
        first = specs[0]
        if len(specs) != latent.shape[0] or any(s.key != first.key for s in specs):
            raise EditError("per-row edits must be one edit, one strength per row")
        strengths = torch.tensor([s.strength for s in specs], dtype=torch.float32)
        return self._move(first)(latent, strengths)

