"""Few-shot episodes: K prompt scenes and a query of one concept (:func:`generate_episode`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .concepts import Concept, make_concept, place_clutter
from .config import EXTRA_TRIES, FAMILIES, KINDS, SEG_TYPES, SyntheticConfig, check_size
from .looks import background_texture, bg_matrix
from .objects import Placed, place_objects
from .render import draw_objects, finish_image, label_map, object_map, rasterize


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
            index of the object seen at each pixel, -1 for background), ``family_maps`` (uint8
            [H, W] per image, prompts then query: :func:`family_map`).
    """

    prompts: list[tuple[np.ndarray, np.ndarray]]
    query: tuple[np.ndarray, np.ndarray]
    seg_type: int
    kind: str
    num_classes: int
    meta: dict = field(default_factory=dict)


def _scene(rng: np.random.Generator, concept: Concept, cfg: SyntheticConfig, h: int, w: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Placed]]:
    """Render one scene of ``concept``: (image uint8, labels int64, objmap int16, objects)."""
    protos = concept.scene(rng)
    min_px = _min_px(cfg, h, w)
    for attempt in range(cfg.layout_tries + EXTRA_TRIES):
        objs = place_objects(rng, protos, h, w, cfg) + place_clutter(rng, cfg, concept, (h, w))
        order = rng.permutation(len(objs))
        if attempt >= cfg.layout_tries:  # last resort: targets on top
            order = np.array(sorted(order, key=lambda i: objs[i].proto.role == "target"))
        objs = [objs[i] for i in order]
        rasters = [rasterize(o, h, w) for o in objs]
        objmap = object_map(rasters, h, w)
        if _targets_visible(objs, rasters, objmap, concept.num_classes, cfg, min_px):
            break
    bg_tex = background_texture(rng, cfg, concept.bg_avoid, concept.bg_min_dist,
                                concept.bg_forbid)
    bg = cv2.warpAffine(bg_tex, bg_matrix(rng, h, w), (w, h), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT)
    canvas, objmap = draw_objects(objs, rasters, bg)
    img = finish_image(rng, canvas, cfg)
    return img, label_map(objs, objmap), objmap, objs


def _min_px(cfg: SyntheticConfig, h: int, w: int) -> int:
    """``cfg.min_visible_px``, lowered for small images to a quarter of the smallest disc."""
    smallest = math.pi * (cfg.size_range[0] * min(h, w)) ** 2
    return max(1, min(cfg.min_visible_px, int(0.25 * smallest)))


def _targets_visible(objs: list[Placed], rasters: list, objmap: np.ndarray, num_classes: int,
                     cfg: SyntheticConfig, min_px: int) -> bool:
    """Whether every target shows ``min_px`` pixels and ``cfg.min_visible_frac`` of its in-frame
    area, and every id 1..num_classes has a target."""
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


FAMILY_IGNORE = 255  # family_map value of thin strokes (no shape family)


def family_map(objs: list[Placed], objmap: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]``: the shape family of the object seen at each pixel, whatever its role (target,
    distractor or clutter): ``1 + FAMILIES.index(family)``, 0 for background, :data:`FAMILY_IGNORE`
    for strokes. Training's auxiliary family loss reads it (``train.aux_family_weight``)."""
    lut = np.zeros(len(objs) + 1, np.uint8)
    for i, o in enumerate(objs):
        fam = o.proto.shape.family
        lut[i + 1] = 1 + FAMILIES.index(fam) if fam in FAMILIES else FAMILY_IGNORE
    return lut[objmap.astype(np.int64) + 1]


def _object_info(objs: list[Placed], objmap: np.ndarray) -> list[dict]:
    """Per-object debug records (see :attr:`Episode.meta`)."""
    vis = np.bincount(objmap.ravel().astype(np.int64) + 1, minlength=len(objs) + 1)[1:]
    return [{"index": i, "family": o.proto.shape.family, "texture": o.proto.look.texture,
             "color": tuple(int(x) for x in o.proto.look.c1), "color_name": o.proto.look.color_name,
             "label": o.proto.label, "role": o.proto.role, "instance": o.proto.instance,
             "visible_px": int(vis[i])} for i, o in enumerate(objs)]


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
    h, w = check_size(size)
    rng = np.random.default_rng(seed)
    if kind is None:
        kinds = [k for k in KINDS if cfg.kind_weights.get(k, 0.0) > 0]
        p = np.array([float(cfg.kind_weights[k]) for k in kinds])
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    elif kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    concept = make_concept(rng, kind, cfg)
    scenes = [_scene(rng, concept, cfg, h, w) for _ in range(num_shots + 1)]
    prompts = [(img, lab) for img, lab, _, _ in scenes[:-1]]
    q_img, q_lab, q_map, q_objs = scenes[-1]
    meta = {
        "concept": concept.describe,
        "prompt_objects": [_object_info(o, m) for _, _, m, o in scenes[:-1]],
        "query_objects": _object_info(q_objs, q_map),
        "query_objmap": q_map,
        "family_maps": [family_map(o, m) for _, _, m, o in scenes],
    }
    return Episode(prompts, (q_img, q_lab), SEG_TYPES[kind], kind, concept.num_classes, meta)
