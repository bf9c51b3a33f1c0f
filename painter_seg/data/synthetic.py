"""Procedural in-context segmentation episodes and video clips, for training from scratch.

Every sample is a pure function of ``(seed, arguments, cfg)``: all randomness comes from one
``np.random.default_rng(seed)`` (plus a fixed-seed noise bank built once per process), so the same
seed gives bit-identical arrays on every call and in every process.

Scenes
    Several objects (``cfg.num_objects``, default 2-8) drawn from :data:`FAMILIES` (16 shape
    families: regular polygons, stars, rings, ellipses, crosses, crescents, smooth random blobs,
    arrows, thick letters/digits, hearts, combs, gears, drops), each with its own random shape
    parameters, aspect ratio, shear, rotation and size, filled with one of :data:`TEXTURES` (flat,
    colour noise, stripes, checker, gradient, dots, waves) in random colours. Textures live in the
    object's own frame, so they rotate and scale with it. Backgrounds are random textures too, and
    clutter (thin lines/curves and tiny shapes of non-target families) is sprinkled at random
    depths. Objects occlude each other in draw order; labels are hard (the anti-aliased coverage
    thresholded at one half) and hold only visible pixels. A random gain, bias, sensor noise and
    sometimes a slight blur finish each image.

Episode kinds (:data:`KINDS`); the model can only tell which one it faces from the prompt:

``semantic`` (seg_type 0, C = 1)
    The concept is one shape family: every object of it is id 1, whatever its colour, texture, size
    or exact shape parameters; objects of other families (some sharing a target's appearance) are
    background.
``instance`` (seg_type 1, C = 1)
    One particular object (same family, shape parameters, texture and colours) re-rendered at
    another position, size and rotation; look-alikes (same family with another appearance or
    outline, or the same appearance on another family) are background.
``multiclass`` (seg_type 0, C = 2-4)
    Several families, id k for family k, consistent between prompts and query.
``multi_instance`` (seg_type 1, C = 2-4)
    Several particular objects, id k for object k.
``color`` (seg_type 0, C = 1)
    Objects of one named colour (:data:`COLOR_NAMES`, jittered; flat, shaded or mottled), any
    family; other colours (also on the target families) are background.
``texture`` (seg_type 0, C = 1)
    Objects with one texture type, any family and colours; the same families and colours with
    other textures are background.

Invariant: every id ``1..num_classes`` is present (at least ``cfg.min_visible_px`` pixels, fewer
on small images) in every prompt and in the query, and every target object keeps at least
``cfg.min_visible_frac`` of its in-frame area visible: layouts are re-drawn until this holds (after
``cfg.layout_tries`` failures with the targets drawn on top, up to 40 more times). The concept is
therefore always present in the query (no "absent" episodes).

Video clips (:func:`generate_clip`)
    ``num_objects`` labelled objects (ids 1..N, fixed over time) plus a few unlabelled distractors
    move with constant velocity and bounce off the borders, spin, pulse in size and deform slightly,
    over a slowly panning textured background, occluding each other in a fixed depth order. With
    ``leave_and_return`` one object exits through a border, stays out of the frame for a while and
    comes back through a (possibly different) border.

Fixed scenes (:func:`generate_scene_views`)
    One layout of objects and classes seen under changing views (affine warp, lighting, noise):
    labelled images of one scene, the data prompt tuning learns from.

Use :func:`generate_episode` / :func:`generate_clip` / :func:`generate_scene_views`;
:func:`make_examples` writes a few examples to disk (flat image/palette-mask pairs and a DAVIS-style
clip).
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

__all__ = [
    "COLOR_NAMES", "FAMILIES", "KINDS", "TEXTURES", "Episode", "SyntheticConfig", "generate_clip",
    "generate_episode", "generate_scene_views", "label_palette", "make_examples",
]

FAMILIES: tuple[str, ...] = (
    "triangle", "square", "pentagon", "hexagon", "star", "ring", "ellipse", "cross", "crescent",
    "blob", "arrow", "glyph", "heart", "comb", "gear", "drop",
)
TEXTURES: tuple[str, ...] = ("flat", "noise", "stripes", "checker", "gradient", "dots", "waves")
KINDS: tuple[str, ...] = (
    "semantic", "instance", "multiclass", "multi_instance", "color", "texture",
)
SEG_TYPES: dict[str, int] = {
    "semantic": 0, "instance": 1, "multiclass": 0, "multi_instance": 1, "color": 0, "texture": 0,
}
COLOR_NAMES: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35), "orange": (245, 140, 25), "yellow": (240, 220, 40),
    "green": (45, 170, 60), "cyan": (40, 205, 215), "blue": (35, 70, 215),
    "purple": (125, 50, 190), "magenta": (225, 50, 195), "pink": (250, 170, 200),
    "brown": (120, 72, 30), "white": (240, 240, 240), "black": (22, 22, 22),
    "gray": (128, 128, 128),
}

_DEFAULT_KIND_WEIGHTS = {
    "semantic": 0.25, "instance": 0.2, "multiclass": 0.15, "multi_instance": 0.15, "color": 0.125,
    "texture": 0.125,
}
# Families whose outline varies enough between parameter draws to tell two instances apart.
_DISTINCT_OUTLINE = ("star", "gear", "glyph", "blob", "comb", "arrow", "cross", "crescent")
# (no C/E/X: too close to crescent / comb / rotated cross)
_GLYPH_CHARS = "ABDFGHKLMNPRSTUVWYZ2345679"
_TEX_RES = 64      # canonical texture side (object frame [-1, 1]^2)
_BG_RES = 128      # canonical background texture side
_BANK = 512        # noise bank side
_SUB = 16          # fillPoly sub-pixel factor (shift = 4)
_EXTRA_TRIES = 40  # layouts with the targets on top after cfg.layout_tries failures


@dataclass
class SyntheticConfig:
    """Knobs of the generator (defaults aim at 224 px training samples).

    Attributes:
        num_objects: inclusive range of objects per episode scene (targets + distractors; clutter
            not counted). At least one distractor is always added.
        families: shape families in use (subset of :data:`FAMILIES`, at least 3).
        textures: texture types in use (subset of :data:`TEXTURES`, must contain ``"flat"``).
        kind_weights: relative weight of each kind when ``kind=None`` (missing kinds weigh 0).
        texture_prob: probability that an object (outside the ``color``/``texture`` kinds) gets a
            non-flat texture.
        size_range: object radius range, as a fraction of ``min(H, W)`` (log-uniform).
        max_targets: most objects of one class in one scene (semantic/color/texture; multiclass
            uses at most 2 per class).
        multi_classes: inclusive range of C for ``multiclass`` / ``multi_instance`` (multiclass
            uses at most ``len(families) - 1`` classes).
        clutter: inclusive range of clutter items (lines, curves, tiny shapes) per scene.
        overlap_prob: probability that an object is placed overlapping an earlier-placed one
            (occlusion; targets keep ``min_visible_frac`` visible).
        bg_texture_prob: probability of a patterned (non-flat) background.
        noise_sigma: range of the per-image Gaussian sensor-noise sigma (0-255 scale).
        blur_prob: probability of a slight Gaussian blur of the finished image.
        hard_negative_prob: probability of adding a look-alike distractor (shares all but the
            concept-defining attribute with a target) to a scene.
        min_visible_frac: least visible share of each target object's in-frame area.
        min_visible_px: least visible pixels of each target object (capped on small images at a
            quarter of the area of the smallest allowed disc).
        layout_tries: layouts tried before drawing the targets on top.
        clip_distractors: inclusive range of unlabelled moving objects in clips.
        clip_speed: range of object speeds in clips, pixels per frame at 224 px.
        clip_size_range: object radius range in clips (fraction of ``min(H, W)``).
    """

    num_objects: tuple[int, int] = (2, 8)
    families: tuple[str, ...] = FAMILIES
    textures: tuple[str, ...] = TEXTURES
    kind_weights: dict[str, float] = field(default_factory=lambda: dict(_DEFAULT_KIND_WEIGHTS))
    texture_prob: float = 0.5
    size_range: tuple[float, float] = (0.06, 0.25)
    max_targets: int = 3
    multi_classes: tuple[int, int] = (2, 4)
    clutter: tuple[int, int] = (0, 4)
    overlap_prob: float = 0.35
    bg_texture_prob: float = 0.7
    noise_sigma: tuple[float, float] = (0.0, 7.0)
    blur_prob: float = 0.2
    hard_negative_prob: float = 0.6
    min_visible_frac: float = 0.4
    min_visible_px: int = 30
    layout_tries: int = 5
    clip_distractors: tuple[int, int] = (0, 2)
    clip_speed: tuple[float, float] = (0.7, 3.5)
    clip_size_range: tuple[float, float] = (0.07, 0.17)

    def validate(self) -> None:
        """Raise ValueError on inconsistent settings."""
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or len(set(self.families)) < 3:
            raise ValueError(f"families must be >= 3 of {FAMILIES}; unknown: {bad}")
        bad = [t for t in self.textures if t not in TEXTURES]
        if bad or "flat" not in self.textures or len(set(self.textures)) < 2:
            raise ValueError(f"textures must include 'flat' and another of {TEXTURES}; got "
                             f"{self.textures}")
        if any(k not in KINDS for k in self.kind_weights):
            raise ValueError(f"kind_weights keys must be among {KINDS}")
        if sum(max(0.0, float(w)) for w in self.kind_weights.values()) <= 0:
            raise ValueError("kind_weights must have a positive weight")
        lo, hi = self.num_objects
        if not 1 <= lo <= hi:
            raise ValueError(f"num_objects must be 1 <= lo <= hi, got {self.num_objects}")
        lo, hi = self.multi_classes
        if not 2 <= lo <= hi <= 8:
            raise ValueError(f"multi_classes must be 2 <= lo <= hi <= 8, got {self.multi_classes}")
        if not 0 < self.size_range[0] <= self.size_range[1] < 0.5:
            raise ValueError(f"size_range must be 0 < lo <= hi < 0.5, got {self.size_range}")
        if self.max_targets < 1 or self.layout_tries < 1:
            raise ValueError("max_targets and layout_tries must be >= 1")


@dataclass
class Episode:
    """One in-context segmentation sample.

    Attributes:
        prompts: K shots ``(image uint8 [H, W, 3] RGB, labels int64 [H, W])``, 0 = background,
            1..C = the classes / instances.
        query: ``(image, labels)`` with the same id meaning as the prompts.
        seg_type: 0 semantic (classes), 1 instance.
        kind: one of :data:`KINDS`.
        num_classes: C, the number of foreground ids.
        meta: debug information: ``concept`` (what the ids mean), ``prompt_objects`` (per prompt)
            and ``query_objects`` (lists of per-object dicts: index, family, texture, color,
            color_name, label, role, instance, visible_px), ``query_objmap`` (int16 [H, W], the
            index of the object seen at each pixel, -1 for background).
    """

    prompts: list[tuple[np.ndarray, np.ndarray]]
    query: tuple[np.ndarray, np.ndarray]
    seg_type: int
    kind: str
    num_classes: int
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Shape:
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


def _normalise(parts: list[tuple[np.ndarray, bool]], family: str, param: object = None) -> _Shape:
    """Centre the fill parts' bounding box on 0 and scale their extent to 1."""
    fills = np.concatenate([p for p, f in parts if f])
    mid = (fills.min(0) + fills.max(0)) / 2.0
    ext = float(np.sqrt(((fills - mid) ** 2).sum(1)).max())
    out = tuple((((p - mid) / ext).astype(np.float32), f) for p, f in parts)
    return _Shape(family, out, param)


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


