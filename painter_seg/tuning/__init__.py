"""Prompt tuning: learn a prompt pair for a frozen model from labelled images of one scene."""
from __future__ import annotations

from ..strategies.tuned import TunedPrompt
from .prompt_tuner import TUNE_RECIPE, PromptTuner, TuneConfig, score_pairs, split_pairs

__all__ = ["TUNE_RECIPE", "PromptTuner", "TuneConfig", "TunedPrompt", "score_pairs", "split_pairs"]
