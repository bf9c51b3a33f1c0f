"""Video clips: labelled objects that move, occlude, leave and return (:func:`generate_clip`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .config import EXTRA_TRIES, SyntheticConfig, check_size
from .looks import background_texture, bg_matrix, random_look
from .objects import Placed, Proto, make_proto, pick, place_objects
from .render import (
    draw_objects,
    finish_image,
    label_map,
    object_map,
    random_photometric,
    rasterize,
)


def _smoothstep(x: float) -> float:
    """``3x^2 - 2x^3`` on ``x`` clipped to [0, 1]."""
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


@dataclass
class _Motion:
    """Per-object motion of a clip, drawn once (layout retries only change the layout).

    Attributes:
        protos: the objects, labelled ones first (ids 1..N), then the distractors.
        sizes: base radius of each object, px.
        speeds: speed of each object, px per frame.
        spin: ``[n]`` rotation per frame, rad.
        puls: ``[n, 3]`` size pulsation: relative amplitude, angular frequency, phase.
        wobble: ``[n, 4]`` aspect (log) amplitude, shear amplitude, angular frequency, phase.
    """

    protos: list[Proto]
    sizes: list[float]
    speeds: list[float]
    spin: np.ndarray
    puls: np.ndarray
    wobble: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, protos: list[Proto], cfg: SyntheticConfig,
             short: int) -> _Motion:
        """Draw sizes (``cfg.clip_size_range`` of ``short``), speeds and deformations."""
        scale = short / 224.0
        lo_s, hi_s = cfg.clip_size_range
        n_obj = len(protos)
        sizes = [math.exp(rng.uniform(math.log(lo_s), math.log(hi_s))) * short for _ in protos]
        speeds = [rng.uniform(*cfg.clip_speed) * scale for _ in protos]
        spin = rng.uniform(-0.06, 0.06, n_obj)
        puls = np.stack([rng.uniform(0, 0.12, n_obj), rng.uniform(0.05, 0.25, n_obj),
                         rng.uniform(0, 2 * np.pi, n_obj)], 1)
        wobble = np.stack([rng.uniform(0, 0.08, n_obj), rng.uniform(0, 0.06, n_obj),
                           rng.uniform(0.05, 0.2, n_obj), rng.uniform(0, 2 * np.pi, n_obj)], 1)
        return cls(protos, sizes, speeds, spin, puls, wobble)

    def objects(self, paths: list[np.ndarray], angles0: np.ndarray, t: int) -> list[Placed]:
        """Every object posed at frame ``t`` (centre from ``paths``, in proto order)."""
        objs = []
        puls, wobble = self.puls, self.wobble
        for i, p in enumerate(self.protos):
            s = self.sizes[i] * (1 + puls[i, 0] * math.sin(puls[i, 1] * t + puls[i, 2]))
            asp = p.aspect * math.exp(wobble[i, 0] * math.sin(wobble[i, 2] * t + wobble[i, 3]))
            sh = p.shear + wobble[i, 1] * math.cos(wobble[i, 2] * t + wobble[i, 3])
            objs.append(Placed(p, paths[i][t, 0], paths[i][t, 1], s,
                               angles0[i] + self.spin[i] * t, asp, sh))
        return objs

    def reach(self, k: int) -> float:
        """An upper bound of object ``k``'s extent from its centre, px, over every frame."""
        p, puls, wobble = self.protos[k], self.puls, self.wobble
        return (self.sizes[k] * (1 + puls[k, 0]) * max(p.aspect, 1 / p.aspect)
                * math.exp(wobble[k, 0]) * (1 + abs(p.shear) + wobble[k, 1]))


@dataclass
class _Camera:
    """A clip's slowly panning background and its sensor (gain, bias, noise, blur, flicker)."""

    bg_tex: np.ndarray
    bg_m: np.ndarray
    pan: np.ndarray
    photo: tuple[float, float, float, bool]
    flicker: float

    @classmethod
    def draw(cls, rng: np.random.Generator, cfg: SyntheticConfig, avoid: list[np.ndarray],
             h: int, w: int) -> _Camera:
        """Background colours away from ``avoid`` (the labelled objects' main colours)."""
        bg_tex = background_texture(rng, cfg, avoid, 50.0)
        bg_m = bg_matrix(rng, h, w)
        pan = rng.uniform(-0.8, 0.8, 2) * (min(h, w) / 224.0)
        photo = random_photometric(rng, cfg)
        return cls(bg_tex, bg_m, pan, photo, rng.uniform(0, 0.04))

    def background(self, t: int, h: int, w: int) -> np.ndarray:
        """The background of frame ``t``, float32 ``[h, w, 3]``."""
        m = self.bg_m.copy()
        m[:, 2] += self.pan * t
        return cv2.warpAffine(self.bg_tex, m, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)

    def finish(self, rng: np.random.Generator, canvas: np.ndarray, cfg: SyntheticConfig,
               t: int) -> np.ndarray:
        """Frame ``t``'s sensor response (flickering gain), uint8."""
        g = self.photo[0] * (1 + self.flicker * math.sin(0.7 * t))
        return finish_image(rng, canvas, cfg, (g, self.photo[1], self.photo[2], self.photo[3]))


