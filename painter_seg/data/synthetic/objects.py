"""Objects: outline + look (:class:`Proto`), pose (:class:`Placed`), and their random placement."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import SyntheticConfig
from .looks import Look
from .shapes import Shape, make_shape


@dataclass(frozen=True)
class Proto:
    """An object before layout: outline, look, intrinsic aspect/shear, label and bookkeeping."""

    shape: Shape
    look: Look
    aspect: float
    shear: float
    label: int = 0
    role: str = "distractor"     # target / distractor / clutter
    instance: int = -1
    angle_range: float = math.pi
    size_hint: float = 0.0       # > 0: radius (fraction of the short side) varied by <= 1.6x


@dataclass
class Placed:
    """A proto with its pose: centre (px), radius (px), rotation (rad), aspect and shear."""

    proto: Proto
    cx: float
    cy: float
    size: float
    angle: float
    aspect: float
    shear: float

    def linear(self) -> np.ndarray:
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        rot = np.array([[ca, -sa], [sa, ca]], np.float64)
        sc = np.array([[self.size * self.aspect, self.size * self.aspect * self.shear],
                       [0.0, self.size / self.aspect]], np.float64)
        return rot @ sc


def make_proto(rng: np.random.Generator, family: str, look: Look, label: int = 0,
               role: str = "distractor", instance: int = -1, shape: Shape | None = None) -> Proto:
    """An object of ``family`` with ``look``: a random outline (unless ``shape`` is given), aspect
    ratio (wider range for ellipses) and, 40% of the time, a shear."""
    shape = make_shape(rng, family) if shape is None else shape
    lo, hi = (0.55, 1.8) if family == "ellipse" else (0.78, 1.28)
    aspect = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    shear = float(rng.uniform(-0.15, 0.15)) if rng.random() < 0.4 else 0.0
    angle_range = 1.0 if family == "glyph" else math.pi
    return Proto(shape, look, aspect, shear, label, role, instance, angle_range)


def pick(rng: np.random.Generator, seq, k: int | None = None):
    """One uniform item of ``seq`` (``k=None``), or a list of ``min(k, len(seq))`` distinct ones."""
    seq = list(seq)
    if k is None:
        return seq[int(rng.integers(len(seq)))]
    return [seq[i] for i in rng.choice(len(seq), size=min(k, len(seq)), replace=False)]


def place_objects(rng: np.random.Generator, protos: list[Proto], h: int, w: int,
                  cfg: SyntheticConfig, sizes: list[float] | None = None) -> list[Placed]:
    """Random poses; targets stay mostly inside the frame. Each object overlaps an earlier one
    with probability ``cfg.overlap_prob``, else its centre is spread away from the others."""
    short = min(h, w)
    lo, hi = cfg.size_range
    placed: list[Placed] = []
    for i, p in enumerate(protos):
        if sizes is None and p.size_hint > 0:
            size = min(max(p.size_hint * math.exp(rng.uniform(-0.47, 0.47)), lo), hi) * short
        elif sizes is None:
            size = math.exp(rng.uniform(math.log(lo), math.log(hi))) * short
        else:
            size = sizes[i]
        # targets stay mostly inside; most distractors too (so "cut by the border" is no cue)
        inside = 0.75 if p.role == "target" or rng.random() < 0.6 else 0.1
        mx, my = min(inside * size, w / 2), min(inside * size, h / 2)
        best, best_score = None, -1.0
        if placed and rng.random() < cfg.overlap_prob:
            q = placed[int(rng.integers(len(placed)))]
            a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0.45, 1.0) * (size + q.size)
            best = (min(max(q.cx + d * math.cos(a), mx), w - mx),
                    min(max(q.cy + d * math.sin(a), my), h - my))
            best_score = 9.0
        for _ in range(6 if best is None else 0):
            cx, cy = rng.uniform(mx, w - mx), rng.uniform(my, h - my)
            score = min((math.hypot(cx - q.cx, cy - q.cy) / (size + q.size) for q in placed),
                        default=9.0)
            if score > best_score:
                best, best_score = (cx, cy), score
            if score > 0.8:
                break
        aspect = p.aspect * math.exp(rng.uniform(-0.08, 0.08))
        shear = p.shear + rng.uniform(-0.04, 0.04)
        angle = rng.uniform(-p.angle_range, p.angle_range)
        placed.append(Placed(p, best[0], best[1], size, angle, aspect, shear))
    return placed
