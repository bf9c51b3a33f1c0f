"""painter_seg: in-context segmentation (SegGPT line) - few-shot, video propagation, prompt tuning.

    from painter_seg import build_model, FewShotSegmenter
    seg = FewShotSegmenter(build_model("default"), strategy="feature_ensemble")
    seg.set_prompts([image], [mask])
    labels = seg.predict(target).labels

The names below are the public API; everything else is reached through its subpackage
(:mod:`painter_seg.codec`, :mod:`painter_seg.io`, :mod:`painter_seg.evaluation`, ...).
"""
from .apps.few_shot import FewShotSegmenter, Prediction
from .apps.video import VideoPropagator
from .build import build_model
from .checkpoint import load_checkpoint, save_checkpoint
from .codec import SegType
from .errors import CheckpointError, InputError
from .strategies import build_strategy
from .tuning import PromptTuner, TunedPrompt

__all__ = [
    "CheckpointError",
    "FewShotSegmenter",
    "InputError",
    "Prediction",
    "PromptTuner",
    "SegType",
    "TunedPrompt",
    "VideoPropagator",
    "build_model",
    "build_strategy",
    "load_checkpoint",
    "save_checkpoint",
]
__version__ = "0.1.0"
