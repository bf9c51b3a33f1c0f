"""In-context inference over one shared model: a prompt source in an arrangement.

Strategies work in model space: ImageNet-normalised ``[.., 3, h, w]`` tensors of the prompt-half
size (``(h, w) = model.half_size``). The prompts come from a *source*, given to
:meth:`InContextStrategy.set_prompts` in one call: K example pairs, a tuned prompt
(:class:`painter_seg.tuning.TunedPrompt`, put first), or both. How they meet the queries is the
*arrangement* (:mod:`painter_seg.strategies.arrangements`): one prompt, prompts tiled into the
prompt half, or prompts in the batch with the query's features averaged.

SegGPT encodes prompt and query jointly, so unlike SAM there is no prompt embedding to cache: what
a strategy prepares once per prompt set is the prompt half of its canvases (resized, tiled,
batched). Turning label maps into colour masks and paintings back into labels is the predictor's
job (:class:`painter_seg.apps.few_shot.FewShotSegmenter`); :meth:`InContextStrategy.paint` is the
one shortcut from uint8 images to painted halves.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..codec.canvas import canvas_tensors, images_to_tensor, paint_from_half
from ..codec.seg_type import SegType
from ..errors import InputError
from ..model import SegGPT
from ..utils.runtime import autocast
from .arrangements import Arrangement


class TunedPromptLike(Protocol):
    """What a strategy reads of a tuned prompt (:class:`painter_seg.tuning.TunedPrompt`)."""

    image: torch.Tensor  # [3, h, w] normalised
    mask: torch.Tensor  # [3, h, w] normalised colour mask
    seg_type: int


@dataclass
class PromptSet:
    """Prompts as the model sees them.

    Attributes:
        images: ``[K, 3, h, w]`` normalised prompt images (a tuned prompt first, then the pairs).
        masks: ``[K, 3, h, w]`` normalised colour masks (one palette across the K prompts).
        seg_type: :class:`~painter_seg.codec.SegType` of all K prompts.
    """

    images: torch.Tensor
    masks: torch.Tensor
    seg_type: SegType

    @property
    def num_prompts(self) -> int:
        return self.images.shape[0]


class InContextStrategy:
    """Prompts from one source, run through a shared :class:`SegGPT` in one arrangement.

    Usage: ``set_prompts(images, masks, seg_type)``, ``set_prompts(tuned=prompt)`` or both in one
    call, then ``predict(query)`` / ``predict_torch(queries)`` many times; ``reset()`` forgets the
    prompts. The model is held by reference and never modified. Build one by name with
    :func:`painter_seg.strategies.build_strategy`.

    Args:
        model: the network (or a :class:`~painter_seg.utils.runtime.CompiledModel` around it).
        arrangement: an :class:`~painter_seg.strategies.arrangements.Arrangement`.
        prompt: a tuned prompt to start with (as ``set_prompts(tuned=prompt)``).
        name: the strategy's name (default: the arrangement's).
    """

    def __init__(self, model: SegGPT, arrangement: Arrangement,
                 prompt: TunedPromptLike | None = None, name: str | None = None) -> None:
        self.model = model
        self.arrangement = arrangement
        self.name = name or arrangement.name
        self.reset()
        if prompt is not None:
            self.set_prompts(tuned=prompt)

    @property
    def half_size(self) -> tuple[int, int]:
        """(h, w) of one canvas half: the size prompts and queries are resized to."""
        return self.model.half_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def set_prompts(self, images: torch.Tensor | None = None, masks: torch.Tensor | None = None,
                    seg_type: SegType | str | int | None = None, *,
                    tuned: TunedPromptLike | None = None) -> None:
        """Store the prompts and prepare their canvas halves once.

        Args:
            images: K example prompt images ``[K, 3, h, w]`` (or one ``[3, h, w]``), normalised;
                None = no example pair.
            masks: their normalised colour masks, same shape.
            seg_type: of the example pairs (default: the tuned prompt's, else semantic).
            tuned: a tuned prompt, put before the K pairs (its palette must be the pairs' palette).

        Raises:
            ValueError: shapes that are not ``[K, 3, h, w]`` at the model's half size, no prompt
                at all, a count the arrangement cannot take, or pairs of another seg_type than
                the tuned prompt.
        """
        images, masks = self._pairs(images, masks)
        seg = _seg_type(seg_type, tuned)
        dev = self.device
        if tuned is not None:
            t_img, t_mask = tuned.image, tuned.mask
            if t_img.shape != (3, *self.half_size) or t_mask.shape != t_img.shape:
                raise ValueError(f"tuned prompt is {tuple(t_img.shape)} / {tuple(t_mask.shape)}; "
                                 f"this model takes (3, {self.half_size[0]}, {self.half_size[1]})")
            images = torch.cat([t_img[None].to(dev, images.dtype), images.to(dev)])
            masks = torch.cat([t_mask[None].to(dev, masks.dtype), masks.to(dev)])
        if images.shape[0] < 1:
            raise ValueError("at least one prompt is needed")
        self.arrangement.check(images.shape[0])
        self.prompts = PromptSet(images.to(dev), masks.to(dev), seg)
        self.tuned = tuned
        self._prepared = self.arrangement.prepare(self.prompts.images, self.prompts.masks)

    def _pairs(self, images: torch.Tensor | None, masks: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked ``[K, 3, h, w]`` pairs (K = 0 when none are given)."""
        if images is None and masks is None:
            empty = torch.zeros(0, 3, *self.half_size)
            return empty, empty
        if images is None or masks is None:
            raise ValueError("give prompt images and masks together")
        if images.ndim == 3:
            images, masks = images[None], masks[None]
        if images.shape != masks.shape or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"prompt images {tuple(images.shape)} and masks {tuple(masks.shape)} "
                             "must both be [K, 3, h, w]")
        if tuple(images.shape[-2:]) != self.half_size:
            raise ValueError(f"prompts must be {self.half_size} (h, w), got "
                             f"{tuple(images.shape[-2:])}")
        return images, masks

    def reset(self) -> None:
        """Forget the prompts (example pairs and tuned prompt)."""
        self.prompts: PromptSet | None = None
        self.tuned: TunedPromptLike | None = None
        self._prepared: tuple[torch.Tensor, torch.Tensor] | None = None

    def _forward(self, top_imgs: torch.Tensor, top_masks: torch.Tensor, queries: torch.Tensor,
                 feature_ensemble: bool) -> torch.Tensor:
        """Canvases ``[B, 3, 2h, w]`` of prompt halves over queries
        (:func:`~painter_seg.codec.canvas_tensors`) through the model; returns the painted query
        halves ``[B, 3, h, w]`` (``[1, 3, h, w]`` under the feature ensemble, whose rows are all equal): only
        they are decoded. Differentiable."""
        assert self.prompts is not None
        imgs, tgts = canvas_tensors(top_imgs, top_masks, queries)
        seg_type = torch.full((imgs.shape[0],), int(self.prompts.seg_type), device=imgs.device)
        return self.model(imgs, tgts, self.model.query_mask(imgs.device), seg_type,
                          feature_ensemble=feature_ensemble, query_only=True)

    @torch.inference_mode()  # inference only; _forward itself stays differentiable
    def predict_torch(self, queries: torch.Tensor) -> torch.Tensor:
        """Independent normalised queries ``[B, 3, h, w]`` -> painted query halves, same shape."""
        if self._prepared is None:
            raise RuntimeError(f"{self.name} strategy: call set_prompts(...) before predicting")
        imgs, masks = self._prepared
        return self.arrangement.run(self._forward, imgs, masks, queries.to(imgs.device, imgs.dtype))

    def predict(self, query: torch.Tensor) -> torch.Tensor:
        """One normalised query ``[3, h, w]`` -> its painted query half ``[3, h, w]``."""
        return self.predict_torch(query[None])[0]

    @torch.inference_mode()
    def paint(self, images: Sequence[np.ndarray], precision: str = "fp32", batch_size: int = 4
              ) -> list[np.ndarray]:
        """uint8 RGB query images ``[H, W, 3]`` (any sizes) -> their paintings at the half size.

        Queries are resized and normalised by :func:`~painter_seg.codec.images_to_tensor`, run
        ``batch_size`` at a time under ``precision`` autocast, and de-normalised by
        :func:`~painter_seg.codec.paint_from_half`.

        Returns:
            One ``[h, w, 3]`` float32 RGB painting in [0, 255] per image.
        """
        device, out = self.device, []
        for s in range(0, len(images), batch_size):
            q = images_to_tensor(images[s : s + batch_size], self.half_size).contiguous()
            with autocast(device, precision):
                pred = self.predict_torch(q.to(device))
            out.extend(paint_from_half(pred))
        return out


def _seg_type(seg_type: SegType | str | int | None, tuned: TunedPromptLike | None) -> SegType:
    """The prompts' seg_type: the given one, else the tuned prompt's, else semantic; a given one
    that differs from the tuned prompt's is an error."""
    given = None if seg_type is None else SegType.parse(seg_type)
    if tuned is None:
        return SegType.SEMANTIC if given is None else given
    own = SegType.parse(tuned.seg_type)
    if given is not None and given != own:
        raise InputError(f"extra pairs have seg_type {given}, the tuned prompt {own}")
    return own
