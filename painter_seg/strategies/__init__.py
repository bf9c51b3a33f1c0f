"""Inference strategies over one shared model; pick one by name with :func:`build_strategy`.

A strategy is a prompt source (example pairs, a tuned prompt or both) in one arrangement
(:class:`InContextStrategy`, :mod:`~painter_seg.strategies.arrangements`):

====================  ======================================================================
name                  arrangement (:mod:`~painter_seg.strategies.arrangements`)
====================  ======================================================================
``plain``             ``Single``: one prompt; queries batched
``spatial_ensemble``  ``Tiled``: K prompts tiled n x n into the prompt half
``feature_ensemble``  ``FeatureEnsemble``: K prompts in the batch, query features averaged
``tuned``             ``SingleOrEnsemble``: one prompt plain, several feature-ensembled (a
                      tuned prompt alone or with extra pairs)
====================  ======================================================================
"""
from __future__ import annotations

from collections.abc import Callable

from ..model import SegGPT
from .arrangements import (
    Arrangement,
    FeatureEnsemble,
    Single,
    SingleOrEnsemble,
    Tiled,
    tile_prompts,
)
from .base import InContextStrategy, PromptSet, TunedPromptLike

STRATEGIES: dict[str, Callable[[], Arrangement]] = {
    "plain": Single,
    "spatial_ensemble": Tiled,
    "feature_ensemble": FeatureEnsemble,
    "tuned": SingleOrEnsemble,
}


def build_strategy(name: str, model: SegGPT, prompt: TunedPromptLike | None = None
                   ) -> InContextStrategy:
    """Strategy ``name`` (a key of :data:`STRATEGIES`) over ``model``, optionally starting from a
    tuned ``prompt`` (any arrangement takes one; ``tuned`` is the one meant for it)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; available: {', '.join(sorted(STRATEGIES))}")
    return InContextStrategy(model, STRATEGIES[name](), prompt, name=name)


__all__ = ["STRATEGIES", "InContextStrategy", "PromptSet", "build_strategy", "tile_prompts"]
