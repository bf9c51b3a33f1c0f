"""Which patches of the mask stream are hidden during training.

SegGPT inherits Painter's masked-image-modelling objective: the mask canvas (prompt mask over query
mask) is patch-embedded, some patches are replaced by the mask token, and the loss is taken on those
patches only. Painter mixes two masks (seggpt_facts §4.3):

* the **bottom-half** mask (exactly the query half, i.e. the test-time task), for a fraction
  ``p_half`` of the samples (Painter: 10%);
* a BEiT-style **block-wise** mask over the whole canvas, about 50% of the patches in rectangular
  blocks of 16 .. ``max_num_patches`` patches (Painter: 784 of 1568 on the 56 x 28 grid).

Every function takes an explicit :class:`numpy.random.Generator`, so a mask is a pure function of
the generator's state (resumable training draws it from ``default_rng([seed, step, rank, ...])``).
Masks are flat boolean arrays ``[Hp * Wp]`` in row-major order over the patch grid, as the model's
``bool_masked_pos`` expects (True = hidden).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["BlockMaskGenerator", "bottom_half_mask", "sample_mask", "sample_masks"]


def _grid(grid: Sequence[int]) -> tuple[int, int]:
    hp, wp = (int(g) for g in grid)
    if hp <= 0 or wp <= 0:
        raise ValueError(f"grid must be positive (Hp, Wp), got {tuple(grid)}")
    return hp, wp


def bottom_half_mask(grid: Sequence[int]) -> np.ndarray:
    """The test-time mask: every patch of the query (bottom) half hidden.

    Args:
        grid: the canvas patch grid ``(Hp, Wp)``; Hp must be even.

    Returns:
        ``[Hp * Wp]`` bool, True on the last ``Hp * Wp / 2`` entries.
    """
    hp, wp = _grid(grid)
    if hp % 2:
        raise ValueError(f"grid height {hp} must be even (prompt half over query half)")
    mask = np.zeros(hp * wp, dtype=bool)
    mask[hp * wp // 2 :] = True
    return mask


class BlockMaskGenerator:
    """Block-wise masking (BEiT / Painter ``MaskingGenerator``) with an explicit random generator.

    Rectangles of ``min_num_patches`` .. ``max_num_patches`` patches with log-uniform aspect ratio
    in ``[min_aspect, 1 / min_aspect]`` are hidden until ``num_masking_patches`` patches are covered
    (a rectangle may overlap earlier ones; only newly covered patches count, and a rectangle that
    would overshoot the target is rejected). Like the original, it stops early when ten draws in a
    row add nothing, so the count can fall a little short of the target; it never exceeds it.

    Args:
        grid: the patch grid ``(Hp, Wp)``.
        num_masking_patches: patches to hide (Painter: ``Hp * Wp // 2``).
        min_num_patches: smallest block area in patches (Painter: 16).
        max_num_patches: largest block area; None = ``num_masking_patches`` (BEiT's default).
        min_aspect: smallest block aspect ratio h/w (the largest is its inverse).
    """

    def __init__(
        self,
        grid: Sequence[int],
        num_masking_patches: int,
        min_num_patches: int = 16,
        max_num_patches: int | None = None,
        min_aspect: float = 0.3,
    ) -> None:
        self.height, self.width = _grid(grid)
        self.num_patches = self.height * self.width
        if not 0 <= num_masking_patches <= self.num_patches:
            raise ValueError(
                f"num_masking_patches must be in 0..{self.num_patches}, got {num_masking_patches}"
            )
        if not 0 < min_aspect <= 1:
            raise ValueError(f"min_aspect must be in (0, 1], got {min_aspect}")
        self.num_masking_patches = int(num_masking_patches)
        self.min_num_patches = int(min_num_patches)
        self.max_num_patches = int(
            num_masking_patches if max_num_patches is None else max_num_patches
        )
        if self.min_num_patches < 1 or self.max_num_patches < self.min_num_patches:
            raise ValueError(
                f"need 1 <= min_num_patches <= max_num_patches, got "
                f"{self.min_num_patches}, {self.max_num_patches}"
            )
        self.log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))

    def __repr__(self) -> str:
        return (
            f"BlockMaskGenerator(grid=({self.height}, {self.width}), "
            f"num_masking_patches={self.num_masking_patches}, blocks={self.min_num_patches}.."
            f"{self.max_num_patches}, aspect={math.exp(self.log_aspect[0]):.2f}..)"
        )

    def _add_block(self, mask: np.ndarray, budget: int, rng: np.random.Generator) -> int:
        """Try (10 times at most) to hide a block adding 1..budget new patches; return the count."""
        for _ in range(10):
            area = rng.uniform(self.min_num_patches, max(budget, self.min_num_patches))
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = round(math.sqrt(area * aspect))
            w = round(math.sqrt(area / aspect))
            if 0 < h < self.height and 0 < w < self.width:
                top = int(rng.integers(0, self.height - h + 1))
                left = int(rng.integers(0, self.width - w + 1))
                block = mask[top : top + h, left : left + w]
                new = h * w - int(block.sum())
                if 0 < new <= budget:
                    block[...] = True
                    return new
        return 0

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        """Draw one mask.

        Args:
            rng: the random generator (its state advances).

        Returns:
            ``[Hp * Wp]`` bool, True = hidden; at most ``num_masking_patches`` True entries.
        """
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < self.num_masking_patches:
            budget = min(self.num_masking_patches - count, self.max_num_patches)
            added = self._add_block(mask, budget, rng)
            if added == 0:
                break
            count += added
        return mask.reshape(-1)


def sample_mask(
    rng: np.random.Generator,
    grid: Sequence[int],
    p_half: float,
    mask_ratio: float = 0.5,
    min_num_patches: int = 16,
    max_num_patches: int | None = None,
    min_aspect: float = 0.3,
) -> np.ndarray:
    """One training mask: the bottom half with probability ``p_half``, else block-wise.

    Args:
        rng: random generator (its state advances).
        grid: the canvas patch grid ``(Hp, Wp)``.
        p_half: probability of the bottom-half mask (Painter: 0.1).
        mask_ratio: share of patches the block-wise mask hides (Painter: 0.5).
        min_num_patches / max_num_patches / min_aspect: see :class:`BlockMaskGenerator`;
            ``max_num_patches`` None = a quarter of the grid (Painter's 392 of 1568).

    Returns:
        ``[Hp * Wp]`` bool, True = hidden.
    """
    hp, wp = _grid(grid)
    if rng.random() < p_half:
        return bottom_half_mask((hp, wp))
    n = hp * wp
    num = round(mask_ratio * n)
    if num <= 0:
        return np.zeros(n, dtype=bool)
    lo = min(min_num_patches, num)
    hi = max(lo, max(n // 4, 1) if max_num_patches is None else max_num_patches)
    gen = BlockMaskGenerator((hp, wp), num, lo, hi, min_aspect)
    return gen(rng)


def sample_masks(
    rng: np.random.Generator, grid: Sequence[int], batch: int, p_half: float, **kwargs
) -> np.ndarray:
    """``batch`` masks from :func:`sample_mask` stacked: ``[batch, Hp * Wp]`` bool."""
    return np.stack([sample_mask(rng, grid, p_half, **kwargs) for _ in range(batch)])