def _make_shape(rng: np.random.Generator, family: str) -> _Shape:
    """A random outline of ``family`` (extent 1, centred)."""
    u = rng.uniform
    if family in ("triangle", "square", "pentagon", "hexagon"):
        n = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[family]
        return _normalise([(_ngon(rng, n, 0.07), True)], family)
    if family == "star":
        n = int(rng.integers(4, 9))
        inner = u(0.36, 0.6)
        t = np.pi * np.arange(2 * n) / n
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner) * (1 + u(-0.05, 0.05, 2 * n))
        return _normalise([(np.stack([r * np.cos(t), r * np.sin(t)], 1), True)], family, n)
    if family == "ring":
        inner = u(0.45, 0.72)
        off = u(-0.12, 0.12, 2) * (1 - inner)
        return _normalise([(_circle(44), True), (_circle(36, inner, *off), False)], family)
    if family == "ellipse":
        return _normalise([(_circle(44), True)], family)
    if family == "cross":
        w = u(0.17, 0.36)
        arms = 1.0 + u(-0.25, 0.15, 4)
        a, b, c, d = arms
        pts = [(w, -a), (w, -w), (b, -w), (b, w), (w, w), (w, c), (-w, c), (-w, w), (-d, w),
               (-d, -w), (-w, -w), (-w, -a)]
        return _normalise([(np.array(pts), True)], family, round(w, 2))
    if family == "crescent":
        r2 = u(0.75, 0.98)
        d = u(max(0.3, r2 - 0.65), min(0.62, r2 - 0.12))
        return _normalise([(_circle(44), True), (_circle(44, r2, d, 0.0), False)], family)
    if family == "blob":
        t = np.linspace(0, 2 * np.pi, 56, endpoint=False)
        r = np.ones_like(t)
        for k in range(2, 6):
            r += u(0.0, 0.32 / k ** 0.7) * np.cos(k * t + u(0, 2 * np.pi))
        r = np.maximum(r, 0.35)
        return _normalise([(np.stack([r * np.cos(t), r * np.sin(t)], 1), True)], family)
    if family == "arrow":
        w, h, ln = u(0.12, 0.26), u(0.38, 0.7), u(0.45, 0.85)
        pts = [(-1, -w), (1 - ln, -w), (1 - ln, -h), (1, 0), (1 - ln, h), (1 - ln, w), (-1, w)]
        return _normalise([(np.array(pts, float), True)], family, (round(w, 2), round(h, 2)))
    if family == "glyph":
        table = _glyph_table()
        ch, _, parts = table[int(rng.integers(len(table)))]
        return _normalise(list(parts), family, ch)
    if family == "heart":
        t = np.linspace(0, 2 * np.pi, 56, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        x *= u(0.85, 1.15)
        return _normalise([(np.stack([x, y], 1), True)], family)
    if family == "comb":
        n = int(rng.integers(3, 6))
        spine = u(0.22, 0.4)
        tw = u(0.25, 0.55) * 2.0 / n
        parts = [(np.array([(-1, -1), (1, -1), (1, -1 + spine), (-1, -1 + spine)], float), True)]
        for i in range(n):
            cx = -1 + tw / 2 + i * (2 - tw) / (n - 1)
            top = 1 - u(0, 0.35)
            parts.append((np.array([(cx - tw / 2, -1 + spine / 2), (cx + tw / 2, -1 + spine / 2),
                                    (cx + tw / 2, top), (cx - tw / 2, top)]), True))
        return _normalise(parts, family, n)
    if family == "gear":
        n = int(rng.integers(6, 13))
        r_in = u(0.68, 0.82)
        d = 2 * np.pi / n
        pts = []
        for k in range(n):
            a = k * d
            for da, r in ((-0.27, r_in), (-0.15, 1.0), (0.15, 1.0), (0.27, r_in)):
                pts.append((r * np.cos(a + da * d), r * np.sin(a + da * d)))
        parts = [(np.array(pts), True)]
        if rng.random() < 0.5:
            parts.append((_circle(28, u(0.22, 0.4)), False))
        return _normalise(parts, family, n)
    if family == "drop":
        t = np.linspace(0, 2 * np.pi, 56, endpoint=False)
        m = u(1.0, 3.0)
        pts = np.stack([np.cos(t), np.sin(t) * np.sin(t / 2) ** m * u(0.7, 1.1)], 1)
        return _normalise([(pts, True)], family)
    raise ValueError(f"unknown family {family!r}")


def _stroke_shape(rng: np.random.Generator, length: float, thickness: float) -> _Shape:
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
    return _Shape("_stroke", ((poly.astype(np.float32), True),))


# ------------------------------------------------------------------------------------- colours


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


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((np.asarray(a, np.float32) - np.asarray(b, np.float32)) ** 2).sum()))