def _check_clip_args(num_frames: int, num_objects: int, leave_and_return: bool,
                     leave_id: int) -> None:
    """ValueError on impossible clip arguments."""
    if num_frames < 1 or (leave_and_return and num_frames < 4):
        raise ValueError(f"num_frames must be >= 1 (>= 4 with leave_and_return), got {num_frames}")
    if num_objects < 1:
        raise ValueError(f"num_objects must be >= 1, got {num_objects}")
    if leave_and_return and not 1 <= leave_id <= num_objects:
        raise ValueError(f"leave_id must be in 1..{num_objects}, got {leave_id}")


def _clip_protos(rng: np.random.Generator, cfg: SyntheticConfig, num_objects: int) -> list[Proto]:
    """``num_objects`` labelled objects (ids 1..N) then ``cfg.clip_distractors`` unlabelled ones."""
    n_dis = int(rng.integers(cfg.clip_distractors[0], cfg.clip_distractors[1] + 1))
    fams = list(cfg.families)
    protos = [make_proto(rng, pick(rng, fams), random_look(rng, cfg), i + 1, "target", i)
              for i in range(num_objects)]
    protos += [make_proto(rng, pick(rng, fams), random_look(rng, cfg)) for _ in range(n_dis)]
    return protos


def _clip_paths(rng: np.random.Generator, motion: _Motion, placed: list[Placed], h: int, w: int,
                num_frames: int, leave_id: int | None) -> tuple[list[np.ndarray], int]:
    """Bouncing paths from the placed centres; object ``leave_id`` (if any) leaves and returns.

    Returns:
        ``(paths, t2)``: ``[num_frames, 2]`` centres per object and the frame of the return (-1
        without ``leave_id``).
    """
    paths = []
    for i, pl in enumerate(placed):
        margin = np.array([min(0.6 * motion.sizes[i], w / 2), min(0.6 * motion.sizes[i], h / 2)])
        lo = margin
        hi = np.array([w, h]) - margin
        paths.append(_bounce_path(rng, np.array([pl.cx, pl.cy]), motion.speeds[i], lo, hi,
                                  num_frames))
    t2 = -1
    if leave_id is not None:
        k = leave_id - 1
        paths[k], _, t2 = _leave_path(rng, paths[k], motion.reach(k), h, w)
    return paths, t2


def _clip_layout(rng: np.random.Generator, motion: _Motion, cfg: SyntheticConfig, h: int, w: int,
                 num_frames: int, leave_id: int | None
                 ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Depth order, initial angles and paths, re-drawn until every labelled object shows in frame 0
    (and object ``leave_id`` in some frame from its return on); after ``cfg.layout_tries``
    failures the labelled objects are drawn on top.

    Returns:
        ``(order, angles0, paths)``: draw order (indices of ``motion.protos``), ``[n]`` angles and
        ``[num_frames, 2]`` centres per object.
    """
    protos = motion.protos
    n_obj = len(protos)
    min_px = max(1, min(cfg.min_visible_px,
                        int(0.25 * math.pi * (cfg.clip_size_range[0] * min(h, w)) ** 2)))
    for attempt in range(cfg.layout_tries + EXTRA_TRIES):
        order = rng.permutation(n_obj)
        if attempt >= cfg.layout_tries:
            order = np.array(sorted(order, key=lambda i: protos[i].role == "target"))
        angles0 = rng.uniform(-np.pi, np.pi, n_obj)
        placed = place_objects(rng, protos, h, w, cfg, motion.sizes)
        paths, t2 = _clip_paths(rng, motion, placed, h, w, num_frames, leave_id)
        # frame 0: every labelled object visible; with leave_and_return: back after t2
        ok = _clip_frame_ok(motion.objects(paths, angles0, 0), order, h, w, min_px)
        if ok and leave_id is not None:
            ok = any(_clip_frame_ok(motion.objects(paths, angles0, t), order, h, w, min_px,
                                    leave_id) for t in range(t2, num_frames))
        if ok:
            break
    return order, angles0, paths


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
    h, w = check_size(size)
    _check_clip_args(num_frames, num_objects, leave_and_return, leave_id)
    rng = np.random.default_rng(seed)
    protos = _clip_protos(rng, cfg, num_objects)
    motion = _Motion.draw(rng, protos, cfg, min(h, w))
    camera = _Camera.draw(rng, cfg, [p.look.c1 for p in protos[:num_objects]], h, w)
    order, angles0, paths = _clip_layout(rng, motion, cfg, h, w, num_frames,
                                         leave_id if leave_and_return else None)
    frames, labels = [], []
    for t in range(num_frames):
        objs = motion.objects(paths, angles0, t)
        objs = [objs[i] for i in order]
        rasters = [rasterize(o, h, w) for o in objs]
        canvas, objmap = draw_objects(objs, rasters, camera.background(t, h, w))
        frames.append(camera.finish(rng, canvas, cfg, t))
        labels.append(label_map(objs, objmap))
    return frames, labels


def _clip_frame_ok(objs: list[Placed], order: np.ndarray, h: int, w: int, min_px: int,
                   only: int | None = None) -> bool:
    """Whether every labelled object (or just label ``only``) shows ``min_px`` pixels."""
    objs = [objs[i] for i in order]
    rasters = [rasterize(o, h, w) for o in objs]
    objmap = object_map(rasters, h, w)
    vis = np.bincount(objmap.ravel().astype(np.int64) + 1, minlength=len(objs) + 1)[1:]
    for i, o in enumerate(objs):
        lab = o.proto.label
        if lab == 0 or (only is not None and lab != only):
            continue
        if vis[i] < min_px:
            return False
    return True
