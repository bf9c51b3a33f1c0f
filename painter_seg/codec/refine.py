"""Edge-aware refinement of a painted mask: the class scores follow the query image's edges.

A small model paints its half at a coarse patch grid (``painter_small``: 12 x 12 patches of 16 px over a
192 x 192 half; 8 x 8 over 128 x 128 until stage 8), so on a photograph each patch covers a twelfth of the image
side and the decoded mask is
blocky, its edges cutting across the object's. :class:`GuidedRefine` runs a colour guided filter (He, Sun and
Tang, "Guided Image Filtering", TPAMI 2013) over the per-class scores of :func:`decode_paint_scores`, with the
query image as the guide and a radius of about one patch: inside every window each class score becomes a
linear function of the image's colour, so a score edge moves onto the colour edge next to it. The
coefficients are computed at a working size (``max_side``) and applied at full size (the "fast guided
filter"), so the cost does not grow with the photo.

Measured on the shipped model (docs/refine): 1-shot mIoU persam 70.9 -> 79.8, fss1000 49.4 -> 55.7,
isbi 71.3 -> 74.0, generated episodes 25.6 -> 30.2; kvasir and the held-out PASCAL classes unchanged
within 0.6. :func:`resolve_refine` turns it on for coarse grids (``auto``) and leaves ViT-L's 28 x 28
grid, whose decode is the reference's, alone.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np

from .palette import _as_paint, decode_paint_scores

__all__ = ["REFINE_CHOICES", "GuidedRefine", "guided_filter", "refine_decode", "resolve_refine"]

REFINE_CHOICES = ("auto", "guided", "none")
AUTO_MAX_GRID = 16  # "auto" refines when a half has at most this many patches a side


@dataclass(frozen=True)
class GuidedRefine:
    """Settings of the guided refinement.

    Args:
        radius: window radius in model patches (1.0: a window two patches wide).
        eps: regularisation of the filter (guide colours in 0..1): larger keeps the scores smoother.
        max_side: the working size the coefficients are computed at (longer side, pixels).
    """

    radius: float = 1.0
    eps: float = 3e-3
    max_side: int = 320

    def __post_init__(self) -> None:
        if not self.radius > 0 or not self.eps > 0 or int(self.max_side) < 16:
            raise ValueError(f"GuidedRefine: radius and eps must be > 0 and max_side >= 16, got {self}")

    def window_radius(self, size: Sequence[int], grid: Sequence[int]) -> int:
        """The window radius in pixels for an image of ``size`` ``(H, W)`` seen as ``grid`` patches."""
        return max(1, round(self.radius * min(size[0] / grid[0], size[1] / grid[1])))


def resolve_refine(refine: str | GuidedRefine | None, grid: Sequence[int]) -> GuidedRefine | None:
    """``refine`` as settings, or None for no refinement.

    Args:
        refine: ``"guided"``, ``"none"`` / None, ``"auto"`` (guided when a half is at most
            :data:`AUTO_MAX_GRID` patches a side, i.e. the small shipped model, none for ViT-L), settings,
            or a mapping of settings (``{"radius": 1.5}``, a config block).
        grid: ``(rows, cols)`` of patches in one half of the model's canvas.
    """
    from ..errors import InputError

    if refine is None or isinstance(refine, GuidedRefine):
        return refine
    if isinstance(refine, Mapping):  # a config block: {radius: 1.5, eps: 0.01}
        names = {f.name for f in fields(GuidedRefine)}
        unknown = sorted(set(refine) - names)
        if unknown:
            raise InputError(f"refine: unknown setting(s) {unknown}; known: {sorted(names)}")
        try:
            return GuidedRefine(**{k: type(getattr(GuidedRefine, k))(v) for k, v in refine.items()})
        except (TypeError, ValueError) as e:
            raise InputError(f"refine={dict(refine)}: {e}") from None
    if refine not in REFINE_CHOICES:
        raise InputError(f"refine={refine}: expected one of {', '.join(REFINE_CHOICES)} (or settings such as "
                         f"{{radius: 1.0, eps: 0.003}})")
    if refine == "auto":
        return GuidedRefine() if max(grid) <= AUTO_MAX_GRID else None
    return GuidedRefine() if refine == "guided" else None


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def _inverse_covariance(chan: list, mean: list, box: Callable, eps: float) -> tuple:
    """The per-pixel guide covariance ``[[a, b, c], [b, d, f], [c, f, g]] + eps I`` inverted in closed form
    (adjugate ``i00..i22`` and ``1 / determinant``; batched ``np.linalg.inv`` costs ~50x more on 3 x 3
    matrices). Works on numpy arrays and torch tensors alike (``box``: the window mean for them)."""

    def var(i: int, j: int) -> Any:
        return box(chan[i] * chan[j]) - mean[i] * mean[j]

    a, b, c, d, f, g = var(0, 0) + eps, var(0, 1), var(0, 2), var(1, 1) + eps, var(1, 2), var(2, 2) + eps
    i00, i01, i02 = d * g - f * f, c * f - b * g, b * f - c * d
    i11, i12, i22 = a * g - c * c, b * c - a * f, a * d - b * b
    return (i00, i01, i02, i11, i12, i22), 1.0 / (a * i00 + b * i01 + c * i02)


def _linear_coefficients(chan: list, mean: list, inverse: tuple, p: Any, box: Callable) -> tuple:
    """Un-averaged coefficients ``(a0, a1, a2, b)`` of the guided filter of ``p`` (numpy or torch, as
    :func:`_inverse_covariance`)."""
    (i00, i01, i02, i11, i12, i22), inv_det = inverse
    mean_p = box(p)
    cov = [box(chan[i] * p) - mean[i] * mean_p for i in range(3)]
    a0 = (i00 * cov[0] + i01 * cov[1] + i02 * cov[2]) * inv_det
    a1 = (i01 * cov[0] + i11 * cov[1] + i12 * cov[2]) * inv_det
    a2 = (i02 * cov[0] + i12 * cov[1] + i22 * cov[2]) * inv_det
    return a0, a1, a2, mean_p - a0 * mean[0] - a1 * mean[1] - a2 * mean[2]


def _guided_coefficients(guide: np.ndarray, srcs: np.ndarray, r: int, eps: float
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Box-averaged coefficients ``(A [C, H, W, 3], B [C, H, W])`` of the colour guided filter of every
    ``srcs[c]`` ``[H, W]`` under ``guide`` ``[H, W, 3]`` (float32, 0..1): ``q_c = A_c . I + B_c``."""
    def box(x: np.ndarray) -> np.ndarray:
        return _box(x, r)

    mean_i = box(guide)
    chan = [guide[..., i] for i in range(3)]
    mean = [mean_i[..., i] for i in range(3)]
    inverse = _inverse_covariance(chan, mean, box, np.float32(eps))
    coef_a, coef_b = [], []
    for p in srcs:
        a0, a1, a2, b = _linear_coefficients(chan, mean, inverse, p, box)
        coef_b.append(box(b))
        coef_a.append(box(np.stack([a0, a1, a2], axis=-1)))
    return np.stack(coef_a), np.stack(coef_b)


