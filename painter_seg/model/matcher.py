"""A region matcher: which prompt class is a painted query region most like, by its outline?

The painting model finds the objects of a multi-class query but cannot tell shape families apart from one
example each (docs/training, stages 11-16: the painting loss never taught attention to match outlines in CPU
time). A small CNN learns the families from object windows in half an hour (63% of held-out objects among 16
families, against 8% for the commonest). :class:`RegionMatcher` is that CNN, kept beside the painting network
(``net.region_matcher`` in the model config, its weights in the same file) and used only after decoding: each
painted foreground region of the query and each prompt class get a family distribution, and
:func:`painter_seg.codec.assign.assign_regions` combines it with the painted colours.

Input of the matcher: a ``window`` x ``window`` cut of the image *at the model's scale* (the half it paints,
``model.half_size``) centred on the region, averaged over ``pool`` x ``pool`` cells, and the share of each cell the
region covers. The CNN's last features are averaged over that coverage and a linear head names the family.
Trained by :mod:`painter_seg.training.stem_pretrain` (``tools/pretrain_stem.py --target matcher``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .layers import conv_stages

__all__ = ["RegionMatcher", "region_windows", "windows_to_tensors"]


def region_windows(image: np.ndarray, masks: Sequence[np.ndarray], window: int = 128, pool: int = 2
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Windows around each region of ``image``: ``(pixels [n, w, w, 3] uint8, coverage [n, w, w] uint8 0-255)``.

    ``image`` ``[H, W, 3]`` uint8, ``masks`` boolean ``[H, W]`` (non-empty) regions; each window is the
    ``window`` x ``window`` cut centred on the region's centroid (the image mirrored past its borders), averaged
    over ``pool`` x ``pool`` cells (``w = window // pool``); coverage is the share of each cell in the region.
    """
    import cv2

    r = window // 2
    pad = np.pad(np.asarray(image, np.uint8), ((r, r), (r, r), (0, 0)), mode="reflect")
    small = (window // pool, window // pool)
    xs, cs = [], []
    for m in masks:
        m = np.asarray(m, bool)
        ys, xx = np.nonzero(m)
        if ys.size == 0:
            raise ValueError("region_windows: an empty region")
        cy, cx = int(ys.mean()), int(xx.mean())
        win = pad[cy:cy + window, cx:cx + window]
        cov = np.pad(m, r)[cy:cy + window, cx:cx + window].astype(np.float32)
        xs.append(cv2.resize(win, small, interpolation=cv2.INTER_AREA))
        cs.append(np.round(255 * cv2.resize(cov, small, interpolation=cv2.INTER_AREA)).astype(np.uint8))
    w = window // pool
    if not xs:
        return np.zeros((0, w, w, 3), np.uint8), np.zeros((0, w, w), np.uint8)
    return np.stack(xs), np.stack(cs)


def windows_to_tensors(pix: np.ndarray, cov: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`region_windows`' output as the matcher's input: normalised ``[n, 3, w, w]`` and coverage
    ``[n, 1, w, w]`` in [0, 1] (float32)."""
    from ..codec.canvas import normalize_tensor

    x = normalize_tensor(torch.from_numpy(pix).permute(0, 3, 1, 2).float() / 255.0)
    return x, torch.from_numpy(cov).float()[:, None] / 255.0


class RegionMatcher(nn.Module):
    """Shape-family distributions of image regions (see the module docstring).

    Args:
        widths: channels of each convolution stage (one stride-2 3 x 3 convolution each, GELU after).
        extra: additional stride-1 convolutions per stage.
        pool: the window is averaged over ``pool`` x ``pool`` cells before the first stage.
        num_classes: shape families of the head.
        window: pixels (at the model's scale) of the cut around a region.
        in_chans: image channels.
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 96, 128), extra: Sequence[int] | None = (0, 0, 1, 2),
                 pool: int = 2, num_classes: int = 16, window: int = 128, in_chans: int = 3) -> None:
        super().__init__()
        if int(num_classes) < 2 or int(window) < 16 or int(pool) < 1 or int(window) % int(pool):
            raise ValueError(f"region matcher: num_classes {num_classes} (>= 2), window {window} (>= 16, a multiple "
                             f"of pool) and pool {pool} (>= 1) do not describe a matcher")
        self.body, self.width = conv_stages(in_chans, widths, extra)
        self.head = nn.Linear(self.width, int(num_classes))
        self.pool, self.window, self.num_classes = int(pool), int(window), int(num_classes)

    def forward(self, x: torch.Tensor, cover: torch.Tensor) -> torch.Tensor:
        """Family logits ``[N, classes]`` of pooled, normalised windows ``x`` ``[N, 3, w, w]`` and their coverage
        ``cover`` ``[N, 1, w, w]`` in [0, 1]."""
        f = self.body(x)
        w = F.adaptive_avg_pool2d(cover.to(f.dtype), f.shape[-2:])
        return self.head((f * w).sum((2, 3)) / w.sum((2, 3)).clamp_min(1e-3))

    @torch.no_grad()
    def describe(self, image: np.ndarray, masks: Sequence[np.ndarray], turns: int = 8) -> np.ndarray:
        """Family probabilities ``[len(masks), classes]`` (float64) of regions of ``image`` (uint8 RGB at the model's
        scale), averaged over the first ``turns`` of the 8 quarter turns and mirrorings of each window (a family
        does not change under them; the matcher is trained with them)."""
        if not 1 <= int(turns) <= 8:
            raise ValueError(f"turns={turns}: expected 1..8")
        pix, cov = region_windows(image, masks, self.window, self.pool)
        if len(pix) == 0:
            return np.zeros((0, self.num_classes))
        p = next(self.parameters())
        x, c = (t.to(p.device, p.dtype) for t in windows_to_tensors(pix, cov))
        views = [(k, flip) for flip in (False, True) for k in range(4)][: int(turns)]
        xs = torch.cat([torch.rot90(x.flip(3) if f else x, k, (2, 3)) for k, f in views])
        cs = torch.cat([torch.rot90(c.flip(3) if f else c, k, (2, 3)) for k, f in views])
        probs = self(xs, cs).float().softmax(1).reshape(len(views), len(pix), -1).mean(0)
        return probs.cpu().double().numpy()
