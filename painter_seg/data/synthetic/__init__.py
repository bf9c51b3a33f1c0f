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

Modules, one concept each: ``config`` (vocabulary and :class:`SyntheticConfig`), ``shapes``
(outlines), ``looks`` (colours, textures, backgrounds), ``objects`` (protos, poses, placement),
``render`` (rasterising, compositing, sensor finish), ``concepts`` (what an episode's ids mean),
``episodes``, ``clips``, ``scenes`` and ``export`` (palette, example files).
"""
from __future__ import annotations

from .clips import generate_clip
from .config import COLOR_NAMES, FAMILIES, KINDS, SEG_TYPES, TEXTURES, SyntheticConfig
from .episodes import Episode, generate_episode
from .export import label_palette, make_examples
from .scenes import generate_scene_views

__all__ = [
    "COLOR_NAMES", "FAMILIES", "KINDS", "SEG_TYPES", "TEXTURES", "Episode", "SyntheticConfig",
    "generate_clip", "generate_episode", "generate_scene_views", "label_palette", "make_examples",
]
