"""Outlines of the shape families in the object frame (extent 1, centred) and clutter strokes."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial

import cv2
import numpy as np

# Families whose outline varies enough between parameter draws to tell two instances apart.
DISTINCT_OUTLINE = ("star", "gear", "glyph", "blob", "comb", "arrow", "cross", "crescent")
# (no C/E/X: too close to crescent / comb / rotated cross)
_GLYPH_CHARS = "ABDFGHKLMNPRSTUVWYZ2345679"


@dataclass(frozen=True)
class Shape:
    """An outline in the object frame: filled polygons then holes, scaled to extent 1."""

    family: str
    parts: tuple[tuple[np.ndarray, bool], ...]  # (points [N, 2] float32, True fill / False hole)
    param: object = None                         # the discrete parameter (points, char, ...)


def _circle(n: int = 40, r: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _ngon(rng: np.random.Generator, n: int, jitter: float) -> np.ndarray:
    t = 2.0 * np.pi * np.arange(n) / n + rng.uniform(-jitter, jitter, n) * (np.pi / n)
    r = 1.0 + rng.uniform(-jitter, jitter, n)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _normalise(parts: list[tuple[np.ndarray, bool]], family: str, param: object = None) -> Shape:
    """Centre the fill parts' bounding box on 0 and scale their extent to 1."""
    fills = np.concatenate([p for p, f in parts if f])
    mid = (fills.min(0) + fills.max(0)) / 2.0
    ext = float(np.sqrt(((fills - mid) ** 2).sum(1)).max())
    out = tuple((((p - mid) / ext).astype(np.float32), f) for p, f in parts)
    return Shape(family, out, param)


