"""Episode concepts: what the ids mean for each kind, and the scenes (object lists) that show it."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .config import COLOR_NAMES, KINDS, SyntheticConfig
from .looks import Look, color_dist, color_far, make_look, object_tex, random_look, tone_look
from .objects import Placed, Proto, make_proto, pick
from .shapes import DISTINCT_OUTLINE, make_shape, stroke_shape


@dataclass
class Concept:
    """What an episode is about and how to build its scenes."""

    kind: str
    num_classes: int
    scene: Callable[[np.random.Generator], list[Proto]]
    describe: dict
    clutter_families: tuple[str, ...]
    bg_avoid: list[np.ndarray]
    bg_min_dist: float = 55.0
    bg_forbid: tuple[str, ...] = ()
    clutter_avoid: list[np.ndarray] = field(default_factory=list)
    clutter_texture: str = "flat"


def _n_objects(rng: np.random.Generator, cfg: SyntheticConfig) -> int:
    """Objects in one scene, drawn from ``cfg.num_objects``."""
    return int(rng.integers(cfg.num_objects[0], cfg.num_objects[1] + 1))


def _concept_semantic(rng: np.random.Generator, cfg: SyntheticConfig, multi: bool) -> Concept:
    fams = list(cfg.families)
    if multi:
        k = int(rng.integers(cfg.multi_classes[0], cfg.multi_classes[1] + 1))
        targets = pick(rng, fams, min(k, len(fams) - 1))  # keep >= 1 distractor family
    else:
        targets = [pick(rng, fams)]
    others = [f for f in fams if f not in targets]
    pool = pick(rng, others, int(rng.integers(2, 5)))  # recurring distractor families

    def scene(r: np.random.Generator) -> list[Proto]:
        protos: list[Proto] = []
        per_class = 2 if multi else cfg.max_targets
        # drawn only when enabled, so that scenes of the default config stay what they were
        shared = random_look(r, cfg) if cfg.shared_look_p > 0 and r.random() < cfg.shared_look_p else None
        for cls, fam in enumerate(targets, 1):
            for _ in range(int(r.integers(1, per_class + 1))):
                protos.append(make_proto(r, fam, shared if shared is not None else random_look(r, cfg), cls,
                                         "target"))
        n_dis = max(1, _n_objects(r, cfg) - len(protos))
        for j in range(n_dis):
            fam = pick(r, pool) if r.random() < 0.75 else pick(r, others)
            if shared is not None:
                look = shared  # one look for all: the family is the only cue
            elif j == 0 and r.random() < cfg.hard_negative_prob:
                look = protos[int(r.integers(len(protos)))].look  # same appearance, other family
            else:
                look = random_look(r, cfg)
            protos.append(make_proto(r, fam, look))
        return protos

    describe = {"families": list(targets)} if multi else {"family": targets[0]}
    return Concept("multiclass" if multi else "semantic", len(targets), scene, describe,
                   tuple(others), [])


def _instance_proto(rng: np.random.Generator, cfg: SyntheticConfig, family: str,
                    label: int, inst: int) -> Proto:
    p = make_proto(rng, family, random_look(rng, cfg), label, "target", inst)
    lo, hi = cfg.size_range
    return replace(p, size_hint=math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _lookalike(rng: np.random.Generator, cfg: SyntheticConfig, ref: Proto) -> Proto:
    """A distractor that shares some but not all of ``ref``'s identity."""
    fam = ref.shape.family
    mode = int(rng.integers(4))
    if mode == 0:  # same family and texture type, other colours
        look = make_look(rng, ref.look.texture, color_far(rng, [ref.look.c1], 90.0))
        return make_proto(rng, fam, look)
    if mode == 1:  # same look, other family
        return make_proto(rng, pick(rng, [f for f in cfg.families if f != fam]), ref.look)
    if mode == 2 and fam in DISTINCT_OUTLINE:  # same look and family, other outline
        for _ in range(6):
            shape = make_shape(rng, fam)
            if shape.param != ref.shape.param or fam == "blob":
                return make_proto(rng, fam, ref.look, shape=shape)
    # same family, another look altogether
    forbid = (ref.look.texture,) if ref.look.texture != "flat" else ()
    look = random_look(rng, cfg, forbid)
    if color_dist(look.c1, ref.look.c1) < 90.0:
        look = make_look(rng, look.texture, color_far(rng, [ref.look.c1], 90.0))
    return make_proto(rng, fam, look)


def _concept_instance(rng: np.random.Generator, cfg: SyntheticConfig, multi: bool) -> Concept:
    k = int(rng.integers(cfg.multi_classes[0], cfg.multi_classes[1] + 1)) if multi else 1
    fams = pick(rng, cfg.families, k) if multi else [pick(rng, cfg.families)]  # distinct
    insts = [_instance_proto(rng, cfg, f, i + 1, i) for i, f in enumerate(fams)]

    def scene(r: np.random.Generator) -> list[Proto]:
        protos = list(insts)
        n_dis = max(1, _n_objects(r, cfg) - len(protos))
        for j in range(n_dis):
            if j == 0 or (j == 1 and r.random() < cfg.hard_negative_prob):
                protos.append(_lookalike(r, cfg, insts[int(r.integers(len(insts)))]))
            else:
                protos.append(make_proto(r, pick(r, cfg.families), random_look(r, cfg)))
        return protos

    describe = {"instances": [{"family": p.shape.family, "texture": p.look.texture,
                               "param": p.shape.param, "color": [int(x) for x in p.look.c1]}
                              for p in insts]}
    return Concept("multi_instance" if multi else "instance", k, scene, describe,
                   tuple(cfg.families), [p.look.c1 for p in insts])