def guided_filter(guide: Any, srcs: Any, radius: int, eps: float) -> np.ndarray:
    """Colour guided filter of each ``srcs[c]`` (``[C, H, W]`` float) under ``guide`` (``[H, W, 3]`` uint8 or
    float in 0..1), window radius ``radius`` pixels; returns ``[C, H, W]`` float32."""
    guide = np.asarray(guide)
    guide = guide.astype(np.float32) / 255.0 if guide.dtype == np.uint8 else guide.astype(np.float32)
    srcs = np.asarray(srcs, dtype=np.float32)
    if guide.ndim != 3 or guide.shape[-1] != 3 or srcs.ndim != 3 or srcs.shape[1:] != guide.shape[:2]:
        raise ValueError(f"guided_filter: guide [H, W, 3] and srcs [C, H, W] of one size, got "
                         f"{guide.shape} and {srcs.shape}")
    a, b = _guided_coefficients(guide, srcs, max(1, int(radius)), float(eps))
    return np.stack([_apply(a[k], b[k], guide) for k in range(len(a))])


def _apply(a: np.ndarray, b: np.ndarray, guide: np.ndarray) -> np.ndarray:
    """``a . guide + b`` per pixel (``a`` ``[H, W, 3]``; explicit sums: a reduction over a last axis of 3 is slow)."""
    return a[..., 0] * guide[..., 0] + a[..., 1] * guide[..., 1] + a[..., 2] * guide[..., 2] + b