@cache
def _glyph_table() -> tuple[tuple[str, int, tuple[tuple[np.ndarray, bool], ...]], ...]:
    """Outlines of the connected, hole-consistent thick glyphs (built once, deterministic)."""
    out = []
    fonts = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX)
    for font in fonts:
        for ch in _GLYPH_CHARS:
            canvas = np.zeros((128, 128), np.uint8)
            (tw, th), _ = cv2.getTextSize(ch, font, 2.6, 11)
            cv2.putText(canvas, ch, ((128 - tw) // 2, (128 + th) // 2), font, 2.6, 255, 11,
                        cv2.LINE_8)
            contours, hier = cv2.findContours(canvas, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
            if hier is None:
                continue
            outer = [c for c, h in zip(contours, hier[0]) if h[3] < 0]
            if len(outer) != 1:
                continue  # disconnected glyph
            parts = []
            for c, h in zip(contours, hier[0]):
                c = cv2.approxPolyDP(c, 0.6, True).reshape(-1, 2).astype(np.float64)
                if len(c) >= 3:
                    parts.append((c, h[3] < 0))
            parts.sort(key=lambda p: not p[1])  # fills first
            out.append((ch, int(font), tuple(parts)))
    return tuple(out)


def _polygon(rng: np.random.Generator, family: str) -> Shape:
    n = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[family]
    return _normalise([(_ngon(rng, n, 0.07), True)], family)


def _star(rng: np.random.Generator) -> Shape:
    u = rng.uniform
    n = int(rng.integers(4, 9))
    inner = u(0.36, 0.6)
    t = np.pi * np.arange(2 * n) / n
    r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner) * (1 + u(-0.05, 0.05, 2 * n))
    return _normalise([(np.stack([r * np.cos(t), r * np.sin(t)], 1), True)], "star", n)


def _ring(rng: np.random.Generator) -> Shape:
    inner = rng.uniform(0.45, 0.72)
    off = rng.uniform(-0.12, 0.12, 2) * (1 - inner)
    return _normalise([(_circle(44), True), (_circle(36, inner, *off), False)], "ring")


def _ellipse(rng: np.random.Generator) -> Shape:
    return _normalise([(_circle(44), True)], "ellipse")


def _cross(rng: np.random.Generator) -> Shape:
    w = rng.uniform(0.17, 0.36)
    a, b, c, d = 1.0 + rng.uniform(-0.25, 0.15, 4)  # arm lengths
    pts = [(w, -a), (w, -w), (b, -w), (b, w), (w, w), (w, c), (-w, c), (-w, w), (-d, w),
           (-d, -w), (-w, -w), (-w, -a)]
    return _normalise([(np.array(pts), True)], "cross", round(w, 2))


def _crescent(rng: np.random.Generator) -> Shape:
    r2 = rng.uniform(0.75, 0.98)
    d = rng.uniform(max(0.3, r2 - 0.65), min(0.62, r2 - 0.12))
    return _normalise([(_circle(44), True), (_circle(44, r2, d, 0.0), False)], "crescent")


def _blob(rng: np.random.Generator) -> Shape:
    u = rng.uniform
    t = np.linspace(0, 2 * np.pi, 56, endpoint=False)
    r = np.ones_like(t)
    for k in range(2, 6):
        r += u(0.0, 0.32 / k ** 0.7) * np.cos(k * t + u(0, 2 * np.pi))
    r = np.maximum(r, 0.35)
    return _normalise([(np.stack([r * np.cos(t), r * np.sin(t)], 1), True)], "blob")


def _arrow(rng: np.random.Generator) -> Shape:
    u = rng.uniform
    w, h, ln = u(0.12, 0.26), u(0.38, 0.7), u(0.45, 0.85)
    pts = [(-1, -w), (1 - ln, -w), (1 - ln, -h), (1, 0), (1 - ln, h), (1 - ln, w), (-1, w)]
    return _normalise([(np.array(pts, float), True)], "arrow", (round(w, 2), round(h, 2)))


def _glyph(rng: np.random.Generator) -> Shape:
    table = _glyph_table()
    ch, _, parts = table[int(rng.integers(len(table)))]
    return _normalise(list(parts), "glyph", ch)


def _heart(rng: np.random.Generator) -> Shape:
    t = np.linspace(0, 2 * np.pi, 56, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    x *= rng.uniform(0.85, 1.15)
    return _normalise([(np.stack([x, y], 1), True)], "heart")


def _comb(rng: np.random.Generator) -> Shape:
    u = rng.uniform
    n = int(rng.integers(3, 6))
    spine = u(0.22, 0.4)
    tw = u(0.25, 0.55) * 2.0 / n
    parts = [(np.array([(-1, -1), (1, -1), (1, -1 + spine), (-1, -1 + spine)], float), True)]
    for i in range(n):
        cx = -1 + tw / 2 + i * (2 - tw) / (n - 1)
        top = 1 - u(0, 0.35)
        parts.append((np.array([(cx - tw / 2, -1 + spine / 2), (cx + tw / 2, -1 + spine / 2),
                                (cx + tw / 2, top), (cx - tw / 2, top)]), True))
    return _normalise(parts, "comb", n)


def _gear(rng: np.random.Generator) -> Shape:
    n = int(rng.integers(6, 13))
    r_in = rng.uniform(0.68, 0.82)
    d = 2 * np.pi / n
    pts = []
    for k in range(n):
        a = k * d
        for da, r in ((-0.27, r_in), (-0.15, 1.0), (0.15, 1.0), (0.27, r_in)):
            pts.append((r * np.cos(a + da * d), r * np.sin(a + da * d)))
    parts = [(np.array(pts), True)]
    if rng.random() < 0.5:
        parts.append((_circle(28, rng.uniform(0.22, 0.4)), False))
    return _normalise(parts, "gear", n)


def _drop(rng: np.random.Generator) -> Shape:
    t = np.linspace(0, 2 * np.pi, 56, endpoint=False)
    m = rng.uniform(1.0, 3.0)
    pts = np.stack([np.cos(t), np.sin(t) * np.sin(t / 2) ** m * rng.uniform(0.7, 1.1)], 1)
    return _normalise([(pts, True)], "drop")


_BUILDERS: dict[str, Callable[[np.random.Generator], Shape]] = {
    **{f: partial(_polygon, family=f) for f in ("triangle", "square", "pentagon", "hexagon")},
    "star": _star, "ring": _ring, "ellipse": _ellipse, "cross": _cross, "crescent": _crescent,
    "blob": _blob, "arrow": _arrow, "glyph": _glyph, "heart": _heart, "comb": _comb,
    "gear": _gear, "drop": _drop,
}


def make_shape(rng: np.random.Generator, family: str) -> Shape:
    """A random outline of ``family`` (one of :data:`~.config.FAMILIES`; extent 1, centred).

    Args:
        rng: the generator every random shape parameter is drawn from.
        family: the shape family.

    Returns:
        A :class:`Shape` whose ``param`` holds the family's discrete parameter (number of points,
        glyph character, ...) where it has one.
    """
    builder = _BUILDERS.get(family)
    if builder is None:
        raise ValueError(f"unknown family {family!r}")
    return builder(rng)


def stroke_shape(rng: np.random.Generator, length: float, thickness: float) -> Shape:
    """A thin straight or curved stroke (clutter), in a frame where its half-length is 1."""
    n = 16
    t = np.linspace(-1.0, 1.0, n)
    bend = rng.uniform(-0.5, 0.5) if rng.random() < 0.6 else 0.0
    wave = rng.uniform(-0.15, 0.15)
    y = bend * (1 - t ** 2) + wave * np.sin(np.pi * t * rng.uniform(1, 3))
    pts = np.stack([t, y], 1)
    d = np.gradient(pts, axis=0)
    nrm = np.stack([-d[:, 1], d[:, 0]], 1) / np.linalg.norm(d, axis=1, keepdims=True)
    half = max(thickness, 1.0) / max(length, 1.0)
    poly = np.concatenate([pts + nrm * half, (pts - nrm * half)[::-1]])
    return Shape("_stroke", ((poly.astype(np.float32), True),))
