"""The generator's vocabulary (families, textures, kinds, colour names) and its settings."""
from __future__ import annotations

from dataclasses import dataclass, field

from ...codec.seg_type import SegType

FAMILIES: tuple[str, ...] = (
    "triangle", "square", "pentagon", "hexagon", "star", "ring", "ellipse", "cross", "crescent",
    "blob", "arrow", "glyph", "heart", "comb", "gear", "drop",
)
TEXTURES: tuple[str, ...] = ("flat", "noise", "stripes", "checker", "gradient", "dots", "waves")
KINDS: tuple[str, ...] = (
    "semantic", "instance", "multiclass", "multi_instance", "color", "texture",
)
SEG_TYPES: dict[str, SegType] = {
    "semantic": SegType.SEMANTIC, "instance": SegType.INSTANCE, "multiclass": SegType.SEMANTIC,
    "multi_instance": SegType.INSTANCE, "color": SegType.SEMANTIC, "texture": SegType.SEMANTIC,
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
EXTRA_TRIES = 40  # layouts with the targets on top after cfg.layout_tries failures


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
        shared_look_p: probability that a ``semantic`` / ``multiclass`` scene paints every object
            (targets and distractors) with one look, so that only the shape family tells the classes
            apart (a curriculum for shape matching; the prompt and the query scene draw their own).
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
    shared_look_p: float = 0.0
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
        if not 0.0 <= self.shared_look_p <= 1.0:
            raise ValueError(f"shared_look_p must be in [0, 1], got {self.shared_look_p}")
        if self.max_targets < 1 or self.layout_tries < 1:
            raise ValueError("max_targets and layout_tries must be >= 1")


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` as ints; ValueError below 32 x 32."""
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"size must be at least 32 x 32, got {size}")
    return h, w
