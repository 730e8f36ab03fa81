"""hfgi: face editing with HFGI (High-Fidelity GAN Inversion for Image Attribute Editing)."""

from .models.hfgi import HFGI, CheckpointError, ModelConfig

__all__ = ["HFGI", "CheckpointError", "ModelConfig"]
__version__ = "0.1.0"
