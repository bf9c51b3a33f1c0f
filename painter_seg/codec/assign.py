"""Region assignment: the class of each painted region of a multi-class query, from its colours and its outline.

The model paints a multi-class query's objects well (class-agnostic IoU about 58 on generated episodes) and their
colours badly: which prompt colour an object gets is near chance when only the shape family tells the classes
apart (docs/training, stages 11-16). With a :class:`~painter_seg.model.matcher.RegionMatcher` in the model, each
connected foreground region of the decoded query is given one class by combining two votes:

* the paint: the mean per-class probability of the region's painted colours (:func:`decode_paint_scores`);
* the outline: ``sum_f q(f) p_k(f)``, the chance that the region and prompt class ``k`` share a shape family, with
  ``q`` the matcher's family distribution for the region and ``p_k`` the mean over class ``k``'s prompt objects;

``score_k = (1 - weight) log paint_k + weight log outline_k`` (both normalised over the classes). A confident
painting keeps its colour; a painting that hesitates between colours is decided by the outline.

It only applies where the prompts say that classes are objects of their own: when the prompt classes are parts of
one object (hair, face, arms of a person), one class per region would be wrong, and the decoded labels are kept
(:func:`prompt_purity`). And only to semantic prompts (classes; the few-shot predictor's choice):
instances of one class share their outline, and which instance is which is the painting's call, by appearance
(on generated multi-instance episodes region assignment cost 3 points, docs/training "Region matcher").
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .palette import decode_paint_scores

__all__ = ["AssignSettings", "RegionPrototypes", "assign_regions", "prompt_prototypes"]


@dataclass(frozen=True)
class AssignSettings:
    """Settings of region assignment (defaults chosen on generated multi-class episodes of seed 5;
    docs/training "Region matcher").

    Attributes:
        weight: the outline's share of the log-score (0 = the paint alone, 1 = the outline alone).
        min_pixels: regions smaller than this (pixels at the model's scale) keep their painted labels.
        min_purity: regions are assigned at all only when the prompt classes are objects of their own at least
            this much (:func:`prompt_purity`; parts of one object are not).
        turns: views of each region the matcher averages (1-8 quarter turns and mirrorings).
    """

    weight: float = 0.7
    min_pixels: int = 30
    min_purity: float = 0.5
    turns: int = 8

    def __post_init__(self) -> None:
        if (not 0.0 <= self.weight <= 1.0 or self.min_pixels < 1 or not 0.0 <= self.min_purity <= 1.0
                or not 1 <= self.turns <= 8):
            raise ValueError(f"region assignment: weight {self.weight} and min_purity {self.min_purity} must be in "
                             f"[0, 1], min_pixels {self.min_pixels} >= 1, turns {self.turns} in 1..8")


@dataclass
class RegionPrototypes:
    """What the prompts say per class: ``families`` ``[K, F]`` (mean family distribution of each compact class
    1..K's prompt objects) and ``purity`` (see :func:`prompt_purity`)."""

    families: np.ndarray
    purity: float


def _regions(mask: np.ndarray, min_pixels: int) -> list[np.ndarray]:
    n, cc = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    out = [cc == c for c in range(1, n)]
    return [m for m in out if int(m.sum()) >= min_pixels]


def prompt_purity(labels: Sequence[np.ndarray]) -> float:
    """How much the prompt classes are objects of their own: for each class of the compact ``labels`` (0..K), the
    share of its pixels lying in connected foreground regions where it is the commonest class, averaged over the
    classes. Separate objects: 1.0; objects that sometimes touch: about 0.75 (generated multi-class prompts);
    parts of one object: 1 / (number of parts) or so (0.07-0.2 on the CIHP human-part masks)."""
    own: dict[int, int] = {}
    total: dict[int, int] = {}
    for lab in labels:
        n, cc = cv2.connectedComponents((lab > 0).astype(np.uint8), connectivity=8)
        major = np.zeros(n, np.int64)
        for c in range(1, n):
            major[c] = np.bincount(lab[cc == c]).argmax()
        for k in np.unique(lab[lab > 0]):
            m = lab == k
            own[int(k)] = own.get(int(k), 0) + int((major[cc[m]] == k).sum())
            total[int(k)] = total.get(int(k), 0) + int(m.sum())
    return float(np.mean([own[k] / total[k] for k in total])) if total else 0.0


def prompt_prototypes(matcher, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_labels: int,
                      min_pixels: int = 30, turns: int = 8) -> RegionPrototypes:
    """Family distribution of each prompt class, from ``images`` (uint8 RGB) and compact ``labels`` (0..K), both
    at the model's scale. A class's objects are its connected regions (its whole mask when every region is
    smaller than ``min_pixels``); a class with no pixel gets a uniform distribution."""
    fams = np.full((num_labels, matcher.num_classes), 1.0 / matcher.num_classes)
    for k in range(1, num_labels + 1):
        probs = []
        for img, lab in zip(images, labels):
            m = lab == k
            if not m.any():
                continue
            regions = _regions(m, min_pixels) or [m]
            probs.append(matcher.describe(img, regions, turns=turns))
        if probs:
            fams[k - 1] = np.concatenate(probs).mean(0)
    return RegionPrototypes(fams, prompt_purity(labels))


def assign_regions(labels: np.ndarray, paint: np.ndarray, palette: np.ndarray, ids: Sequence[int],
                   image: np.ndarray, matcher, prototypes: RegionPrototypes,
                   settings: AssignSettings = AssignSettings()) -> np.ndarray:
    """Give each connected foreground region of decoded ``labels`` one class (see the module docstring).

    Args:
        labels: ``[H, W]`` decoded ids (0 = background; ``ids`` otherwise), at the output size.
        paint: the painted query half ``[h, w, 3]`` float RGB 0..255 at the model's scale.
        palette: ``[K + 1, 3]`` colours of the prompt classes (row 0 background).
        ids: the K ids of palette rows 1..K.
        image: the query image ``[H', W', 3]`` uint8 RGB (any size; resized to the paint's).
        matcher: the model's :class:`~painter_seg.model.matcher.RegionMatcher`.
        prototypes: :func:`prompt_prototypes` of the same prompts.

    Returns:
        New ``[H, W]`` ids; ``labels`` itself when there is nothing to assign (one class, impure prompts, no region).
    """
    ids = np.asarray(ids, np.int64)
    if len(ids) < 2 or prototypes.purity < settings.min_purity:
        return labels
    h, w = paint.shape[:2]
    n, cc = cv2.connectedComponents((labels > 0).astype(np.uint8), connectivity=8)
    regions, halves = [], []
    for m in (cc == c for c in range(1, n)):
        half = cv2.resize(m.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_AREA) > 127
        if int(half.sum()) >= settings.min_pixels:
            regions.append(m)
            halves.append(half)
    if not regions:
        return labels
    probs = decode_paint_scores(paint, palette)[1:].transpose(1, 2, 0)  # [h, w, K]
    small = cv2.resize(np.asarray(image, np.uint8), (w, h), interpolation=cv2.INTER_AREA)
    outline = matcher.describe(small, halves, turns=settings.turns) @ prototypes.families.T  # [R, K]
    outline = outline / np.clip(outline.sum(1, keepdims=True), 1e-12, None)
    out = labels.copy()
    for m, half, o in zip(regions, halves, outline):
        votes = probs[half].mean(0)
        votes = votes / max(float(votes.sum()), 1e-12)
        score = (1 - settings.weight) * np.log(votes + 1e-4) + settings.weight * np.log(o + 1e-4)
        out[m] = ids[int(score.argmax())]
    return out
