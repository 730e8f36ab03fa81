"""Reading edit files safely: tensors, ``.npy`` arrays and the pickles some projects publish.

Pickles (GradCtrl's ``model_params.pkl``, StyleCLIP's ``S_mean_std``) can run code when unpickled,
so they are read with an unpickler that builds numpy arrays and plain containers only.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch


class EditError(ValueError):
    """An unknown attribute or an unreadable / ill-shaped edit file (CLI exit code 2)."""


def first_line(exc: BaseException, limit: int = 100) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else exc.__class__.__name__)[:limit]


def read_tensor_file(path: Path) -> Any:
    """A ``.npy`` array as a float32 tensor, else ``torch.load`` of tensors only."""
    if not path.is_file():
        raise EditError(f"edit file not found: {path}")
    try:
        if path.suffix.lower() == ".npy":
            return torch.from_numpy(np.load(path, allow_pickle=False)).float()
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EditError(f"{path}: cannot read edit file ({first_line(exc)})") from None


class _ArraysOnly(pickle.Unpickler):
    """Admits what numpy arrays and plain containers are made of, nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("builtins", "list"),
        ("builtins", "dict"),
        ("builtins", "tuple"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # how protocol-2 pickles store bytes (an array's buffer)
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays and plain containers")


def read_array_pickle(path: Path) -> Any:
    """A pickle of numpy arrays, lists, tuples and dicts (numbers and strings inside), read safely."""
    if not path.is_file():
        raise EditError(f"edit file not found: {path}")
    try:
        return _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except Exception as exc:
        raise EditError(f"{path}: cannot read ({first_line(exc)})") from None
