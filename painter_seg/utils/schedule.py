"""The one learning-rate schedule of the project: linear warm-up, then cosine decay to a floor.

Used by training (:mod:`painter_seg.training`) and by prompt tuning, per optimiser step:

* step ``s < warmup_steps``: ``(s + 1) / (warmup_steps + 1)`` (never 0, never a full-lr first step);
* then ``min_ratio + (1 - min_ratio) * (1 + cos(pi * t)) / 2`` with
  ``t = (s - warmup_steps) / (total_steps - warmup_steps)`` clipped to [0, 1], so steps beyond
  ``total_steps`` keep ``min_ratio``.
"""
from __future__ import annotations

import math

import torch

__all__ = ["WarmupCosine", "build_scheduler", "warmup_cosine"]


def warmup_cosine(step: int, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier of optimiser step ``step`` (0-based).

    Args:
        step: steps already taken (0 for the first step).
        total_steps: schedule length (> 0); later steps keep ``min_ratio``.
        warmup_steps: steps of linear warm-up (>= 0).
        min_ratio: final multiplier, in [0, 1].

    Returns:
        The multiplier in ``(0, 1]`` (``[min_ratio, 1]`` after warm-up).
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    span = max(total_steps - warmup_steps, 1)
    t = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


class WarmupCosine:
    """:func:`warmup_cosine` as a ``LambdaLR`` lambda with its settings in plain fields.

    A callable object (not a closure) so that ``LambdaLR.state_dict()`` stores ``warmup_steps``,
    ``total_steps`` and ``min_lr_ratio`` (the field names of training checkpoints) and a resumed run
    can replace them with its configured values.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> None:
        if total_steps <= 0 or warmup_steps < 0:
            raise ValueError(
                f"need total_steps > 0 and warmup_steps >= 0, got {total_steps}, {warmup_steps}"
            )
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, self.total_steps, self.warmup_steps, self.min_lr_ratio)


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warm-up + cosine schedule over every group of ``optimizer`` (each group's ``lr`` is
    its peak); call ``scheduler.step()`` after each optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(warmup_steps, total_steps, min_lr_ratio)
    )
