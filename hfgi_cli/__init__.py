"""hfgi: face editing with HFGI (High-Fidelity GAN Inversion for Image Attribute Editing)."""

import os

# Back large CPU tensors with transparent huge pages: a 1024 px generator pass allocates and frees
# hundreds of MB per layer, and with 4 KB pages the page faults cost as much as the arithmetic.
# (Read by PyTorch's CPU allocator; must be set before the first allocation. Linux only, harmless elsewhere.)
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .api import edit_images, invert_images, load_model  # noqa: E402
from .edits import EditSpec  # noqa: E402
from .models.hfgi import HFGI, CheckpointError, ModelConfig  # noqa: E402

__all__ = ["HFGI", "CheckpointError", "EditSpec", "ModelConfig", "edit_images", "invert_images", "load_model"]
__version__ = "0.1.0"
