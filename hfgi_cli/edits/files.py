"""Reading edit files safely: tensors, ``.npy`` arrays and the pickles some projects publish.

Pickles (GradCtrl's ``model_params.pkl``, StyleCLIP's ``S_mean_std``) can run code when unpickled,
so they are read with ``safe_pickle``'s unpicklers, which admit plain containers (and numpy arrays) only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..reasons import short_reason
from ..safe_pickle import load_arrays, load_plain


class EditError(ValueError):
    """An unknown attribute or an unreadable / ill-shaped edit file (CLI exit code 2)."""


def read_tensor_file(path: Path) -> Any:
    """A ``.npy`` array as a float32 tensor, else ``torch.load`` of tensors only."""
    if not path.is_file():
        raise EditError(f"edit file not found: {path}")
    try:
        if path.suffix.lower() == ".npy":
            return torch.from_numpy(np.load(path, allow_pickle=False)).float()
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EditError(f"{path}: cannot read edit file ({short_reason(exc, 100)})") from None


def _read_pickle(path: Path, load: Callable[[bytes], Any]) -> Any:
    if not path.is_file():
        raise EditError(f"edit file not found: {path}")
    try:
        return load(path.read_bytes())
    except Exception as exc:
        raise EditError(f"{path}: cannot read ({short_reason(exc, 100)})") from None


def read_array_pickle(path: Path) -> Any:
    """A pickle of numpy arrays, lists, tuples and dicts (StyleCLIP's ``S_mean_std``), read safely."""
    return _read_pickle(path, load_arrays)


def read_plain_pickle(path: Path) -> Any:
    """A pickle of plain containers, strings and numbers (GradCtrl's ``model_params.pkl``)."""
    return _read_pickle(path, load_plain)
