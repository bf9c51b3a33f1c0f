"""In-context inference strategies: how prompts and a query are put on canvases and run through one model.

Strategies work in model space: ImageNet-normalised ``[.., 3, h, w]`` tensors of the prompt-half size
(``h = model.img_size[0] // 2``, ``w = model.img_size[1]``). Turning files and label maps into such tensors and
painted outputs back into labels is the apps' job (:mod:`painter_seg.apps`), not the strategies'.

SegGPT encodes prompt and query jointly, so unlike SAM there is no prompt embedding to cache: what a strategy
prepares once per prompt set is the prompt half of its canvases (resized, tiled, batched).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from ..model import SegGPT


@dataclass
class PromptSet:
    """Prompts as the model sees them.

    Attributes:
        images: ``[K, 3, h, w]`` normalised prompt images.
        masks: ``[K, 3, h, w]`` normalised colour-coded prompt masks (same palette across the K prompts).
        seg_type: 0 semantic, 1 instance.
    """

    images: torch.Tensor
    masks: torch.Tensor
    seg_type: int

    @property
    def num_prompts(self) -> int:
        return self.images.shape[0]


class InContextStrategy(ABC):
    """One way of running prompts + query through a shared :class:`SegGPT`.

    Usage: ``set_prompts(images, masks, seg_type)`` once, then ``predict(query)`` or
    ``predict_torch(queries)`` many times; ``reset()`` forgets the prompts. The model is held by reference and
    never modified.
    """

    name: str = "base"

    def __init__(self, model: SegGPT) -> None:
        self.model = model
        self.prompts: PromptSet | None = None
        self._prepared: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def half_size(self) -> tuple[int, int]:
        """(h, w) of one canvas half: the size prompts and queries are resized to."""
        return self.model.half_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def set_prompts(self, images: torch.Tensor, masks: torch.Tensor, seg_type: int = 0) -> None:
        """Store K prompt pairs (``[K, 3, h, w]`` normalised each) and prepare their canvas halves once."""
        if images.ndim == 3:
            images, masks = images[None], masks[None]
        if images.shape != masks.shape or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"prompt images {tuple(images.shape)} and masks {tuple(masks.shape)} must both "
                             "be [K, 3, h, w]")
        if tuple(images.shape[-2:]) != self.half_size:
            raise ValueError(f"prompts must be {self.half_size} (h, w), got {tuple(images.shape[-2:])}")
        if int(seg_type) not in (0, 1):
            raise ValueError(f"seg_type must be 0 (semantic) or 1 (instance), got {seg_type}")
        self._check_num_prompts(images.shape[0])
        dev = self.device
        self.prompts = PromptSet(images.to(dev), masks.to(dev), int(seg_type))
        self._prepared = self._prepare(self.prompts)

    def reset(self) -> None:
        """Forget the prompts."""
        self.prompts = None
        self._prepared = None

    def _check_num_prompts(self, k: int) -> None:
        if k < 1:
            raise ValueError("at least one prompt is needed")

    def _prepare(self, prompts: PromptSet) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt halves ``(images, masks)`` ``[P, 3, h, w]`` to put on top of every query canvas."""
        return prompts.images, prompts.masks

    def _require_prompts(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._prepared is None:
            raise RuntimeError(f"{type(self).__name__}: call set_prompts(...) before predicting")
        return self._prepared

    def _forward(self, top_imgs, top_masks, queries, feature_ensemble: bool) -> torch.Tensor:
        """Run canvases ``[B, 3, 2h, w]`` built from prompt halves over queries; returns the painted query
        halves ``[B, 3, h, w]``."""
        assert self.prompts is not None
        imgs = torch.cat([top_imgs, queries], dim=2)
        tgts = torch.cat([top_masks, top_masks], dim=2)  # official: the query half repeats the prompt mask
        seg_type = torch.full((imgs.shape[0],), self.prompts.seg_type, device=imgs.device)
        pred = self.model(imgs, tgts, self.model.query_mask(imgs.device), seg_type,
                          feature_ensemble=feature_ensemble)
        return pred[:, :, pred.shape[2] // 2:]

    def predict(self, query: torch.Tensor) -> torch.Tensor:
        """One normalised query ``[3, h, w]`` -> its painted query half ``[3, h, w]`` (normalised space)."""
        return self.predict_torch(query[None])[0]

    @abstractmethod
    def predict_torch(self, queries: torch.Tensor) -> torch.Tensor:
        """Independent normalised queries ``[B, 3, h, w]`` -> painted query halves ``[B, 3, h, w]``."""