def _color_far(rng: np.random.Generator, avoid: list[np.ndarray], min_dist: float,
               sampler: Callable[[np.random.Generator], np.ndarray] = _random_color) -> np.ndarray:
    """A colour at least ``min_dist`` from all of ``avoid`` (the farthest of 12 tries otherwise)."""
    best, best_d = None, -1.0
    for _ in range(12):
        c = sampler(rng)
        d = min((_dist(c, a) for a in avoid), default=1e9)
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _named_color(rng: np.random.Generator, name: str) -> np.ndarray:
    base = np.array(COLOR_NAMES[name], np.float32)
    return np.clip(base + rng.uniform(-12, 12, 3), 0, 255).astype(np.float32)


# ------------------------------------------------------------------------------------- textures


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
class _Look:
    """An object's appearance: texture type, colours and its canonical texture image."""

    texture: str
    c1: np.ndarray
    c2: np.ndarray
    tex: np.ndarray | None   # [_TEX_RES, _TEX_RES, 3] float32; None: plain c1
    color_name: str | None = None


def _object_tex(rng: np.random.Generator, kind: str, c1: np.ndarray, c2: np.ndarray
                ) -> np.ndarray | None:
    """Canonical object texture; flat looks are plain (None) 60% of the time, else shaded."""
    if kind == "flat":
        return None if rng.random() < 0.6 else _paint(rng, kind, c1, c2, _TEX_RES, 1.0)
    return _paint(rng, kind, c1, c2, _TEX_RES)


def _look(rng: np.random.Generator, texture: str, c1: np.ndarray | None = None,
          contrast: float = 60.0, color_name: str | None = None) -> _Look:
    """A look of ``texture``; ``c1`` random unless given, ``c2`` at least ``contrast`` away."""
    c1 = _random_color(rng) if c1 is None else c1
    c2 = _color_far(rng, [c1], contrast)
    return _Look(texture, c1, c2, _object_tex(rng, texture, c1, c2), color_name)


