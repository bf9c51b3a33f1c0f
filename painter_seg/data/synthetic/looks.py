"""Appearance: colours, texture patterns, object looks and background textures."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .config import COLOR_NAMES, SyntheticConfig

_TEX_RES = 64      # canonical texture side (object frame [-1, 1]^2)
_BG_RES = 128      # canonical background texture side


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))[i]
    return np.array(rgb, np.float32) * 255.0


def _random_color(rng: np.random.Generator) -> np.ndarray:
    h = rng.random()
    s = rng.uniform(0.0, 0.12) if rng.random() < 0.15 else rng.uniform(0.35, 1.0)
    return _hsv(h, s, rng.uniform(0.15, 1.0))


def color_dist(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two RGB colours (0-255 scale), computed in float32."""
    return float(np.sqrt(((np.asarray(a, np.float32) - np.asarray(b, np.float32)) ** 2).sum()))


def color_far(rng: np.random.Generator, avoid: list[np.ndarray], min_dist: float,
              sampler: Callable[[np.random.Generator], np.ndarray] = _random_color) -> np.ndarray:
    """A colour at least ``min_dist`` from all of ``avoid`` (the farthest of 12 tries otherwise)."""
    best, best_d = None, -1.0
    for _ in range(12):
        c = sampler(rng)
        d = min((color_dist(c, a) for a in avoid), default=1e9)
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _named_color(rng: np.random.Generator, name: str) -> np.ndarray:
    base = np.array(COLOR_NAMES[name], np.float32)
    return np.clip(base + rng.uniform(-12, 12, 3), 0, 255).astype(np.float32)


@lru_cache(maxsize=8)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    c = ((np.arange(n, dtype=np.float32) + 0.5) * (2.0 / n) - 1.0)
    u, v = np.meshgrid(c, c)
    u.flags.writeable = False
    v.flags.writeable = False
    return u, v


def _pattern(rng: np.random.Generator, kind: str, n: int) -> np.ndarray | None:
    """Mixing weight in [0, 1] of texture ``kind`` on an n x n grid over [-1, 1]^2 (None: flat)."""
    if kind == "flat":
        return None
    u, v = _grid(n)
    a = rng.uniform(0, np.pi)
    ca, sa = math.cos(a), math.sin(a)
    x = u * ca + v * sa
    y = v * ca - u * sa
    if kind == "stripes":
        p = rng.uniform(0.17, 0.45)
        return (((x / p + rng.random()) % 1.0) < rng.uniform(0.35, 0.65)).astype(np.float32)
    if kind == "checker":
        p = rng.uniform(0.2, 0.5)
        return ((np.floor(x / p + rng.random()) + np.floor(y / p + rng.random())) % 2.0
                ).astype(np.float32)
    if kind == "gradient":
        if rng.random() < 0.6:
            return np.clip((x + 1.0) * 0.5, 0, 1)
        cx, cy = rng.uniform(-0.5, 0.5, 2)
        return np.clip(np.sqrt((u - cx) ** 2 + (v - cy) ** 2) / 1.3, 0, 1)
    if kind == "dots":
        p = rng.uniform(0.24, 0.45)
        r = rng.uniform(0.2, 0.36)
        gx = (x / p + rng.random()) % 1.0 - 0.5
        gy = (y / p + rng.random()) % 1.0 - 0.5
        return (gx * gx + gy * gy < r * r).astype(np.float32)
    if kind == "waves":
        p, q = rng.uniform(0.2, 0.45), rng.uniform(0.5, 1.2)
        amp = rng.uniform(0.3, 0.8)
        return 0.5 + 0.5 * np.sin(2 * np.pi * (x / p + amp * np.sin(2 * np.pi * y / q)))
    if kind == "noise":
        k = int(rng.integers(3, 8))
        g = rng.random((k, k)).astype(np.float32)
        t = cv2.resize(g, (n, n), interpolation=cv2.INTER_CUBIC)
        lo, hi = float(t.min()), float(t.max())
        return (t - lo) / max(hi - lo, 1e-6)
    raise ValueError(f"unknown texture {kind!r}")


