"""Labelled views of one fixed scene, for prompt tuning (:func:`generate_scene_views`)."""
from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np

from .config import SyntheticConfig, check_size
from .episodes import generate_episode
from .render import sensor_noise


def _scene_view(rng: np.random.Generator, img: np.ndarray, lab: np.ndarray, h: int, w: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """One view of a larger scene: a random rotation / scale / shear / shift, then lighting and
    noise. Image (bilinear) and labels (nearest) take the same warp and the same mirrored border."""
    src_h, src_w = lab.shape
    a = math.radians(rng.uniform(-12, 12))
    s = math.exp(rng.uniform(math.log(0.85), math.log(1.15))) * min(h / src_h, w / src_w) * 1.2
    shear = rng.uniform(-0.08, 0.08)
    lin = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) @ np.array(
        [[1.0, shear], [0.0, 1.0]])
    shift = rng.uniform(-0.08, 0.08, 2) * np.array([w, h])
    m = np.empty((2, 3))
    m[:, :2] = lin
    m[:, 2] = np.array([w / 2.0, h / 2.0]) + shift - lin @ np.array([src_w / 2.0, src_h / 2.0])
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    out_lab = cv2.warpAffine(lab.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_REFLECT_101).astype(np.int64)
    gain = rng.uniform(0.75, 1.25) * rng.uniform(0.92, 1.08, 3)  # exposure and a colour cast
    canvas = out.astype(np.float32) * gain.astype(np.float32) + np.float32(rng.uniform(-20, 20))
    canvas += sensor_noise(rng, h, w) * np.float32(rng.uniform(0.0, 5.0))
    return np.clip(canvas, 0, 255).astype(np.uint8), out_lab


def generate_scene_views(seed: int, num_views: int, size: tuple[int, int] = (224, 224),
                         num_classes: int = 2, cfg: SyntheticConfig | None = None
                         ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Labelled views of one fixed scene (a pure function of its arguments).

    One scene is drawn once, slightly larger than ``size``: ``num_classes`` target shape families
    (ids 1..C, one or two objects each) among unlabelled distractors and clutter, as in a
    ``multiclass`` episode (``semantic`` for C = 1). Every view warps that same layout (rotation
    +-12 degrees, scale 0.85-1.15, shear, shift +-8 %) and changes exposure, colour cast and noise:
    a fixed camera set-up filmed again and again, the data prompt tuning learns from.

    Args:
        seed: any non-negative int.
        num_views: number of views N (>= 1).
        size: ``(height, width)`` of every view.
        num_classes: C, 1..8.
        cfg: generator settings for the scene (its ``multi_classes`` is replaced by C).

    Returns:
        N pairs ``(uint8 [H, W, 3] RGB, int64 [H, W] ids in 0..C)``. A view shows every class
        whenever a redraw (up to 10 per view) can make it so.
    """
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if not 1 <= num_classes <= 8:
        raise ValueError(f"num_classes must be in 1..8, got {num_classes}")
    h, w = check_size(size)
    cfg = SyntheticConfig() if cfg is None else cfg
    if num_classes > 1:
        cfg = replace(cfg, multi_classes=(num_classes, num_classes))
    big = (round(h * 1.25), round(w * 1.25))
    ep = generate_episode(seed, "multiclass" if num_classes > 1 else "semantic", size=big, cfg=cfg)
    img, lab = ep.query
    want = set(range(1, ep.num_classes + 1))
    rng = np.random.default_rng([seed, 1])
    views = []
    for _ in range(num_views):
        for _ in range(10):
            view = _scene_view(rng, img, lab, h, w)
            if want <= set(np.unique(view[1]).tolist()):
                break
        views.append(view)
    return views
