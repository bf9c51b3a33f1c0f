"""painter_seg: in-context segmentation (SegGPT line) - few-shot, video propagation, prompt tuning."""
from .build import build_model
from .checkpoint import load_checkpoint, save_checkpoint
from .errors import CheckpointError, InputError

__all__ = ["CheckpointError", "InputError", "build_model", "load_checkpoint", "save_checkpoint"]
__version__ = "0.1.0"
