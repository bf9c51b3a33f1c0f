"""Inference strategies over one shared model; pick one by name with :func:`build_strategy`."""
from __future__ import annotations

from ..model import SegGPT
from .base import InContextStrategy, PromptSet
from .feature_ensemble import FeatureEnsembleStrategy
from .plain import PlainStrategy
from .spatial_ensemble import SpatialEnsembleStrategy, tile_prompts
from .tuned import TunedPrompt, TunedPromptStrategy

STRATEGIES: dict[str, type[InContextStrategy]] = {
    cls.name: cls
    for cls in (PlainStrategy, SpatialEnsembleStrategy, FeatureEnsembleStrategy, TunedPromptStrategy)
}


def build_strategy(name: str, model: SegGPT, **kwargs) -> InContextStrategy:
    """Strategy ``name`` (one of :data:`STRATEGIES`) over ``model``."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; available: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name](model, **kwargs)


__all__ = [
    "STRATEGIES",
    "FeatureEnsembleStrategy",
    "InContextStrategy",
    "PlainStrategy",
    "PromptSet",
    "SpatialEnsembleStrategy",
    "TunedPrompt",
    "TunedPromptStrategy",
    "build_strategy",
    "tile_prompts",
]
