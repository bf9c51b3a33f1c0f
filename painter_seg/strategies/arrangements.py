"""Arrangements: how K prompts and B queries are laid out on canvases (SegGPT paper 4.2).

An arrangement knows nothing of where the prompts came from (example pairs, a tuned prompt or
both, see :class:`~painter_seg.strategies.base.InContextStrategy`). It does three things:

* ``check(k)``: refuse a prompt count it cannot take (``k >= 1`` is the strategy's check);
* ``prepare(images, masks)``: turn the K normalised prompts ``[K, 3, h, w]`` into the prompt
  halves put on top of every query canvas, once per prompt set;
* ``run(forward, images, masks, queries)``: paint B independent queries ``[B, 3, h, w]`` under
  those halves through ``forward`` (:func:`batched` or :func:`ensembled`).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from ..codec.canvas import cell_bounds, normalize_tensor
from ..errors import InputError

Tensor = torch.Tensor
# forward(top_images, top_masks, queries, feature_ensemble) -> painted query halves [N, 3, h, w]
Forward = Callable[[Tensor, Tensor, Tensor, bool], Tensor]


class Arrangement(Protocol):
    """What :class:`~painter_seg.strategies.base.InContextStrategy` asks of an arrangement."""

    name: str

    def check(self, k: int) -> None: ...

    def prepare(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]: ...

    def run(self, forward: Forward, images: Tensor, masks: Tensor, queries: Tensor) -> Tensor: ...


def batched(forward: Forward, images: Tensor, masks: Tensor, queries: Tensor) -> Tensor:
    """One prompt half ``[1, 3, h, w]`` shared by B independent queries: one forward, B canvases."""
    b = queries.shape[0]
    return forward(images.expand(b, -1, -1, -1), masks.expand(b, -1, -1, -1), queries, False)


def ensembled(forward: Forward, images: Tensor, masks: Tensor, queries: Tensor) -> Tensor:
    """K prompt halves per query, run as a batch of K canvases whose query-half attention outputs
    the model averages (official feature-ensemble semantics,
    :func:`painter_seg.model.layers.feature_ensemble`). Queries go one by one (each needs its own
    K-row batch); every row carries the same query half, row 0 is kept."""
    k = images.shape[0]
    rows = [forward(images, masks, q[None].expand(k, -1, -1, -1), True)[0] for q in queries]
    return torch.stack(rows)


def tile_prompts(x: Tensor, n: int, mode: str) -> Tensor:
    """Tile ``[K, 3, h, w]`` normalised prompts into one ``[1, 3, h, w]`` n x n grid (row-major).

    Cells as :func:`painter_seg.codec.tile_grid` (:func:`~painter_seg.codec.canvas.cell_bounds`).
    Each prompt is subsampled to its cell (``bicubic`` with antialiasing for images, ``nearest``
    for masks); cells without a prompt are black (0 in pixel space). With n = 1 the single prompt
    is returned unchanged.
    """
    k, c, h, w = x.shape
    if k > n * n:
        raise ValueError(f"{k} prompts do not fit a {n}x{n} grid")
    if n == 1:
        return x[:1]
    grid = normalize_tensor(torch.zeros(1, c, h, w, device=x.device, dtype=x.dtype))  # black
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


class Single:
    """Exactly one prompt; independent queries batched into one forward (``plain``)."""

    name = "plain"

    def check(self, k: int) -> None:
        if k != 1:
            raise InputError(f"the plain strategy takes exactly one prompt, got {k}; use "
                             "spatial_ensemble or feature_ensemble for several")

    def prepare(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        return images, masks

    def run(self, forward: Forward, images: Tensor, masks: Tensor, queries: Tensor) -> Tensor:
        return batched(forward, images, masks, queries)


class Tiled:
    """Spatial ensemble: K prompts subsampled into an n x n grid (n = ceil(sqrt(K))) in the prompt
    half, then run like one prompt. Cost independent of K, detail lost as K grows; K = 1 is exactly
    :class:`Single`."""

    name = "spatial_ensemble"

    def check(self, k: int) -> None:  # any K >= 1: they share one prompt half
        pass

    def prepare(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        n = math.ceil(math.sqrt(images.shape[0]))
        return tile_prompts(images, n, "bicubic"), tile_prompts(masks, n, "nearest")

    def run(self, forward: Forward, images: Tensor, masks: Tensor, queries: Tensor) -> Tensor:
        return batched(forward, images, masks, queries)


class FeatureEnsemble:
    """Feature ensemble: K prompts in the batch, the query's features averaged after every attention
    layer (:func:`ensembled`). Cost linear in K; queries one by one."""

    name = "feature_ensemble"

    def check(self, k: int) -> None:
        pass

    def prepare(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        return images, masks

    def run(self, forward: Forward, images: Tensor, masks: Tensor, queries: Tensor) -> Tensor:
        return ensembled(forward, images, masks, queries)


class SingleOrEnsemble:
    """One prompt runs like :class:`Single` (queries batched), several like
    :class:`FeatureEnsemble`: the ``tuned`` strategy (a tuned prompt alone or with extra pairs)."""

    name = "tuned"

    def check(self, k: int) -> None:
        pass

    def prepare(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        return images, masks

    def run(self, forward: Forward, images: Tensor, masks: Tensor, queries: Tensor) -> Tensor:
        run = batched if images.shape[0] == 1 else ensembled
        return run(forward, images, masks, queries)
