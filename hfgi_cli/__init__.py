"""hfgi: face editing with HFGI (High-Fidelity GAN Inversion for Image Attribute Editing)."""

from .api import edit_images, invert_images, load_model
from .edits import EditSpec
from .models.hfgi import HFGI, CheckpointError, ModelConfig

__all__ = ["HFGI", "CheckpointError", "EditSpec", "ModelConfig", "edit_images", "invert_images", "load_model"]
__version__ = "0.1.0"