def _tone_look(rng: np.random.Generator, name: str) -> _Look:
    """A look whose colour reads as colour ``name``: flat, shaded gradient or mottled noise."""
    c1 = _named_color(rng, name)
    texture = ("flat", "gradient", "noise")[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
    c2 = np.clip(c1 * rng.uniform(0.72, 0.9) + rng.uniform(-8, 8, 3), 0, 255).astype(np.float32)
    return _Look(texture, c1, c2, _object_tex(rng, texture, c1, c2), name)


def _random_look(rng: np.random.Generator, cfg: SyntheticConfig,
                 forbid: tuple[str, ...] = ()) -> _Look:
    """A general-purpose look: flat with probability 1 - texture_prob, else a random pattern."""
    patterned = [t for t in cfg.textures if t != "flat" and t not in forbid]
    if ("flat" not in forbid and rng.random() >= cfg.texture_prob) or not patterned:
        return _look(rng, "flat")
    return _look(rng, patterned[int(rng.integers(len(patterned)))])


# ------------------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class _Proto:
    """An object before layout: outline, look, intrinsic aspect/shear, label and bookkeeping."""

    shape: _Shape
    look: _Look
    aspect: float
    shear: float
    label: int = 0
    role: str = "distractor"     # target / distractor / clutter
    instance: int = -1
    angle_range: float = math.pi
    size_hint: float = 0.0       # > 0: radius (fraction of the short side) varied by <= 1.6x


@dataclass
class _Placed:
    """A proto with its pose: centre (px), radius (px), rotation (rad), aspect and shear."""

    proto: _Proto
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


def _proto(rng: np.random.Generator, family: str, look: _Look, label: int = 0,
           role: str = "distractor", instance: int = -1, shape: _Shape | None = None) -> _Proto:
    shape = _make_shape(rng, family) if shape is None else shape
    lo, hi = (0.55, 1.8) if family == "ellipse" else (0.78, 1.28)
    aspect = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    shear = float(rng.uniform(-0.15, 0.15)) if rng.random() < 0.4 else 0.0
    angle_range = 1.0 if family == "glyph" else math.pi
    return _Proto(shape, look, aspect, shear, label, role, instance, angle_range)


def _rasterize(obj: _Placed, h: int, w: int) -> tuple[int, int, np.ndarray] | None:
    """Anti-aliased coverage (uint8 0-255) of ``obj`` on its clipped bounding box, or None."""
    lin = obj.linear()
    c = np.array([obj.cx, obj.cy])
    px = [p @ lin.T + c for p, _ in obj.proto.shape.parts]
    allp = np.concatenate(px)
    x0 = max(math.floor(allp[:, 0].min()) - 1, 0)
    y0 = max(math.floor(allp[:, 1].min()) - 1, 0)
    x1 = min(math.ceil(allp[:, 0].max()) + 2, w)
    y1 = min(math.ceil(allp[:, 1].max()) + 2, h)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    off = np.array([x0, y0], np.float64)
    for (_, fill), p in zip(obj.proto.shape.parts, px):
        q = np.round((p - off) * _SUB).astype(np.int32)
        cv2.fillPoly(mask, [q], 255 if fill else 0, cv2.LINE_AA, 4)
    return x0, y0, mask


def _composite(canvas: np.ndarray, obj: _Placed, x0: int, y0: int, mask: np.ndarray) -> None:
    """Blend the object's texture (warped from its frame) into ``canvas`` under ``mask``."""
    hh, ww = mask.shape
    region = canvas[y0:y0 + hh, x0:x0 + ww]
    a = mask.astype(np.float32) * (1.0 / 255.0)
    look = obj.proto.look
    if look.tex is None:
        region += (look.c1 - region) * a[..., None]
        return
    lin = obj.linear()
    n = look.tex.shape[0]
    m = np.empty((2, 3), np.float64)
    m[:, :2] = lin * (2.0 / n)
    m[:, 2] = lin @ np.full(2, 1.0 / n - 1.0) + np.array([obj.cx - x0, obj.cy - y0])
    tex = cv2.warpAffine(look.tex, m, (ww, hh), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT)
    region += (tex - region) * a[..., None]


# ------------------------------------------------------------------------------------- images


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    bank = np.random.default_rng(0x5EED).standard_normal((_BANK, _BANK, 3), dtype=np.float32)
    bank.flags.writeable = False
    return bank


def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    bank = _noise_bank()
    if h > _BANK or w > _BANK:
        bank = np.tile(bank, (h // _BANK + 1, w // _BANK + 1, 1))
    oy = int(rng.integers(0, bank.shape[0] - h + 1))
    ox = int(rng.integers(0, bank.shape[1] - w + 1))
    return bank[oy:oy + h, ox:ox + w]


def _background_texture(rng: np.random.Generator, cfg: SyntheticConfig, avoid: list[np.ndarray],
                        min_dist: float, forbid: tuple[str, ...] = ()) -> np.ndarray:
    """A canonical background texture ([_BG_RES]^2 x 3 float32), colours away from ``avoid``."""
    c1 = _color_far(rng, avoid, min_dist)
    options = [t for t in cfg.textures if t != "flat" and t not in forbid]
    if options and rng.random() < cfg.bg_texture_prob:
        kind = options[int(rng.integers(len(options)))]
        c2 = _color_far(rng, avoid, min_dist)
        c2 = c1 + (c2 - c1) * rng.uniform(0.25, 0.8)
    else:
        kind, c2 = "flat", c1
    return _paint(rng, kind, c1, c2.astype(np.float32), _BG_RES)


def _bg_matrix(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Random similarity mapping the background texture over (and beyond) the frame."""
    scale = rng.uniform(0.55, 1.5) * max(h, w) / _BG_RES
    a = rng.uniform(0, 2 * np.pi)
    lin = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    m = np.empty((2, 3))
    m[:, :2] = lin
    m[:, 2] = np.array([w / 2.0, h / 2.0]) - lin @ np.full(2, _BG_RES / 2.0)
    return m


def _finish(rng: np.random.Generator, canvas: np.ndarray, cfg: SyntheticConfig,
            photometric: tuple[float, float, float, bool] | None = None) -> np.ndarray:
    """Gain, bias, sensor noise, optional blur; to uint8."""
    if photometric is None:
        photometric = _photometric(rng, cfg)
    gain, bias, sigma, blur = photometric
    h, w = canvas.shape[:2]
    img = canvas * gain + bias
    if sigma > 0.25:
        img += _noise(rng, h, w) * sigma
    if blur:
        img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return np.clip(img, 0, 255).astype(np.uint8)


def _photometric(rng: np.random.Generator, cfg: SyntheticConfig
                 ) -> tuple[float, float, float, bool]:
    return (float(rng.uniform(0.85, 1.12)), float(rng.uniform(-14, 14)),
            float(rng.uniform(*cfg.noise_sigma)), bool(rng.random() < cfg.blur_prob))


def _draw(objs: list[_Placed], rasters: list, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Composite objects in list order over ``bg`` (copied). Returns (canvas, objmap int16)."""
    canvas = bg.copy()
    h, w = canvas.shape[:2]
    objmap = np.full((h, w), -1, np.int16)
    for i, (obj, r) in enumerate(zip(objs, rasters)):
        if r is None:
            continue
        x0, y0, mask = r
        _composite(canvas, obj, x0, y0, mask)
        om = objmap[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
        om[mask >= 128] = i
    return canvas, objmap


def _objmap(rasters: list, h: int, w: int) -> np.ndarray:
    objmap = np.full((h, w), -1, np.int16)
    for i, r in enumerate(rasters):
        if r is None:
            continue
        x0, y0, mask = r
        om = objmap[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
        om[mask >= 128] = i
    return objmap


def _labels(objs: list[_Placed], objmap: np.ndarray) -> np.ndarray:
    lut = np.zeros(len(objs) + 1, np.int64)
    for i, o in enumerate(objs):
        lut[i + 1] = o.proto.label
    return lut[objmap.astype(np.int64) + 1]


# ------------------------------------------------------------------------------------- scenes


@dataclass
class _Concept:
    """What an episode is about and how to build its scenes."""

    kind: str
    num_classes: int
    scene: Callable[[np.random.Generator], list[_Proto]]
    describe: dict
    clutter_families: tuple[str, ...]
    bg_avoid: list[np.ndarray]
    bg_min_dist: float = 55.0
    bg_forbid: tuple[str, ...] = ()
    clutter_avoid: list[np.ndarray] = field(default_factory=list)
    clutter_texture: str = "flat"


def _n_objects(rng: np.random.Generator, cfg: SyntheticConfig) -> int:
    return int(rng.integers(cfg.num_objects[0], cfg.num_objects[1] + 1))


def _pick(rng: np.random.Generator, seq, k: int | None = None):
    seq = list(seq)
    if k is None:
        return seq[int(rng.integers(len(seq)))]
    return [seq[i] for i in rng.choice(len(seq), size=min(k, len(seq)), replace=False)]


def _concept_semantic(rng: np.random.Generator, cfg: SyntheticConfig, multi: bool) -> _Concept:
    fams = list(cfg.families)
    if multi:
        k = int(rng.integers(cfg.multi_classes[0], cfg.multi_classes[1] + 1))
        targets = _pick(rng, fams, min(k, len(fams) - 1))  # keep >= 1 distractor family
    else:
        targets = [_pick(rng, fams)]
    others = [f for f in fams if f not in targets]
    pool = _pick(rng, others, int(rng.integers(2, 5)))  # recurring distractor families

    def scene(r: np.random.Generator) -> list[_Proto]:
        protos: list[_Proto] = []
        per_class = 2 if multi else cfg.max_targets
        for cls, fam in enumerate(targets, 1):
            for _ in range(int(r.integers(1, per_class + 1))):
                protos.append(_proto(r, fam, _random_look(r, cfg), cls, "target"))
        n_dis = max(1, _n_objects(r, cfg) - len(protos))
        for j in range(n_dis):
            fam = _pick(r, pool) if r.random() < 0.75 else _pick(r, others)
            if j == 0 and r.random() < cfg.hard_negative_prob:
                look = protos[int(r.integers(len(protos)))].look  # same appearance, other family
            else:
                look = _random_look(r, cfg)
            protos.append(_proto(r, fam, look))
        return protos

    describe = {"families": list(targets)} if multi else {"family": targets[0]}
    return _Concept("multiclass" if multi else "semantic", len(targets), scene, describe,
                    tuple(others), [])


def _instance_proto(rng: np.random.Generator, cfg: SyntheticConfig, family: str,
                    label: int, inst: int) -> _Proto:
    p = _proto(rng, family, _random_look(rng, cfg), label, "target", inst)
    lo, hi = cfg.size_range
    return replace(p, size_hint=math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _lookalike(rng: np.random.Generator, cfg: SyntheticConfig, ref: _Proto) -> _Proto:
    """A distractor that shares some but not all of ``ref``'s identity."""
    fam = ref.shape.family
    mode = int(rng.integers(4))
    if mode == 0:  # same family and texture type, other colours
        look = _look(rng, ref.look.texture, _color_far(rng, [ref.look.c1], 90.0))
        return _proto(rng, fam, look)
    if mode == 1:  # same look, other family
        return _proto(rng, _pick(rng, [f for f in cfg.families if f != fam]), ref.look)
    if mode == 2 and fam in _DISTINCT_OUTLINE:  # same look and family, other outline
        for _ in range(6):
            shape = _make_shape(rng, fam)
            if shape.param != ref.shape.param or fam == "blob":
                return _proto(rng, fam, ref.look, shape=shape)
    # same family, another look altogether
    forbid = (ref.look.texture,) if ref.look.texture != "flat" else ()
    look = _random_look(rng, cfg, forbid)
    if _dist(look.c1, ref.look.c1) < 90.0:
        look = _look(rng, look.texture, _color_far(rng, [ref.look.c1], 90.0))
    return _proto(rng, fam, look)


def _concept_instance(rng: np.random.Generator, cfg: SyntheticConfig, multi: bool) -> _Concept:
    k = int(rng.integers(cfg.multi_classes[0], cfg.multi_classes[1] + 1)) if multi else 1
    fams = _pick(rng, cfg.families, k) if multi else [_pick(rng, cfg.families)]  # distinct
    insts = [_instance_proto(rng, cfg, f, i + 1, i) for i, f in enumerate(fams)]

    def scene(r: np.random.Generator) -> list[_Proto]:
        protos = list(insts)
        n_dis = max(1, _n_objects(r, cfg) - len(protos))
        for j in range(n_dis):
            if j == 0 or (j == 1 and r.random() < cfg.hard_negative_prob):
                protos.append(_lookalike(r, cfg, insts[int(r.integers(len(insts)))]))
            else:
                protos.append(_proto(r, _pick(r, cfg.families), _random_look(r, cfg)))
        return protos

    describe = {"instances": [{"family": p.shape.family, "texture": p.look.texture,
                               "param": p.shape.param, "color": [int(x) for x in p.look.c1]}
                              for p in insts]}
    return _Concept("multi_instance" if multi else "instance", k, scene, describe,
                    tuple(cfg.families), [p.look.c1 for p in insts])


def _concept_color(rng: np.random.Generator, cfg: SyntheticConfig) -> _Concept:
    name = _pick(rng, COLOR_NAMES)
    target_rgb = np.array(COLOR_NAMES[name], np.float32)
    others = [n for n in COLOR_NAMES
              if _dist(COLOR_NAMES[n], target_rgb) > 75.0]
    fams = list(cfg.families)

    def scene(r: np.random.Generator) -> list[_Proto]:
        protos = [_proto(r, _pick(r, fams), _tone_look(r, name), 1, "target")
                  for _ in range(int(r.integers(1, cfg.max_targets + 1)))]
        n_dis = max(1, _n_objects(r, cfg) - len(protos))
        for j in range(n_dis):
            if j == 0 and r.random() < cfg.hard_negative_prob:
                fam = protos[int(r.integers(len(protos)))].shape.family  # same family, other colour
            else:
                fam = _pick(r, fams)
            if r.random() < 0.75:
                look = _tone_look(r, _pick(r, others))
            else:  # two-colour pattern, both colours far from the target colour
                tex = _pick(r, [t for t in cfg.textures if t != "flat"])
                c1 = _color_far(r, [target_rgb], 110.0)
                c2 = _color_far(r, [target_rgb, c1], 80.0)
                look = _Look(tex, c1, c2, _object_tex(r, tex, c1, c2))
            protos.append(_proto(r, fam, look))
        return protos

    return _Concept("color", 1, scene, {"color": name}, tuple(fams), [target_rgb], 95.0,
                    clutter_avoid=[target_rgb])


def _concept_texture(rng: np.random.Generator, cfg: SyntheticConfig) -> _Concept:
    textures = list(cfg.textures)
    target = _pick(rng, textures)
    others = [t for t in textures if t != target]
    fams = list(cfg.families)

    def strong(r: np.random.Generator, tex: str, c1: np.ndarray | None = None) -> _Look:
        return _look(r, tex, c1, contrast=110.0)

    def scene(r: np.random.Generator) -> list[_Proto]:
        protos = [_proto(r, _pick(r, fams), strong(r, target), 1, "target")
                  for _ in range(int(r.integers(1, cfg.max_targets + 1)))]
        n_dis = max(1, _n_objects(r, cfg) - len(protos))
        for j in range(n_dis):
            if j == 0 and r.random() < cfg.hard_negative_prob:
                ref = protos[int(r.integers(len(protos)))]  # same family and colour, other texture
                protos.append(_proto(r, ref.shape.family, strong(r, _pick(r, others), ref.look.c1)))
            else:
                protos.append(_proto(r, _pick(r, fams), strong(r, _pick(r, others))))
        return protos

    return _Concept("texture", 1, scene, {"texture": target}, tuple(fams), [], 40.0,
                    bg_forbid=(target,), clutter_texture="noise" if target == "flat" else "flat")


def _make_concept(rng: np.random.Generator, kind: str, cfg: SyntheticConfig) -> _Concept:
    if kind in ("semantic", "multiclass"):
        return _concept_semantic(rng, cfg, kind == "multiclass")
    if kind in ("instance", "multi_instance"):
        return _concept_instance(rng, cfg, kind == "multi_instance")
    if kind == "color":
        return _concept_color(rng, cfg)
    if kind == "texture":
        return _concept_texture(rng, cfg)
    raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


def _clutter(rng: np.random.Generator, cfg: SyntheticConfig, concept: _Concept,
             hw: tuple[int, int]) -> list[_Placed]:
    """Thin strokes and tiny shapes, placed directly (they need no visibility guarantee)."""
    out = []
    h, w = hw
    n = int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1))
    for _ in range(n):
        c1 = _color_far(rng, concept.clutter_avoid, 120.0) if concept.clutter_avoid else None
        look = _look(rng, concept.clutter_texture, c1)
        if rng.random() < 0.55:
            length = rng.uniform(0.15, 0.7) * min(h, w)
            shape = _stroke_shape(rng, length / 2, rng.uniform(0.6, 2.2) * min(h, w) / 224)
            proto = _Proto(shape, look, 1.0, 0.0, 0, "clutter")
            size = length / 2
        else:
            fam = _pick(rng, concept.clutter_families)
            proto = replace(_proto(rng, fam, look), role="clutter")
            size = rng.uniform(0.018, 0.04) * min(h, w)
        out.append(_Placed(proto, rng.uniform(0, w), rng.uniform(0, h), size,
                           rng.uniform(-np.pi, np.pi), proto.aspect, proto.shear))
    return out


def _place(rng: np.random.Generator, protos: list[_Proto], h: int, w: int, cfg: SyntheticConfig,
           sizes: list[float] | None = None) -> list[_Placed]:
    """Random poses; targets stay mostly inside the frame. Each object overlaps an earlier one
    with probability ``cfg.overlap_prob``, else its centre is spread away from the others."""
    short = min(h, w)
    lo, hi = cfg.size_range
    placed: list[_Placed] = []
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
        placed.append(_Placed(p, best[0], best[1], size, angle, aspect, shear))
    return placed


def _scene(rng: np.random.Generator, concept: _Concept, cfg: SyntheticConfig, h: int, w: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[_Placed]]:
    """Render one scene of ``concept``: (image uint8, labels int64, objmap int16, objects)."""
    protos = concept.scene(rng)
    min_px = _min_px(cfg, h, w)
    for attempt in range(cfg.layout_tries + _EXTRA_TRIES):
        objs = _place(rng, protos, h, w, cfg) + _clutter(rng, cfg, concept, (h, w))
        order = rng.permutation(len(objs))
        if attempt >= cfg.layout_tries:  # last resort: targets on top
            order = np.array(sorted(order, key=lambda i: objs[i].proto.role == "target"))
        objs = [objs[i] for i in order]
        rasters = [_rasterize(o, h, w) for o in objs]
        objmap = _objmap(rasters, h, w)
        if _targets_visible(objs, rasters, objmap, concept.num_classes, cfg, min_px):
            break
    bg_tex = _background_texture(rng, cfg, concept.bg_avoid, concept.bg_min_dist,
                                 concept.bg_forbid)
    bg = cv2.warpAffine(bg_tex, _bg_matrix(rng, h, w), (w, h), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT)
    canvas, objmap = _draw(objs, rasters, bg)
    img = _finish(rng, canvas, cfg)
    return img, _labels(objs, objmap), objmap, objs


def _min_px(cfg: SyntheticConfig, h: int, w: int) -> int:
    """``cfg.min_visible_px``, lowered for small images to a quarter of the smallest disc."""
    smallest = math.pi * (cfg.size_range[0] * min(h, w)) ** 2
    return max(1, min(cfg.min_visible_px, int(0.25 * smallest)))


def _targets_visible(objs: list[_Placed], rasters: list, objmap: np.ndarray, num_classes: int,
                     cfg: SyntheticConfig, min_px: int) -> bool:
    vis = np.bincount(objmap.ravel().astype(np.int64) + 1, minlength=len(objs) + 1)[1:]
    seen = set()
    for i, (o, r) in enumerate(zip(objs, rasters)):
        if o.proto.role != "target":
            continue
        drawn = 0 if r is None else int(np.count_nonzero(r[2] >= 128))
        if vis[i] < min_px or vis[i] < cfg.min_visible_frac * drawn:
            return False
        seen.add(o.proto.label)
    return seen == set(range(1, num_classes + 1))


def _object_info(objs: list[_Placed], objmap: np.ndarray) -> list[dict]:
    vis = np.bincount(objmap.ravel().astype(np.int64) + 1, minlength=len(objs) + 1)[1:]
    return [{"index": i, "family": o.proto.shape.family, "texture": o.proto.look.texture,
             "color": tuple(int(x) for x in o.proto.look.c1), "color_name": o.proto.look.color_name,
             "label": o.proto.label, "role": o.proto.role, "instance": o.proto.instance,
             "visible_px": int(vis[i])} for i, o in enumerate(objs)]


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"size must be at least 32 x 32, got {size}")
    return h, w


def generate_episode(seed: int, kind: str | None = None, num_shots: int = 1,
                     size: tuple[int, int] = (224, 224),
                     cfg: SyntheticConfig | None = None) -> Episode:
    """Generate one in-context episode (a pure function of its arguments).

    Args:
        seed: any non-negative int; same seed and arguments give bit-identical arrays.
        kind: one of :data:`KINDS`, or None to draw one by ``cfg.kind_weights``.
        num_shots: number of prompt examples K (different scenes of the same concept).
        size: ``(height, width)`` of every image.
        cfg: generator settings (defaults: :class:`SyntheticConfig`).

    Returns:
        An :class:`Episode`; every id 1..num_classes is visible in every prompt and in the query.
    """
    cfg = SyntheticConfig() if cfg is None else cfg
    cfg.validate()
    if num_shots < 1:
        raise ValueError(f"num_shots must be >= 1, got {num_shots}")
    h, w = _check_size(size)
    rng = np.random.default_rng(seed)
    if kind is None:
        kinds = [k for k in KINDS if cfg.kind_weights.get(k, 0.0) > 0]
        p = np.array([float(cfg.kind_weights[k]) for k in kinds])
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    elif kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    concept = _make_concept(rng, kind, cfg)
    scenes = [_scene(rng, concept, cfg, h, w) for _ in range(num_shots + 1)]
    prompts = [(img, lab) for img, lab, _, _ in scenes[:-1]]
    q_img, q_lab, q_map, q_objs = scenes[-1]
    meta = {
        "concept": concept.describe,
        "prompt_objects": [_object_info(o, m) for _, _, m, o in scenes[:-1]],
        "query_objects": _object_info(q_objs, q_map),
        "query_objmap": q_map,
    }
    return Episode(prompts, (q_img, q_lab), SEG_TYPES[kind], kind, concept.num_classes, meta)


# ------------------------------------------------------------------------------------- clips


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


def _bounce_path(rng: np.random.Generator, p0: np.ndarray, speed: float, lo: np.ndarray,
                 hi: np.ndarray, n: int) -> np.ndarray:
    """Constant-speed path reflecting off the box [lo, hi], with a slight random steering."""
    a = rng.uniform(0, 2 * np.pi)
    v = speed * np.array([math.cos(a), math.sin(a)])
    turn = rng.uniform(-0.03, 0.03)
    out = np.empty((n, 2))
    p = p0.astype(np.float64).copy()
    for t in range(n):
        out[t] = p
        c, s = math.cos(turn), math.sin(turn)
        v = np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])
        p = p + v
        for d in range(2):
            if p[d] < lo[d]:
                p[d], v[d] = 2 * lo[d] - p[d], abs(v[d])
            elif p[d] > hi[d]:
                p[d], v[d] = 2 * hi[d] - p[d], -abs(v[d])
            p[d] = min(max(p[d], lo[d]), hi[d])
    return out


def _edge_point(rng: np.random.Generator, side: int, dist: float, h: int, w: int) -> np.ndarray:
    """A point ``dist`` px outside border ``side`` (0 left, 1 right, 2 top, 3 bottom);
    negative ``dist`` is inside."""
    along = rng.uniform(0.2, 0.8)
    if side == 0:
        return np.array([-dist, along * h])
    if side == 1:
        return np.array([w + dist, along * h])
    if side == 2:
        return np.array([along * w, -dist])
    return np.array([along * w, h + dist])


def _leave_path(rng: np.random.Generator, path: np.ndarray, reach: float, h: int, w: int
                ) -> tuple[np.ndarray, int, int]:
    """Rewrite ``path`` so the object is out of the frame on frames [t1, t2). Returns the path,
    t1, t2."""
    n = len(path)
    gap = int(rng.integers(max(1, n // 6), max(1, n // 3) + 1))
    gap = min(gap, n - 2)
    first = max(1, min(n // 4, n - gap - 1))
    t1 = int(rng.integers(first, n - gap))       # 1 <= t1, t2 = t1 + gap <= n - 1
    t2 = t1 + gap
    out = path.copy()
    p1 = path[t1 - 1]
    side = int(np.argmin([p1[0], w - p1[0], p1[1], h - p1[1]]))
    exit_pt = _edge_point(rng, side, reach + 3.0, h, w)
    exit_pt[1 - side // 2] = p1[1 - side // 2]  # leave straight through the nearest border
    ease = int(rng.integers(2, 7))
    t0 = max(0, t1 - ease)
    start = path[t0]
    for t in range(t0 + 1, t1):
        out[t] = start + (exit_pt - start) * _smoothstep((t - t0) / (t1 - t0))
    out[t1:t2] = exit_pt
    side2 = int(rng.integers(4))
    entry = _edge_point(rng, side2, -0.55 * reach, h, w)  # centre well inside at t2
    t3 = min(n - 1, t2 + int(rng.integers(2, 7)))
    out[t2] = entry
    for t in range(t2 + 1, t3 + 1):
        out[t] = entry + (path[t3] - entry) * _smoothstep((t - t2) / max(1, t3 - t2))
    if t3 == t2:
        out[t2] = entry
    return out, t1, t2


def generate_clip(seed: int, num_frames: int, size: tuple[int, int] = (224, 224),
                  num_objects: int = 3, leave_and_return: bool = False,
                  cfg: SyntheticConfig | None = None, *, leave_id: int = 1
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Generate a synthetic video clip with consistent object ids (pure function of arguments).

    Args:
        seed: any non-negative int.
        num_frames: number of frames (>= 4 with ``leave_and_return``).
        size: ``(height, width)``.
        num_objects: labelled objects, ids ``1..num_objects``; a few unlabelled distractors
            (``cfg.clip_distractors``) move too.
        leave_and_return: object ``leave_id`` leaves the frame through a border on some frame
            ``t1 >= 1``, is absent on frames ``[t1, t2)`` and is back (at least partly visible) from
            frame ``t2`` on.
        cfg: generator settings.
        leave_id: which object leaves (1..num_objects).

    Returns:
        ``(frames, labels)``: lists of uint8 ``[H, W, 3]`` RGB frames and int64 ``[H, W]`` label
        maps. Every labelled object is visible in frame 0; later it may be (partly) occluded.
    """
    cfg = SyntheticConfig() if cfg is None else cfg
    cfg.validate()
    h, w = _check_size(size)
    if num_frames < 1 or (leave_and_return and num_frames < 4):
        raise ValueError(f"num_frames must be >= 1 (>= 4 with leave_and_return), got {num_frames}")
    if num_objects < 1:
        raise ValueError(f"num_objects must be >= 1, got {num_objects}")
    if leave_and_return and not 1 <= leave_id <= num_objects:
        raise ValueError(f"leave_id must be in 1..{num_objects}, got {leave_id}")
    rng = np.random.default_rng(seed)
    n_dis = int(rng.integers(cfg.clip_distractors[0], cfg.clip_distractors[1] + 1))
    fams = list(cfg.families)
    protos = [_proto(rng, _pick(rng, fams), _random_look(rng, cfg), i + 1, "target", i)
              for i in range(num_objects)]
    protos += [_proto(rng, _pick(rng, fams), _random_look(rng, cfg)) for _ in range(n_dis)]
    short = min(h, w)
    scale = short / 224.0
    lo_s, hi_s = cfg.clip_size_range
    n_obj = len(protos)

    # per-object motion parameters (drawn once, so retries only change the layout)
    sizes = [math.exp(rng.uniform(math.log(lo_s), math.log(hi_s))) * short for _ in protos]
    speeds = [rng.uniform(*cfg.clip_speed) * scale for _ in protos]
    spin = rng.uniform(-0.06, 0.06, n_obj)
    puls = np.stack([rng.uniform(0, 0.12, n_obj), rng.uniform(0.05, 0.25, n_obj),
                     rng.uniform(0, 2 * np.pi, n_obj)], 1)
    wobble = np.stack([rng.uniform(0, 0.08, n_obj), rng.uniform(0, 0.06, n_obj),
                       rng.uniform(0.05, 0.2, n_obj), rng.uniform(0, 2 * np.pi, n_obj)], 1)

    bg_tex = _background_texture(rng, cfg, [p.look.c1 for p in protos[:num_objects]], 50.0)
    bg_m = _bg_matrix(rng, h, w)
    pan = rng.uniform(-0.8, 0.8, 2) * scale
    photo = _photometric(rng, cfg)
    flicker = rng.uniform(0, 0.04)

    def frame_objects(paths: list[np.ndarray], angles0: np.ndarray, t: int) -> list[_Placed]:
        objs = []
        for i, p in enumerate(protos):
            s = sizes[i] * (1 + puls[i, 0] * math.sin(puls[i, 1] * t + puls[i, 2]))
            asp = p.aspect * math.exp(wobble[i, 0] * math.sin(wobble[i, 2] * t + wobble[i, 3]))
            sh = p.shear + wobble[i, 1] * math.cos(wobble[i, 2] * t + wobble[i, 3])
            objs.append(_Placed(p, paths[i][t, 0], paths[i][t, 1], s, angles0[i] + spin[i] * t,
                                asp, sh))
        return objs

    min_px = max(1, min(cfg.min_visible_px, int(0.25 * math.pi * (lo_s * short) ** 2)))
    for attempt in range(cfg.layout_tries + _EXTRA_TRIES):
        order = rng.permutation(n_obj)
        if attempt >= cfg.layout_tries:
            order = np.array(sorted(order, key=lambda i: protos[i].role == "target"))
        angles0 = rng.uniform(-np.pi, np.pi, n_obj)
        placed = _place(rng, protos, h, w, cfg, sizes)
        paths = []
        for i, pl in enumerate(placed):
            margin = np.array([min(0.6 * sizes[i], w / 2), min(0.6 * sizes[i], h / 2)])
            lo = margin
            hi = np.array([w, h]) - margin
            paths.append(_bounce_path(rng, np.array([pl.cx, pl.cy]), speeds[i], lo, hi,
                                      num_frames))
        t2 = -1
        if leave_and_return:
            k = leave_id - 1
            reach = (sizes[k] * (1 + puls[k, 0]) * max(protos[k].aspect, 1 / protos[k].aspect)
                     * math.exp(wobble[k, 0]) * (1 + abs(protos[k].shear) + wobble[k, 1]))
            paths[k], _, t2 = _leave_path(rng, paths[k], reach, h, w)
        # frame 0: every labelled object visible; with leave_and_return: back after t2
        ok = _clip_frame_ok(frame_objects(paths, angles0, 0), order, h, w, min_px)
        if ok and leave_and_return:
            ok = any(_clip_frame_ok(frame_objects(paths, angles0, t), order, h, w, min_px,
                                    leave_id) for t in range(t2, num_frames))
        if ok:
            break

    frames, labels = [], []
    for t in range(num_frames):
        objs = frame_objects(paths, angles0, t)
        objs = [objs[i] for i in order]
        rasters = [_rasterize(o, h, w) for o in objs]
        m = bg_m.copy()
        m[:, 2] += pan * t
        bg = cv2.warpAffine(bg_tex, m, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT)
        canvas, objmap = _draw(objs, rasters, bg)
        g = photo[0] * (1 + flicker * math.sin(0.7 * t))
        frames.append(_finish(rng, canvas, cfg, (g, photo[1], photo[2], photo[3])))
        labels.append(_labels(objs, objmap))
    return frames, labels


def _clip_frame_ok(objs: list[_Placed], order: np.ndarray, h: int, w: int, min_px: int,
                   only: int | None = None) -> bool:
    """Whether every labelled object (or just label ``only``) shows ``min_px`` pixels."""
    objs = [objs[i] for i in order]
    rasters = [_rasterize(o, h, w) for o in objs]
    objmap = _objmap(rasters, h, w)
    vis = np.bincount(objmap.ravel().astype(np.int64) + 1, minlength=len(objs) + 1)[1:]
    for i, o in enumerate(objs):
        lab = o.proto.label
        if lab == 0 or (only is not None and lab != only):
            continue
        if vis[i] < min_px:
            return False
    return True


# ------------------------------------------------------------------------------------- fixed scenes


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
    canvas += _noise(rng, h, w) * np.float32(rng.uniform(0.0, 5.0))
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
    h, w = _check_size(size)
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


# ------------------------------------------------------------------------------------- export


def label_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC / DAVIS bit-interleaved palette ([n, 3] uint8): 0 black, then distinct."""
    pal = np.zeros((n, 3), np.uint8)
    for k in range(n):
        c, r, g, b = k, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[k] = (r, g, b)
    return pal


def _save_mask(path: Path, labels: np.ndarray) -> None:
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(label_palette().reshape(-1).tolist())
    im.save(path, optimize=True)


def _save_image(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).save(path, quality=88)


def _concept_name(ep: Episode) -> str:
    """A file-name friendly name of an episode's concept."""
    c = ep.meta["concept"]
    if "instances" in c:
        return "-".join(d["family"] for d in c["instances"])
    if "families" in c:
        return "-".join(c["families"])
    return str(c.get("family") or c.get("color") or c.get("texture"))


def make_examples(out_dir: str | os.PathLike, seed: int = 0) -> dict[str, list[Path]]:
    """Write a few small examples (224 px, well under 1 MB in total).

    Layout::

        out_dir/fewshot/<kind>_<concept>_NN.jpg + .png   # flat pairs: prompt(s) then query
        out_dir/clip/JPEGImages/synthetic/00000.jpg ...  # a 16-frame clip
        out_dir/clip/Annotations/synthetic/00000.png     # its first-frame mask

    Masks are palette ("P") PNGs whose indices are the ids (0 black background). The few-shot
    folder reads as the ``flat_pairs`` layout and the clip as the ``davis`` layout of
    :mod:`painter_seg.data.folders`.

    Returns:
        ``{"fewshot": [paths...], "clip": [paths...]}`` of every file written.
    """
    out = Path(out_dir)
    fs_dir = out / "fewshot"
    img_dir = out / "clip" / "JPEGImages" / "synthetic"
    ann_dir = out / "clip" / "Annotations" / "synthetic"
    for d in (fs_dir, img_dir, ann_dir):
        d.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {"fewshot": [], "clip": []}
    plans = (("semantic", 2), ("instance", 1), ("multiclass", 1), ("color", 1))
    for i, (kind, shots) in enumerate(plans):
        ep = generate_episode(seed * 1000 + i, kind, num_shots=shots)
        name = _concept_name(ep)
        for j, (img, lab) in enumerate(ep.prompts + [ep.query]):
            stem = fs_dir / f"{kind}_{name}_{j:02d}"
            _save_image(stem.with_suffix(".jpg"), img)
            _save_mask(stem.with_suffix(".png"), lab)
            written["fewshot"] += [stem.with_suffix(".jpg"), stem.with_suffix(".png")]
    frames, labels = generate_clip(seed, 16, num_objects=3, leave_and_return=True)
    for t, frame in enumerate(frames):
        p = img_dir / f"{t:05d}.jpg"
        _save_image(p, frame)
        written["clip"].append(p)
    p = ann_dir / "00000.png"
    _save_mask(p, labels[0])
    written["clip"].append(p)
    return written
