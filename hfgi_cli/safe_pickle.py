"""Reading downloaded pickles without letting them run code.

A pickle names the Python callables that rebuild its objects, so ``pickle.load`` of a file from the
internet runs whatever the file names. Each reader here admits an explicit list of callables and
refuses the rest: plain containers need none at all, numpy arrays a handful, and the tensor
*shapes* of a PyTorch / TorchScript archive only inert stand-ins (no tensor data is read).
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from typing import Any, ClassVar

NUMPY_ARRAYS = frozenset({
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
})
"""What numpy arrays and plain containers are rebuilt with, and nothing else."""


class _Admitting(pickle.Unpickler):
    """Resolves only the (module, name) pairs in ``allowed``."""

    allowed: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    what: ClassVar[str] = "plain containers, strings and numbers"

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only {self.what}")


class _PlainOnly(_Admitting):
    pass


class _ArraysOnly(_Admitting):
    allowed = NUMPY_ARRAYS
    what = "numpy arrays and plain containers"


def load_plain(data: bytes) -> Any:
    """A pickle of dicts, lists, tuples, strings and numbers (no callable at all is admitted)."""
    return _PlainOnly(io.BytesIO(data)).load()


def load_arrays(data: bytes) -> Any:
    """A pickle of numpy arrays in plain containers (``encoding="latin1"`` reads Python 2 pickles)."""
    return _ArraysOnly(io.BytesIO(data), encoding="latin1").load()


# ---------------------------------------------------------------------------------------------- shapes
class TensorShape(tuple):
    """What a tensor in an archive is reduced to: its shape."""


class ScriptObject:
    """Stands in for a TorchScript module class (``__torch__.*``): keeps its attributes, runs nothing."""

    state: Any = None

    def __init__(self, *args: Any) -> None:
        self.state = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _rebuild_tensor(storage: Any, offset: int, size: Any, *rest: Any) -> TensorShape:
    return TensorShape(int(s) for s in size)


def _first(value: Any, *rest: Any) -> Any:
    return value


class _ShapesOnly(pickle.Unpickler):
    """The ``data.pkl`` of a ``torch.save`` or ``torch.jit.save`` zip archive, tensors as shapes."""

    REBUILDERS: ClassVar[dict[tuple[str, str], Any]] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _first,
        ("torch.jit._pickle", "restore_type_tag"): _first,
        ("torch.jit._pickle", "build_intlist"): list,
        ("torch.jit._pickle", "build_doublelist"): list,
        ("torch.jit._pickle", "build_boollist"): list,
        ("torch.jit._pickle", "build_tensorlist"): list,
        ("torch.jit._pickle", "build_genericlist"): list,
        ("collections", "OrderedDict"): OrderedDict,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.REBUILDERS:
            return self.REBUILDERS[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return name  # only named inside a storage reference, never called
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (ScriptObject,), {"__module__": module})
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only tensors and TorchScript modules")

    def persistent_load(self, pid: Any) -> Any:
        return None  # the tensor data stays in the archive


def load_tensor_shapes(data: bytes) -> dict[str, TensorShape]:
    """Every tensor of an archive's ``data.pkl`` by dotted name (``token_embedding.weight``), whether
    the archive holds a state dict or a whole TorchScript module; nothing it names is run."""
    shapes: dict[str, TensorShape] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, TensorShape):
            shapes[prefix] = value
        elif isinstance(value, ScriptObject):
            walk(value.state, prefix)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str):
                    walk(item, f"{prefix}.{key}" if prefix else key)

    walk(_ShapesOnly(io.BytesIO(data)).load(), "")
    return shapes
