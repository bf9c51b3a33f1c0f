"""Training objective of SegGPT / Painter."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..codec.canvas import denormalize_tensor, normalize
from ..codec.palette import palette_sigma
from ..codec.refine import guided_filter_torch

# The background colour (black) in the model's ImageNet-normalised target space.
_BLACK = tuple(normalize(np.zeros(3)).tolist())


def masked_smooth_l1(
    pred: torch.Tensor,
    target: torch.Tensor,
    bool_masked_pos: torch.Tensor,
    patch_size: int,
    valid: torch.Tensor | None = None,
    beta: float = 0.01,
    fg_weight: float = 1.0,
) -> torch.Tensor:
    """Smooth-L1 between painted and true mask canvases, averaged over the masked pixels.

    Args:
        pred: ``[N, 3, H, W]`` model output (ImageNet-normalised space).
        target: ``[N, 3, H, W]`` true mask canvas, same space.
        bool_masked_pos: ``[1 or N, (H/p)*(W/p)]`` True where the mask stream was hidden; only those pixels count.
        patch_size: p, the side of one patch in pixels.
        valid: optional ``[N, 1 or 3, H, W]`` per-pixel weight (e.g. 0 on padding / ignore regions).
        beta: smooth-L1 transition point (official 0.01).
        fg_weight: weight of pixels whose true colour is not the background (black); 1 = official.
            A model trained with a squared loss paints the mean colour where it is unsure, and nearest-colour
            decoding then calls a pixel foreground only when p(foreground) > 1/2; with weight w that point
            moves to 1 / (1 + w), which suits small objects, whose IoU suffers more from misses.

    Returns:
        Scalar: ``sum(loss * w) / sum(w)`` with ``w = mask * valid`` (times ``fg_weight`` on foreground
        pixels); official: mean over masked pixels.
    """
    if fg_weight <= 0:
        raise ValueError(f"fg_weight must be > 0, got {fg_weight}")
    n, c, h, w = pred.shape
    hp, wp = h // patch_size, w // patch_size
    m = bool_masked_pos.reshape(-1, 1, hp, 1, wp, 1).to(pred.dtype)
    m = m.expand(n, c, hp, patch_size, wp, patch_size).reshape(n, c, h, w)
    if valid is not None:
        m = m * valid.to(pred.dtype)
    if fg_weight != 1.0:
        black = torch.tensor(_BLACK, dtype=target.dtype, device=target.device).view(1, 3, 1, 1)
        fg = ((target - black).abs().amax(1, keepdim=True) > 1e-3).to(pred.dtype)
        m = m * (1.0 + (fg_weight - 1.0) * fg)
    loss = F.smooth_l1_loss(pred, target.to(pred.dtype), reduction="none", beta=beta)
    return (loss * m).sum() / m.sum().clamp_min(1e-6)


def decoded_cross_entropy(
    paint: torch.Tensor,
    labels: torch.Tensor,
    palette: np.ndarray,
    guide: torch.Tensor | None = None,
    radius: int = 1,
    eps: float = 3e-3,
    valid: torch.Tensor | None = None,
    fg_weight: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy of the class probabilities the few-shot decode reads from a painted half: the colour match
    of :func:`~painter_seg.codec.palette.decode_paint_scores` (same kernel width), refined along ``guide``'s
    edges as :mod:`painter_seg.codec.refine` does when ``guide`` is given. Differentiable in ``paint``.

    Args:
        paint: ``[N, 3, h, w]`` painted halves (ImageNet-normalised space, as the model outputs them).
        labels: ``[N, h, w]`` int64 true compact ids ``0..K`` (palette rows).
        palette: ``[K + 1, 3]`` colours (row 0 = background).
        guide: ``[N, 3, h, w]`` the query images in 0..1, or None for the plain decode.
        radius: the refinement's window radius in pixels.
        eps: its regularisation.
        valid: optional ``[N, 1, h, w]`` per-pixel weight (0 on ignored pixels).
        fg_weight: weight of pixels whose true id is not background.

    Returns:
        Scalar: the weighted mean of ``-log p(true id)``.
    """
    if fg_weight <= 0:
        raise ValueError(f"fg_weight must be > 0, got {fg_weight}")
    px = denormalize_tensor(paint.float()) * 255.0
    pal = torch.as_tensor(np.asarray(palette, np.float32).reshape(-1, 3), device=px.device)
    d2 = ((px[:, None] - pal[None, :, :, None, None]) ** 2).sum(2)  # [N, K + 1, h, w]
    sigma = palette_sigma(np.asarray(palette))
    probs = torch.softmax(-d2 / (2.0 * sigma * sigma), dim=1)
    if guide is not None:
        probs = guided_filter_torch(guide.float(), probs, radius, eps).clamp_min(0.0)
        probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-6)
    p_true = probs.gather(1, labels[:, None].long()).squeeze(1).clamp_min(1e-6)
    w = torch.where(labels > 0, float(fg_weight), 1.0).to(px.dtype)
    if valid is not None:
        w = w * valid[:, 0].to(px.dtype)
    return -(torch.log(p_true) * w).sum() / w.sum().clamp_min(1e-6)


