"""Training objective of SegGPT / Painter."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_smooth_l1(
    pred: torch.Tensor,
    target: torch.Tensor,
    bool_masked_pos: torch.Tensor,
    patch_size: int,
    valid: torch.Tensor | None = None,
    beta: float = 0.01,
) -> torch.Tensor:
    """Smooth-L1 between painted and true mask canvases, averaged over the masked pixels.

    Args:
        pred: ``[N, 3, H, W]`` model output (ImageNet-normalised space).
        target: ``[N, 3, H, W]`` true mask canvas, same space.
        bool_masked_pos: ``[1 or N, (H/p)*(W/p)]`` True where the mask stream was hidden; only those pixels count.
        patch_size: p, the side of one patch in pixels.
        valid: optional ``[N, 1 or 3, H, W]`` per-pixel weight (e.g. 0 on padding / ignore regions).
        beta: smooth-L1 transition point (official 0.01).

    Returns:
        Scalar: ``sum(loss * mask * valid) / sum(mask * valid)`` (official: mean over masked pixels).
    """
    n, c, h, w = pred.shape
    hp, wp = h // patch_size, w // patch_size
    m = bool_masked_pos.reshape(-1, 1, hp, 1, wp, 1).to(pred.dtype)
    m = m.expand(n, c, hp, patch_size, wp, patch_size).reshape(n, c, h, w)
    if valid is not None:
        m = m * valid.to(pred.dtype)
    loss = F.smooth_l1_loss(pred, target.to(pred.dtype), reduction="none", beta=beta)
    return (loss * m).sum() / m.sum().clamp_min(1e-6)
