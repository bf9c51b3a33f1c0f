"""Spatial ensemble (SegGPT paper §4.2): K prompts tiled n x n into one prompt half, one forward per query."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..codec.canvas import IMAGENET_MEAN, IMAGENET_STD, cell_bounds
from .base import InContextStrategy, PromptSet
from .plain import PlainStrategy


def tile_prompts(x: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Tile ``[K, 3, h, w]`` normalised prompts into one ``[1, 3, h, w]`` n x n grid (row-major cells).

    Cells as :func:`painter_seg.codec.tile_grid` (:func:`~painter_seg.codec.canvas.cell_bounds`). Each prompt
    is subsampled to its cell (``bicubic`` with antialiasing for images, ``nearest`` for masks);
    cells without a prompt are black (0 in pixel space). With n = 1 the single prompt is returned unchanged.
    """
    k, c, h, w = x.shape
    if k > n * n:
        raise ValueError(f"{k} prompts do not fit a {n}x{n} grid")
    if n == 1:
        return x[:1]
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    grid = ((torch.zeros(1, c, h, w, device=x.device, dtype=x.dtype) - mean) / std).clone()
    ys, xs = cell_bounds(h, n), cell_bounds(w, n)  # the cells of codec.tile_grid
    for i in range(k):
        r, col = divmod(i, n)
        ch, cw = ys[r + 1] - ys[r], xs[col + 1] - xs[col]
        if mode == "nearest":
            cell = F.interpolate(x[i : i + 1], size=(ch, cw), mode="nearest")
        else:
            cell = F.interpolate(x[i : i + 1], size=(ch, cw), mode="bicubic", antialias=True,
                                 align_corners=False)
        grid[:, :, ys[r] : ys[r + 1], xs[col] : xs[col + 1]] = cell
    return grid


class SpatialEnsembleStrategy(PlainStrategy):
    """K prompts subsampled into an n x n grid (n = ceil(sqrt(K))) in the prompt half: one forward per query,
    cost independent of K, detail lost as K grows. K = 1 is exactly the plain strategy."""

    name = "spatial_ensemble"

    def _check_num_prompts(self, k: int) -> None:  # any K >= 1: they share one prompt half
        InContextStrategy._check_num_prompts(self, k)

    def _prepare(self, prompts: PromptSet) -> tuple[torch.Tensor, torch.Tensor]:
        n = math.ceil(math.sqrt(prompts.num_prompts))
        return tile_prompts(prompts.images, n, "bicubic"), tile_prompts(prompts.masks, n, "nearest")