def _concept_color(rng: np.random.Generator, cfg: SyntheticConfig) -> Concept:
    name = pick(rng, COLOR_NAMES)
    target_rgb = np.array(COLOR_NAMES[name], np.float32)
    others = [n for n in COLOR_NAMES
              if color_dist(COLOR_NAMES[n], target_rgb) > 75.0]
    fams = list(cfg.families)

    def scene(r: np.random.Generator) -> list[Proto]:
        protos = [make_proto(r, pick(r, fams), tone_look(r, name), 1, "target")
                  for _ in range(int(r.integers(1, cfg.max_targets + 1)))]
        n_dis = max(1, _n_objects(r, cfg) - len(protos))
        for j in range(n_dis):
            if j == 0 and r.random() < cfg.hard_negative_prob:
                fam = protos[int(r.integers(len(protos)))].shape.family  # same family, other colour
            else:
                fam = pick(r, fams)
            if r.random() < 0.75:
                look = tone_look(r, pick(r, others))
            else:  # two-colour pattern, both colours far from the target colour
                tex = pick(r, [t for t in cfg.textures if t != "flat"])
                c1 = color_far(r, [target_rgb], 110.0)
                c2 = color_far(r, [target_rgb, c1], 80.0)
                look = Look(tex, c1, c2, object_tex(r, tex, c1, c2))
            protos.append(make_proto(r, fam, look))
        return protos

    return Concept("color", 1, scene, {"color": name}, tuple(fams), [target_rgb], 95.0,
                   clutter_avoid=[target_rgb])


def _concept_texture(rng: np.random.Generator, cfg: SyntheticConfig) -> Concept:
    textures = list(cfg.textures)
    target = pick(rng, textures)
    others = [t for t in textures if t != target]
    fams = list(cfg.families)

    def strong(r: np.random.Generator, tex: str, c1: np.ndarray | None = None) -> Look:
        return make_look(r, tex, c1, contrast=110.0)

    def scene(r: np.random.Generator) -> list[Proto]:
        protos = [make_proto(r, pick(r, fams), strong(r, target), 1, "target")
                  for _ in range(int(r.integers(1, cfg.max_targets + 1)))]
        n_dis = max(1, _n_objects(r, cfg) - len(protos))
        for j in range(n_dis):
            if j == 0 and r.random() < cfg.hard_negative_prob:
                ref = protos[int(r.integers(len(protos)))]  # same family and colour, other texture
                look = strong(r, pick(r, others), ref.look.c1)
                protos.append(make_proto(r, ref.shape.family, look))
            else:
                protos.append(make_proto(r, pick(r, fams), strong(r, pick(r, others))))
        return protos

    return Concept("texture", 1, scene, {"texture": target}, tuple(fams), [], 40.0,
                   bg_forbid=(target,), clutter_texture="noise" if target == "flat" else "flat")


def make_concept(rng: np.random.Generator, kind: str, cfg: SyntheticConfig) -> Concept:
    """Draw the concept of a ``kind`` episode (which families / objects / colour / texture)."""
    if kind in ("semantic", "multiclass"):
        return _concept_semantic(rng, cfg, kind == "multiclass")
    if kind in ("instance", "multi_instance"):
        return _concept_instance(rng, cfg, kind == "multi_instance")
    if kind == "color":
        return _concept_color(rng, cfg)
    if kind == "texture":
        return _concept_texture(rng, cfg)
    raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


def place_clutter(rng: np.random.Generator, cfg: SyntheticConfig, concept: Concept,
                  hw: tuple[int, int]) -> list[Placed]:
    """Thin strokes and tiny shapes, placed directly (they need no visibility guarantee)."""
    out = []
    h, w = hw
    n = int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1))
    for _ in range(n):
        c1 = color_far(rng, concept.clutter_avoid, 120.0) if concept.clutter_avoid else None
        look = make_look(rng, concept.clutter_texture, c1)
        if rng.random() < 0.55:
            length = rng.uniform(0.15, 0.7) * min(h, w)
            shape = stroke_shape(rng, length / 2, rng.uniform(0.6, 2.2) * min(h, w) / 224)
            proto = Proto(shape, look, 1.0, 0.0, 0, "clutter")
            size = length / 2
        else:
            fam = pick(rng, concept.clutter_families)
            proto = replace(make_proto(rng, fam, look), role="clutter")
            size = rng.uniform(0.018, 0.04) * min(h, w)
        out.append(Placed(proto, rng.uniform(0, w), rng.uniform(0, h), size,
                          rng.uniform(-np.pi, np.pi), proto.aspect, proto.shear))
    return out