def refine_decode(paint: Any, palette: np.ndarray, image: np.ndarray, size: Sequence[int],
                  grid: Sequence[int], settings: GuidedRefine, bg_threshold: float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Decode a painted half at ``size`` with its class scores refined along ``image``'s edges.

    Args:
        paint: ``[h, w, 3]`` float RGB 0..255, the painted half at the model's resolution.
        palette: ``[K + 1, 3]`` colours (row 0 = background).
        image: the query, ``[H', W', 3]`` uint8 RGB (resized to ``size`` when it differs).
        size: ``(H, W)`` to decode at.
        grid: ``(rows, cols)`` patches of the half (the radius is in patches).
        settings: the refinement.
        bg_threshold: as :func:`~painter_seg.codec.palette.decode_paint`.

    Returns:
        ``(labels, scores)``: ``[H, W]`` compact ids ``0..K`` and ``[H, W]`` float32 scores in [0, 1]
        (the chosen class's refined probability).
    """
    paint = _as_paint(paint).astype(np.float32)
    h, w = int(size[0]), int(size[1])
    image = np.ascontiguousarray(np.asarray(image)[..., :3])
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    s = min(1.0, settings.max_side / max(h, w))
    wh, ww = max(8, round(h * s)), max(8, round(w * s))
    small = image if (wh, ww) == (h, w) else cv2.resize(image, (ww, wh), interpolation=cv2.INTER_AREA)
    guide_small = small.astype(np.float32) / 255.0
    probs = decode_paint_scores(cv2.resize(paint, (ww, wh), interpolation=cv2.INTER_LINEAR), palette)
    r = settings.window_radius((wh, ww), grid)
    coef_a, coef_b = _guided_coefficients(guide_small, probs, r, settings.eps)
    guide = image.astype(np.float32) / 255.0
    best = np.full((h, w), -np.inf, np.float32)
    labels = np.zeros((h, w), np.int64)
    total = np.zeros((h, w), np.float32)
    p_bg = None
    for k in range(len(probs)):
        a, b = coef_a[k], coef_b[k]
        if (wh, ww) != (h, w):  # coefficients are smooth: bilinear up, applied to the full-size guide
            a = cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)
            b = cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR)
        q = np.maximum(_apply(a, b, guide), 0.0)
        total += q
        better = q > best
        labels[better] = k
        best[better] = q[better]
        if k == 0:
            p_bg = q
    total = np.maximum(total, 1e-6)
    scores = np.clip(best / total, 0.0, 1.0)
    if bg_threshold > 0:
        weak = (labels > 0) & (scores < bg_threshold)
        labels[weak] = 0
        scores = np.where(weak, np.clip(p_bg / total, 0.0, 1.0), scores)
    return labels, scores.astype(np.float32)


# ----------------------------------------------------------------------------------------- differentiable form

def _box_t(x: Any, r: int) -> Any:
    """Mean over ``(2r+1)^2`` windows of ``[B, C, H, W]``, borders mirrored as cv2's ``BORDER_REFLECT``."""
    import torch
    import torch.nn.functional as F

    x = torch.cat([x[..., :r, :].flip(-2), x, x[..., -r:, :].flip(-2)], dim=-2)
    x = torch.cat([x[..., :r].flip(-1), x, x[..., -r:].flip(-1)], dim=-1)
    return F.avg_pool2d(x, 2 * r + 1, stride=1)


def guided_filter_torch(guide: Any, srcs: Any, radius: int, eps: float) -> Any:
    """:func:`guided_filter` in torch, differentiable in ``srcs``: ``guide`` ``[B, 3, H, W]`` in 0..1, ``srcs``
    ``[B, C, H, W]``; returns ``[B, C, H, W]``. ``radius`` must be below H and W."""
    r = max(1, int(radius))
    if guide.shape[1] != 3 or guide.shape[-2:] != srcs.shape[-2:] or r >= min(guide.shape[-2:]):
        raise ValueError(f"guided_filter_torch: guide [B, 3, H, W] and srcs [B, C, H, W] of one size, radius < "
                         f"H, W; got {tuple(guide.shape)}, {tuple(srcs.shape)}, radius {r}")

    def box(x: Any) -> Any:
        return _box_t(x, r)

    chan = [guide[:, i : i + 1] for i in range(3)]
    mean = [box(c) for c in chan]
    a0, a1, a2, b = _linear_coefficients(chan, mean, _inverse_covariance(chan, mean, box, eps), srcs, box)
    return box(a0) * chan[0] + box(a1) * chan[1] + box(a2) * chan[2] + box(b)
