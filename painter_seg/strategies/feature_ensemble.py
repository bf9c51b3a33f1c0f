"""Feature ensemble (SegGPT paper §4.2): K prompts in the batch, query features averaged after attention."""
from __future__ import annotations

import torch

from .base import InContextStrategy


class FeatureEnsembleStrategy(InContextStrategy):
    """K prompts for one query run as a batch of K canvases; the model averages the query half of every
    attention output over them (official semantics, see :func:`painter_seg.model.layers.feature_ensemble`).
    Cost is linear in K. Queries are processed one by one (each needs its own K-row batch)."""

    name = "feature_ensemble"

    @torch.inference_mode()  # inference only; _forward itself stays differentiable
    def predict_torch(self, queries: torch.Tensor) -> torch.Tensor:
        imgs, masks = self._require_prompts()
        k = imgs.shape[0]
        outs = []
        for q in queries.to(imgs.device, imgs.dtype):
            pred = self._forward(imgs, masks, q[None].expand(k, -1, -1, -1), feature_ensemble=True)
            outs.append(pred[0])  # every row carries the same query half
        return torch.stack(outs)
