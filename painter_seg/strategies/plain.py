"""Plain in-context inference: one prompt pair per canvas."""
from __future__ import annotations

import torch

from .base import InContextStrategy


class PlainStrategy(InContextStrategy):
    """One prompt. Independent queries are batched into one forward, all sharing the prepared prompt half."""

    name = "plain"

    def _check_num_prompts(self, k: int) -> None:
        if k != 1:
            raise ValueError(f"the plain strategy takes exactly one prompt, got {k}; use spatial_ensemble or "
                             "feature_ensemble for several")

    @torch.inference_mode()  # inference only; _forward itself stays differentiable
    def predict_torch(self, queries: torch.Tensor) -> torch.Tensor:
        imgs, masks = self._require_prompts()
        b = queries.shape[0]
        return self._forward(imgs.expand(b, -1, -1, -1), masks.expand(b, -1, -1, -1),
                             queries.to(imgs.device, imgs.dtype), feature_ensemble=False)
