"""Prompt tuning: learn a prompt pair for a frozen model from labelled images of one scene.

* :mod:`~painter_seg.tuning.artifact`: :class:`TunedPrompt`, the learned prompt on disk;
* :mod:`~painter_seg.tuning.tuner`: :class:`PromptTuner` and its :class:`TuneConfig`;
* :mod:`~painter_seg.tuning.scene`: the scene's labelled images, their split and held-out scoring.
"""
from __future__ import annotations

from .artifact import TunedPrompt
from .scene import Scene, load_scene, score_labels, score_pairs, split_pairs, synthetic_scene
from .tuner import TUNE_RECIPE, PromptTuner, TuneConfig

__all__ = [
    "TUNE_RECIPE",
    "PromptTuner",
    "Scene",
    "TuneConfig",
    "TunedPrompt",
    "load_scene",
    "score_labels",
    "score_pairs",
    "split_pairs",
    "synthetic_scene",
]