def _paint(rng: np.random.Generator, kind: str, c1: np.ndarray, c2: np.ndarray, n: int,
           shade: float = 0.5) -> np.ndarray:
    """An n x n x 3 float32 texture mixing c1 and c2 by pattern ``kind``, linearly shaded with
    probability ``shade``."""
    w = _pattern(rng, kind, n)
    if w is None:
        img = np.broadcast_to(c1, (n, n, 3)).astype(np.float32)
    else:
        img = c1 + (c2 - c1) * w[..., None]
    if rng.random() < shade:
        u, v = _grid(n)
        b = rng.uniform(0, 2 * np.pi)
        img = img * (1.0 + rng.uniform(0.04, 0.16) * (u * math.cos(b) + v * math.sin(b)))[..., None]
    return img.astype(np.float32)


@dataclass(frozen=True)
class Look:
    """An object's appearance: texture type, colours and its canonical texture image."""

    texture: str
    c1: np.ndarray
    c2: np.ndarray
    tex: np.ndarray | None   # [_TEX_RES, _TEX_RES, 3] float32; None: plain c1
    color_name: str | None = None


def object_tex(rng: np.random.Generator, kind: str, c1: np.ndarray, c2: np.ndarray
               ) -> np.ndarray | None:
    """Canonical object texture; flat looks are plain (None) 60% of the time, else shaded."""
    if kind == "flat":
        return None if rng.random() < 0.6 else _paint(rng, kind, c1, c2, _TEX_RES, 1.0)
    return _paint(rng, kind, c1, c2, _TEX_RES)


def make_look(rng: np.random.Generator, texture: str, c1: np.ndarray | None = None,
              contrast: float = 60.0, color_name: str | None = None) -> Look:
    """A look of ``texture``; ``c1`` random unless given, ``c2`` at least ``contrast`` away."""
    c1 = _random_color(rng) if c1 is None else c1
    c2 = color_far(rng, [c1], contrast)
    return Look(texture, c1, c2, object_tex(rng, texture, c1, c2), color_name)


def tone_look(rng: np.random.Generator, name: str) -> Look:
    """A look whose colour reads as colour ``name``: flat, shaded gradient or mottled noise."""
    c1 = _named_color(rng, name)
    texture = ("flat", "gradient", "noise")[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
    c2 = np.clip(c1 * rng.uniform(0.72, 0.9) + rng.uniform(-8, 8, 3), 0, 255).astype(np.float32)
    return Look(texture, c1, c2, object_tex(rng, texture, c1, c2), name)


def random_look(rng: np.random.Generator, cfg: SyntheticConfig,
                forbid: tuple[str, ...] = ()) -> Look:
    """A general-purpose look: flat with probability 1 - texture_prob, else a random pattern."""
    patterned = [t for t in cfg.textures if t != "flat" and t not in forbid]
    if ("flat" not in forbid and rng.random() >= cfg.texture_prob) or not patterned:
        return make_look(rng, "flat")
    return make_look(rng, patterned[int(rng.integers(len(patterned)))])


def background_texture(rng: np.random.Generator, cfg: SyntheticConfig, avoid: list[np.ndarray],
                       min_dist: float, forbid: tuple[str, ...] = ()) -> np.ndarray:
    """A canonical background texture ([_BG_RES]^2 x 3 float32), colours away from ``avoid``."""
    c1 = color_far(rng, avoid, min_dist)
    options = [t for t in cfg.textures if t != "flat" and t not in forbid]
    if options and rng.random() < cfg.bg_texture_prob:
        kind = options[int(rng.integers(len(options)))]
        c2 = color_far(rng, avoid, min_dist)
        c2 = c1 + (c2 - c1) * rng.uniform(0.25, 0.8)
    else:
        kind, c2 = "flat", c1
    return _paint(rng, kind, c1, c2.astype(np.float32), _BG_RES)


def bg_matrix(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Random similarity mapping the background texture over (and beyond) the frame."""
    scale = rng.uniform(0.55, 1.5) * max(h, w) / _BG_RES
    a = rng.uniform(0, 2 * np.pi)
    lin = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    m = np.empty((2, 3))
    m[:, :2] = lin
    m[:, 2] = np.array([w / 2.0, h / 2.0]) - lin @ np.full(2, _BG_RES / 2.0)
    return m
