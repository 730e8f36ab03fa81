"""hfgi: face editing with HFGI (High-Fidelity GAN Inversion for Image Attribute Editing).

    import hfgi_cli
    model = hfgi_cli.load_model()                           # the published checkpoint
    result = model.edit("group.jpg", {"smile": 2, "age": -1})
    result.images["smile+2"].save("smile.jpg")

Importing the package loads nothing heavy and changes nothing in the process: the names below
are imported on first use (so ``hfgi --help`` starts without torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "engine",
    "Model": "engine",
    "Result": "engine",
    "Face": "engine",
    "Runtime": "engine",
    "EditSpec": "edits",
    "Combined": "edits",
    "EditError": "edits",
    "InputError": "inputs",
    "HFGI": "models.hfgi",
    "CheckpointError": "models.hfgi",
    "ModelConfig": "models.hfgi",
    "Form": "models.stylegan2",
}

__all__ = [
    "HFGI", "CheckpointError", "Combined", "EditError", "EditSpec", "Face", "Form", "InputError", "Model",
    "ModelConfig", "Result", "Runtime", "load_model",
]

if TYPE_CHECKING:
    from .edits import Combined, EditError, EditSpec
    from .engine import Face, Model, Result, Runtime, load_model
    from .inputs import InputError
    from .models.hfgi import HFGI, CheckpointError, ModelConfig
    from .models.stylegan2 import Form


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'hfgi_cli' has no attribute {name!r}")