def _patch_family_counts(family: torch.Tensor, patch_size: int, num_classes: int) -> torch.Tensor:
    """``[N, H/p, W/p, num_classes + 1]`` pixel counts of each value in each patch (the last bin: any other value)."""
    n, h, w = family.shape
    hp, wp = h // patch_size, w // patch_size
    f = family.long()
    f = torch.where((f >= 0) & (f < num_classes), f, torch.full_like(f, num_classes))  # one "other" bin
    cell = (torch.arange(hp, device=f.device).repeat_interleave(patch_size)[:, None] * wp
            + torch.arange(wp, device=f.device).repeat_interleave(patch_size)[None, :])  # [H, W]
    idx = (torch.arange(n, device=f.device)[:, None, None] * (hp * wp) + cell) * (num_classes + 1) + f
    counts = torch.bincount(idx.reshape(-1), minlength=n * hp * wp * (num_classes + 1))
    return counts.reshape(n, hp, wp, num_classes + 1)


def patch_family_targets(family: torch.Tensor, patch_size: int, num_classes: int,
                         min_share: float = 0.5) -> torch.Tensor:
    """Patch targets of a per-pixel family map: the value covering at least ``min_share`` of a patch.

    Args:
        family: ``[N, H, W]`` uint8 / int values ``0..num_classes - 1``; anything else (e.g.
            :data:`painter_seg.data.synthetic.episodes.FAMILY_IGNORE`) is never a target.
        patch_size: p.
        num_classes: the number of target values.
        min_share: the share of a patch's pixels its value must cover.

    Returns:
        ``[N, H/p, W/p]`` int64: the patch's value, or -1 (no value covers enough of it).
    """
    counts = _patch_family_counts(family, patch_size, num_classes)
    top, arg = counts.max(-1)
    ok = (top >= min_share * patch_size * patch_size) & (arg < num_classes)
    return torch.where(ok, arg, torch.full_like(arg, -1))


def family_cross_entropy(logits: torch.Tensor, family: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cross-entropy of per-patch family logits against a per-pixel family map.

    Args:
        logits: ``[N, Hp, Wp, K]`` (K = background + the shape families).
        family: ``[N, Hp * p, Wp * p]`` family map (:func:`patch_family_targets` makes the targets).
        patch_size: p.

    Returns:
        Scalar: the mean over the patches with a target; 0 (still part of the graph) when none has one.
    """
    t = patch_family_targets(family, patch_size, logits.shape[-1])
    valid = t >= 0
    if not bool(valid.any()):
        return logits.float().sum() * 0.0
    return F.cross_entropy(logits.float()[valid], t[valid])


def object_family_cross_entropy(logits: torch.Tensor, family: torch.Tensor, patch_size: int,
                                halves: int = 2) -> torch.Tensor:
    """Cross-entropy of family logits pooled over each family's region in each half of the canvas.

    Interior patches of a flat object carry no shape, so a per-patch target (:func:`family_cross_entropy`)
    asks every patch for what only the object as a whole shows. Here the patch logits are averaged over the
    patches a family covers in one half, each weighted by the share of it covered (for a linear head this is
    the head applied to the region's pooled tokens), and that one vector is classified. Background (0) and
    values outside ``1..K - 1`` are never targets; a region must cover at least one patch's area.

    Args:
        logits: ``[N, Hp, Wp, K]`` (K = background + the shape families).
        family: ``[N, Hp * p, Wp * p]`` family map.
        patch_size: p.
        halves: horizontal bands of the canvas pooled separately (2: prompt half and query half).

    Returns:
        Scalar: the mean over the regions; 0 (still part of the graph) when there are none.
    """
    n, hp, wp, k = logits.shape
    if hp % halves:
        raise ValueError(f"{hp} patch rows do not split into {halves} halves")
    cover = _patch_family_counts(family, patch_size, k)[..., 1:k].to(torch.float32) / patch_size**2
    cover = cover.reshape(n, halves, hp // halves, wp, k - 1)  # [N, B, h, w, F]
    lg = logits.float().reshape(n, halves, hp // halves, wp, k)
    area = cover.sum((2, 3))  # [N, B, F]
    pooled = torch.einsum("nbyxf,nbyxk->nbfk", cover, lg) / area.clamp_min(1e-6)[..., None]
    valid = area >= 1.0
    if not bool(valid.any()):
        return logits.float().sum() * 0.0
    target = torch.arange(1, k, device=logits.device).expand(n, halves, k - 1)
    return F.cross_entropy(pooled[valid], target[valid])
