"""Video object propagation from annotated frames, keeping every object's id.

Two decoders share one model (:class:`VideoSettings` picks, each model config's ``video:`` block sets the
defaults):

- ``joint`` (the SegGPT paper's setting, default for ``seggpt_vit_large``): the annotated frame(s) plus the K
  most recent predictions as prompts under the feature ensemble, every object in its own fixed colour, one pass
  per frame, nearest-colour decoding. The official code feeds back a thresholded white mask, so several
  objects collapse into one; here fed-back frames are re-coloured with the objects' colours.
- ``per_object``: one pass per object with a white-on-black prompt, giving one score map per object; a pixel
  goes to the best object above the threshold, so two objects never swap or merge. Optional parts: a window
  around each object's expected position (prompts cropped around their masks the same way, the result pasted
  back), a prior from the previous mask warped by dense optical flow (DIS) that gates and fuses with the
  model's score (and stands in when the prediction vanishes), and a memory of predicted frames that admits a
  frame only when its mask agrees with the warped prior. An object that leaves is absent; it is searched for
  on the full frame with its annotated prompt and comes back with its own id. Where two objects touch, a pixel goes to the
  one whose annotated colours explain it better (``ownership``), so a boundary the flow lets drift is settled.

Every state update is a function of the frames and the final label maps only, so a run resumed from masks
already written continues exactly.

    prop = VideoPropagator(build_model("default"), VideoSettings.from_config(model_cfg.video))
    state = prop.init("frames/")                     # a folder of frames or an .mp4, read lazily
    prop.add_mask(state, 0, first_mask)              # [H, W] ids, 0 = background
    for idx, labels in prop.propagate(state):
        ...
"""
from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import cv2
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..codec import (
    SegType,
    build_palette,
    decode_paint,
    labels_to_colors,
    paint_from_half,
    resize_color_mask,
    resize_image,
    resize_labels,
    resize_paint,
    to_model_tensor,
)
from ..errors import InputError
from ..io.video import FrameSource
from ..model import SegGPT
from ..strategies import build_strategy
from ..utils.runtime import autocast

__all__ = ["ObjectTrack", "VideoPropagator", "VideoSettings", "VideoState", "object_colors"]

_OBJECT_COLORS = build_palette(26)  # 26 colours, 85 apart per channel: well separated for decoding
_WHITE = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)  # per-object prompts: black background, white object

Prompt = tuple[torch.Tensor, torch.Tensor]  # (image, mask), each a normalised [3, h, w] model half
Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), end-exclusive, in frame pixels


def object_colors(ids: np.ndarray) -> np.ndarray:
    """Fixed colour per object id: ``[256, 3]`` uint8, 0 = black. An id's colour never depends on which other
    objects exist, so it stays the same when objects are added later."""
    pal = np.zeros((256, 3), np.uint8)
    table = _OBJECT_COLORS if len(ids) <= 26 else build_palette(255)
    for i in ids:
        pal[i] = table[1 + (int(i) - 1) % (len(table) - 1)]
    return pal


@dataclass(frozen=True)
class VideoSettings:
    """How the propagator builds its context and decodes (a model config's ``video:`` block).

    Attributes:
        decode: ``"joint"`` (official: all objects colour-coded, one pass) or ``"per_object"``.
        context_frames: K, predicted frames kept as prompts besides the annotated ones (joint: the K most
            recent; per_object: per object, see ``memory``). 0 = annotated frames only.
        memory: ``"fifo"`` (every predicted frame joins, official) or ``"gated"`` (per_object: a frame joins
            an object's memory only when its mask has IoU >= ``gate_iou`` with the flow-warped previous mask).
        crop: per_object: predict in a window around each object's expected position.
        crop_margin: the window's side is the object's box side times ``1 + 2 * crop_margin``.
        crop_min: smallest window side, as a share of the frame's shorter side.
        flow: per_object: warp the previous mask with DIS optical flow; the warped mask gates and fuses.
        model_weight: fused score = ``w * model + (1 - w) * warped prior`` (0 = no model pass: the warped
            prior alone, or the previous mask as is without flow).
        gate: model scores further than ``gate`` x the object's size from the warped prior are dropped.
        fg_threshold: per_object: fused score from which a pixel is the object's (in [0, 1]).
        bg_threshold: joint: foreground pixels whose colour score is below this become background.
        gate_iou: memory gate (see ``memory``).
        min_keep: with flow, the warped prior stands in for the fused mask when that keeps at most this share
            of the prior's area (0: only when the prediction vanished).
        redetect_area: a lost object found again on the full frame is accepted when its area is within this
            factor of its annotated area (both ways).
        redetect_threshold: a lost object is searched for on the whole frame and its pixels are those the model
            scores above this (lower than ``fg_threshold``: a small model is less sure of an object coming back
            than of one it follows); the found score is rescaled so this threshold maps to ``fg_threshold``.
        lost_area: a tracked object whose mask falls below this share of its annotated area counts as gone
            (no pixels, no prior), so the next frames search the whole frame for it (0: off): a sliver left by a
            warp that lost its object would otherwise hold the track and block the search.
        redetect_appearance: a region the search finds is kept only when its hue-saturation histogram is
            within this Bhattacharyya distance of the annotated object's (:func:`colour_hist`; 1: no check).
        redetect_colours: before those checks, the region the search finds is cut to its pixels whose colour
            is likelier the object's than the background's in the annotated frame (:func:`object_likelihood`)
            and to its largest connected part: the model's blob is patch-coarse and carries background.
        colour_search: when the model's search finds nothing acceptable, the object is looked for by its colours
            alone: of the connected parts of the pixels likelier the object's than the background's (outside the
            other objects), those of plausible area (``redetect_area``), the one whose colour histogram is closest
            to the annotated object's, when within this Bhattacharyya distance (0: off). The small model's
            full-frame search often misses an object that comes back, whose colours still identify it.
        lost_colour: a tracked object whose mask's mean object likelihood (:func:`object_likelihood`) is below
            this counts as gone, like ``lost_area`` (0: off): the flow, outrun by a fast object, drags its mask
            onto background that looks nothing like it.
        colour_weight: with flow, the fused score is mixed with the object's colour likelihood
            (:func:`object_likelihood`): ``(1 - c) x fused + c x likelihood``, inside the gate. Below 0.4 a pixel
            the prior holds fully stays whatever its colour, and colour alone never adds a pixel; it trims the
            warp's soft edges and trails where the background does not look like the object (0: off).
        occlusion: with flow, pixels of the frame whose backward flow fails the forward-backward check
            (:func:`occlusion_map`: background uncovered behind a moving object, which a backward warp fills with
            the object it came from and so leaves a trail) get no prior. Unless that empties the prior.
        occlusion_colour: with ``occlusion``, a pixel that fails the check keeps its prior where its colour is
            likelier the object's than the background's (:func:`object_likelihood` > 0.5): the check also fails
            inside flat-coloured objects, whose flow is only interpolated, and erodes them frame by frame, while
            the background a moving object uncovers looks like background.
        ownership: per_object: after each frame's decoding, pixels one object holds go to a touching object
            whose colours explain them at least this many times better (a likelihood ratio averaged over a small
            window: :func:`colour_ownership`; 0: off), and a lost object's search may look inside another
            object's expected pixels where they have its colours rather than that object's. The flow-carried
            masks of two touching objects drift across their boundary; the drifted pixels would otherwise keep
            the wrong id for good, and an id would ride on the other object after its own left.
        foreign_colour: per_object: after ``ownership``, a pixel one object holds whose own colour (its
            hue-saturation bin, not a window) its annotation never had, and which makes up at least this share of
            another tracked object's annotation, is taken from the holder (:func:`foreign_pixels`; 0: off): it
            goes to that object when it is connected to within the ownership window of the object's pixels, else
            to background.
            It also acts when that object is lost (a fast object that jumped onto another's warped mask, an
            object seen through the gaps of another): the window-averaged ``ownership`` cannot give pixels to an
            object without pixels, and a textured holder's window outvotes a thin flat object in its gaps.
        foreign_tones: with ``foreign_colour``, the rule runs a second time on histograms that split each
            hue-saturation bin into this many brightness bins (``ObjectTrack.tone_hist``; 1: off): two objects
            of one hue and saturation, one flat and bright, one striped darker, are rivals only by brightness,
            and the bright one's pixels under the dark one's drifted mask leave it. They go to background, never
            to the other object: a histogram split 8 times more finely has empty bins by chance, and pixels
            handed over on that evidence kept a departed object's ghost alive.
        distractors: per_object: at each annotated frame, the parts of the background that look like an object
            (connected pixels likelier its colours than the background's, of an area a re-detection could have:
            ``redetect_area``) are its known distractors; a region a search finds (by the model or by colour) is
            rejected when its colour histogram is closer to one of them than to the object's. A background
            object of the same hue would otherwise be taken for the object once it left, and held after.
        core_colours: per_object: a search's colour checks (``redetect_appearance``, ``colour_search``, the
            distractors) compare a region cut to the object's colours with the histogram of the annotated
            pixels that pass the same cut (``ObjectTrack.core_hist``) rather than of all of them: an object
            whose base colour is the background's keeps only its own colours (stripes, spots) through the
            cut, and their histogram is far from the whole object's.
        canvas: the side in pixels of the model's half the propagator paints on (0: the model's own canvas). The
            model then runs as :meth:`SegGPT.with_canvas`, sharing its weights: a model whose few-shot canvas is
            larger can keep the canvas its video settings were measured on.
    """

    decode: str = "joint"
    context_frames: int = 8
    memory: str = "fifo"
    crop: bool = False
    crop_margin: float = 0.5
    crop_min: float = 0.25
    flow: bool = False
    model_weight: float = 1.0
    gate: float = 0.5
    fg_threshold: float = 0.5
    bg_threshold: float = 0.0
    gate_iou: float = 0.7
    redetect_area: float = 4.0
    min_keep: float = 0.0
    occlusion: bool = False
    occlusion_colour: bool = False
    redetect_threshold: float = 0.5
    lost_area: float = 0.0
    redetect_appearance: float = 1.0
    redetect_colours: bool = False
    lost_colour: float = 0.0
    colour_search: float = 0.0
    colour_weight: float = 0.0
    ownership: float = 0.0
    foreign_colour: float = 0.0
    foreign_tones: int = 1
    distractors: bool = False
    core_colours: bool = False
    canvas: int = 0

    def __post_init__(self) -> None:
        if self.canvas < 0:
            raise InputError(f"video.canvas={self.canvas}: must be 0 (the model's canvas) or a half side in pixels")
        if self.decode not in ("joint", "per_object"):
            raise InputError(f"video.decode={self.decode!r}: expected joint or per_object")
        if self.memory not in ("fifo", "gated"):
            raise InputError(f"video.memory={self.memory!r}: expected fifo or gated")
        if self.context_frames < 0:
            raise InputError(f"context_frames={self.context_frames}: must be >= 0")
        if not 0.0 < self.redetect_threshold <= 1.0:
            raise InputError(f"video.redetect_threshold={self.redetect_threshold}: must be in (0, 1]")
        if not 0.0 <= self.lost_area < 1.0:
            raise InputError(f"video.lost_area={self.lost_area}: must be in [0, 1)")
        if not 0.0 <= self.colour_weight < 0.5:
            raise InputError(f"video.colour_weight={self.colour_weight}: must be in [0, 0.5)")
        if not 0.0 <= self.colour_search < 1.0:
            raise InputError(f"video.colour_search={self.colour_search}: must be in [0, 1) (0: off)")
        if self.ownership != 0.0 and self.ownership <= 1.0:
            raise InputError(f"video.ownership={self.ownership}: must be 0 (off) or a ratio > 1")
        if not 0.0 <= self.foreign_colour < 1.0:
            raise InputError(f"video.foreign_colour={self.foreign_colour}: must be in [0, 1) (a share; 0: off)")
        if self.foreign_tones < 1 or 256 % self.foreign_tones:
            raise InputError(f"video.foreign_tones={self.foreign_tones}: must divide 256 (1: hue and saturation only)")
        if not 0.0 <= self.lost_colour < 1.0:
            raise InputError(f"video.lost_colour={self.lost_colour}: must be in [0, 1)")
        if not 0.0 < self.redetect_appearance <= 1.0:
            raise InputError(f"video.redetect_appearance={self.redetect_appearance}: must be in (0, 1] (1: off)")
        if not 0.0 <= self.model_weight <= 1.0:
            raise InputError(f"video.model_weight={self.model_weight}: must be in [0, 1]")
        if self.decode == "joint" and (self.crop or self.flow or self.memory == "gated" or self.ownership
                                       or self.foreign_colour or self.distractors or self.core_colours):
            raise InputError("video: crop, flow, memory=gated, ownership, foreign_colour, distractors and "
                             "core_colours need decode=per_object")
        if self.foreign_tones > 1 and not self.foreign_colour:
            raise InputError("video.foreign_tones refines the foreign-colour rule: set video.foreign_colour")
        if self.occlusion_colour and not self.occlusion:
            raise InputError("video.occlusion_colour refines the occlusion check: set video.occlusion=true")
        if 0.0 < self.model_weight < 1.0 and not self.flow:
            raise InputError("video.model_weight in (0, 1) fuses with the flow prior: set video.flow=true")

    @property
    def uses_colour(self) -> bool:
        """Whether a setting reads the objects' colours (:func:`object_likelihood`)."""
        return (self.colour_weight > 0 or self.lost_colour > 0 or self.redetect_colours or self.occlusion_colour
                or self.colour_search > 0 or self.ownership > 0 or self.foreign_colour > 0)

    @classmethod
    def official(cls, context_frames: int = 8) -> VideoSettings:
        """The SegGPT paper's setting: first frame + K previous predictions, feature ensemble, joint."""
        return cls(decode="joint", context_frames=context_frames)

    @classmethod
    def flow_only(cls, occlusion: bool = False) -> VideoSettings:
        """The flow-warp baseline: the previous mask warped by DIS flow (with ``occlusion``, as the propagator
        it is compared with), no model pass."""
        return cls(decode="per_object", flow=True, model_weight=0.0, context_frames=0, occlusion=occlusion)

    @classmethod
    def copy_first(cls) -> VideoSettings:
        """The copy baseline: every frame keeps the previous (so the first) mask, no model pass."""
        return cls(decode="per_object", model_weight=0.0, context_frames=0)

    @classmethod
    def for_model(cls, model: SegGPT | str) -> VideoSettings:
        """The ``video:`` block of the model's config (``conf/model/<name>.yaml``), or :meth:`official` for
        a model built without a config name."""
        name = model if isinstance(model, str) else getattr(model, "config_name", None)
        if not name:
            return cls.official()
        from ..config import load_group

        return cls.from_config(load_group("model", name).get("video"))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, **overrides: Any) -> VideoSettings:
        """From a ``video:`` config block (unknown keys are an error) plus non-None ``overrides``."""
        values = dict(OmegaConf.to_container(cfg) if isinstance(cfg, DictConfig) else (cfg or {}))
        values.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(f"video: unknown setting(s) {unknown}; known: {sorted(names)}")
        return cls(**values)


@dataclass
class ObjectTrack:
    """One object's per_object state.

    Attributes:
        oid: the object's id.
        anchor: the prompt from its latest annotated frame (cropped around its mask when cropping).
        area: its pixel count in that annotation (the scale a re-detection is checked against).
        memory: predicted frames admitted as extra prompts, bounded by K.
        hist / bg_hist: hue-saturation histograms (:func:`colour_hist`) of the object and of the background in
            that annotation.
        distractors: histograms of the background parts of that annotation that look like the object
            (``VideoSettings.distractors``).
        core_hist: the histogram of the annotated pixels that look like the object rather than the background
            (:func:`object_likelihood` > 0.5): what a colour cut of the object keeps
            (``VideoSettings.core_colours``).
        tone_hist: the object's histogram in hue, saturation and brightness (``VideoSettings.foreign_tones``
            brightness bins): what :func:`foreign_pixels` compares when it tells colours apart by tone too.
    """

    oid: int
    anchor: Prompt
    area: int
    memory: deque = field(default_factory=deque)
    hist: np.ndarray | None = None
    bg_hist: np.ndarray | None = None
    distractors: list[np.ndarray] = field(default_factory=list)
    core_hist: np.ndarray | None = None
    tone_hist: np.ndarray | None = None

    @property
    def has_colours(self) -> bool:
        """Whether the annotated object's and background's histograms are known (:func:`object_likelihood`)."""
        return self.hist is not None and self.bg_hist is not None

    def likelihood(self, frame: np.ndarray, bins: np.ndarray | None = None) -> np.ndarray:
        """:func:`object_likelihood` of ``frame`` under this object's colours (``bins``: :func:`hs_bins`)."""
        return object_likelihood(frame, self.hist, self.bg_hist, bins)

    def cut_hist(self, cut: bool = True) -> np.ndarray:
        """The histogram a region found by a search is compared with: :attr:`core_hist` when the region was
        cut to the object's colours (``cut``) and it is known, else :attr:`hist`."""
        return self.core_hist if cut and self.core_hist is not None else self.hist

    def area_range(self, factor: float) -> tuple[float, float]:
        """The areas a found region may have: within ``factor`` of the annotated area, both ways."""
        return self.area / factor, self.area * factor

    def like_a_distractor(self, region_hist: np.ndarray, dist: float) -> bool:
        """Whether a region's histogram is closer to one of the known distractors' than ``dist`` (its
        Bhattacharyya distance to the object's)."""
        return any(cv2.compareHist(d, region_hist, cv2.HISTCMP_BHATTACHARYYA) < dist for d in self.distractors)


_HIST_BINS = (16, 8)  # hue, saturation
_SATURATED = np.arange(_HIST_BINS[0] * _HIST_BINS[1]) % _HIST_BINS[1] >= 2  # bins of saturation >= 64 / 256
MAX_DISTRACTORS = 8  # known distractors kept per object and annotation (the largest)
OWNERSHIP_WINDOW = 0.2  # colour_ownership's window side, as a share of the smallest object's annotated side
FOREIGN_MIN_DIST = 0.6  # foreign_pixels: objects this far apart in colour (Bhattacharyya) take pixels back


def colour_hist(frame: np.ndarray, mask: np.ndarray, tones: int = 1) -> np.ndarray:
    """Normalised hue-saturation histogram (16 x 8) of ``frame``'s pixels under ``mask``; with ``tones`` > 1
    each hue-saturation bin is split into that many brightness (value) bins (16 x 8 x tones)."""
    hsv = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2HSV)
    if tones == 1:
        h = cv2.calcHist([hsv], [0, 1], mask.astype(np.uint8), list(_HIST_BINS), [0, 180, 0, 256])
    else:
        h = cv2.calcHist([hsv], [0, 1, 2], mask.astype(np.uint8), [*_HIST_BINS, tones], [0, 180, 0, 256, 0, 256])
    return cv2.normalize(h, None, 1.0, 0.0, cv2.NORM_L1)


def hs_bins(frame: np.ndarray, tones: int = 1) -> np.ndarray:
    """``[H, W]`` int32: each pixel's bin of :func:`colour_hist` with as many ``tones`` (row-major over
    16 x 8, or 16 x 8 x tones)."""
    hsv = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2HSV)
    hb = np.minimum((hsv[..., 0].astype(np.int32) * _HIST_BINS[0]) // 180, _HIST_BINS[0] - 1)
    bins = hb * _HIST_BINS[1] + (hsv[..., 1].astype(np.int32) * _HIST_BINS[1]) // 256
    if tones == 1:
        return bins
    return bins * tones + (hsv[..., 2].astype(np.int32) * tones) // 256


def object_likelihood(frame: np.ndarray, fg_hist: np.ndarray, bg_hist: np.ndarray,
                      bins: np.ndarray | None = None) -> np.ndarray:
    """``[H, W]`` float32 in [0, 1]: per pixel, ``p_fg / (p_fg + p_bg)`` of its hue-saturation bin under the
    object's and the background's histograms (:func:`colour_hist`); 0.5 for a colour neither has. ``bins``:
    :func:`hs_bins` of ``frame`` when already computed."""
    fg, bg = np.asarray(fg_hist, np.float32), np.asarray(bg_hist, np.float32)
    table = np.where(fg + bg > 0, fg / np.maximum(fg + bg, 1e-12), 0.5).astype(np.float32).reshape(-1)
    return table[hs_bins(frame) if bins is None else bins]


def colour_logp(bins: np.ndarray, hists: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Per object, ``[H, W]`` float32: the log of its annotated hue-saturation histogram (:func:`colour_hist`)
    at each pixel's bin (:func:`hs_bins`)."""
    return {i: np.log(np.asarray(h, np.float32).reshape(-1) + 1e-3)[bins] for i, h in hists.items()}


def claimed_by_colour(region: np.ndarray, logp_claim: np.ndarray, logp_owner: np.ndarray, ratio: float,
                      window: int, looks: np.ndarray | None = None) -> np.ndarray:
    """The pixels of ``region`` (an object's pixels, bool ``[H, W]``) whose colours are likelier another
    object's: the claimant's log-likelihood (:func:`colour_logp`) beats the owner's by more than
    ``log(ratio)``, both averaged over the ``window`` x ``window`` box around the pixel *within the region*
    (a local colour-texture score: a checkered object's square of a colour it shares with a plain neighbour
    still sits among its other colours; the background next to the region does not count), and, when
    ``looks`` is given, the pixel looks like the claimant rather than the background."""
    k = max(1, int(window)) | 1
    weight = np.maximum(cv2.blur(region.astype(np.float32), (k, k)), 1e-6)
    gain = cv2.blur((logp_claim - logp_owner) * region, (k, k)) / weight
    out = region & (gain > np.log(ratio))
    return out & looks if looks is not None else out


def colour_ownership(labels: np.ndarray, logp: Mapping[int, np.ndarray], ratio: float, window: int,
                     looks: Mapping[int, np.ndarray] | None = None, reach: int = 0) -> np.ndarray:
    """Hand pixels from one object to a touching one whose colours explain them better.

    A pixel labelled i moves to object j when j claims it by colour (:func:`claimed_by_colour`, with
    ``looks[j]`` when given: background that i's mask spilled onto is not j's either) and it is connected
    (8-connected, through such pixels) to j's labelled pixels, or to within ``reach`` pixels of them (an object
    seen through another's gaps: its parts between the teeth of a comb do not touch its own pixels). Background
    is never touched: this only settles which of two touching objects owns a pixel, where the flow-carried
    masks drift across the boundary.

    Returns:
        a new label map (``labels`` itself when fewer than two objects with colours are present).
    """
    ids = [i for i in sorted(logp) if (labels == i).any()]
    if len(ids) < 2:
        return labels
    out, moved = labels.copy(), np.zeros(labels.shape, bool)
    for i in ids:
        own = labels == i
        for j in ids:
            if j == i:
                continue
            cand = claimed_by_colour(own, logp[j], logp[i], ratio, window,
                                     looks.get(j) if looks is not None else None)
            if not cand.any():
                continue
            recv = labels == j
            if reach > 0:  # j's pixels grown by ``reach``: a claimed part across a thin gap still connects
                recv = cv2.dilate(recv.astype(np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8)) > 0
            n, lab = cv2.connectedComponents((cand | recv).astype(np.uint8), connectivity=8)
            touching = np.zeros(n, bool)
            touching[np.unique(lab[recv])] = True
            touching[0] = False
            move = cand & touching[lab] & ~moved
            out[move], moved[move] = j, True
    return out


def foreign_pixels(labels: np.ndarray, bins: np.ndarray, hists: Mapping[int, np.ndarray], min_share: float,
                   reach: int, rivals: Mapping[int, Sequence[int]], give: bool = True) -> np.ndarray:
    """Take from each object the pixels whose colour it never had and another object has.

    A pixel labelled i whose colour bin (``bins``: :func:`hs_bins`, with as many tones as ``hists``) is empty in
    i's annotated histogram (``hists``: :func:`colour_hist`) and holds at least ``min_share`` of one of ``rivals[i]``'s is not i's:
    it goes to the rival that has most of that colour when it is connected (8-connected, through such pixels)
    to within ``reach`` pixels of that rival's labelled pixels (as :func:`colour_ownership`) and ``give`` is
    set, else to background.
    Per pixel, without a window: a thin object seen through another's gaps has too few pixels to win a window.
    Only saturated colours count (the hue of a greyish pixel, such as an anti-aliased edge's, says little), and
    only an empty bin: an object's own colours are often under-counted in its annotation (a stripe's
    shade on a few pixels), and a mere likelihood ratio would cut holes in it. Rivals may be absent from
    ``labels`` (lost objects): their colours still take pixels from the others. Only objects whose colours tell
    them apart should be rivals (:func:`colour_rivals`).

    Returns:
        a new label map (``labels`` itself when nothing changes).
    """
    ids = [int(i) for i in np.unique(labels) if i in hists and rivals.get(int(i))]
    out = labels
    kernel = np.ones((2 * reach + 1,) * 2, np.uint8) if reach > 0 else None
    for i in ids:
        never = np.asarray(hists[i], np.float32).reshape(-1) <= 0
        never &= np.repeat(_SATURATED, never.size // _SATURATED.size)
        share = np.stack([np.asarray(hists[j], np.float32).reshape(-1) for j in rivals[i]])  # [R, bins]
        owner = np.where(never & (share.max(axis=0) >= min_share), share.argmax(axis=0), -1)[bins]
        taken = (labels == i) & (owner >= 0)
        if not taken.any():
            continue
        if out is labels:
            out = labels.copy()
        out[taken] = 0
        for k, j in enumerate(rivals[i] if give else ()):
            near = labels == j
            cand = taken & (owner == k)
            if not near.any() or not cand.any():
                continue
            if kernel is not None:
                near = cv2.dilate(near.astype(np.uint8), kernel) > 0
            n, lab = cv2.connectedComponents((cand | near).astype(np.uint8), connectivity=8)
            touching = np.zeros(n, bool)
            touching[np.unique(lab[near])] = True
            touching[0] = False
            out[cand & touching[lab]] = j
    return out


def colour_rivals(hists: Mapping[int, np.ndarray], min_dist: float = FOREIGN_MIN_DIST) -> dict[int, list[int]]:
    """Per object, the others whose annotated colour histograms (:func:`colour_hist`) are at least ``min_dist``
    apart from its own (Bhattacharyya distance): the objects :func:`foreign_pixels` may take pixels for."""
    return {i: [j for j in hists if j != i
                and cv2.compareHist(hists[i], hists[j], cv2.HISTCMP_BHATTACHARYYA) >= min_dist] for i in hists}


def largest_part(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected part of a boolean mask (the mask itself when it has at most one)."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    return lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


@dataclass
class VideoState:
    """Everything one propagation needs, in plain fields.

    Attributes:
        frames: the lazy frame source.
        size: (H, W) of every frame.
        annotations: frame index -> given label map (full size); only the frames the user annotated.
        object_ids: ids of all objects annotated so far (sorted).
        anchors: joint: model-space (image, label map) of the annotated frames, always in the context.
        recent: joint: FIFO of the last K predicted frames as (image, label map at model size), bounded.
        tracks: per_object: id -> :class:`ObjectTrack`.
        prev_gray: per_object: the previous frame, grey, at the flow's scale.
        prev_labels: per_object: the previous frame's final label map ``[H, W]``.
    """

    frames: FrameSource
    size: tuple[int, int]
    annotations: dict[int, np.ndarray] = field(default_factory=dict)
    object_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    anchors: dict[int, tuple[torch.Tensor, np.ndarray]] = field(default_factory=dict)
    recent: deque = field(default_factory=deque)
    tracks: dict[int, ObjectTrack] = field(default_factory=dict)
    prev_gray: np.ndarray | None = None
    prev_labels: np.ndarray | None = None

    @property
    def start(self) -> int:
        if not self.annotations:
            raise RuntimeError("add_mask(...) at least once before propagate()")
        return min(self.annotations)


# ------------------------------------------------------------------------------------------ geometry + flow

_FLOW_SIDE = 480  # flow is computed with the longer side at most this many pixels


def mask_box(mask: np.ndarray) -> Box | None:
    """Bounding box ``(y0, y1, x0, x1)`` (end-exclusive) of a bool mask, None when empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not rows.size:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def window_around(box: Box, size: tuple[int, int], margin: float, min_frac: float) -> Box:
    """A square window (clipped to the frame when larger than it) centred on ``box``, side =
    ``max(box side * (1 + 2 margin), min_frac * shorter frame side)``, shifted inside the frame."""
    h, w = size
    y0, y1, x0, x1 = box
    side = max(max(y1 - y0, x1 - x0) * (1 + 2 * margin), min_frac * min(h, w), 16)
    out = []
    for lo, hi, n in ((y0, y1, h), (x0, x1, w)):
        s = round(min(side, n))
        start = round((lo + hi) / 2 - s / 2)
        start = min(max(start, 0), n - s)
        out += [start, start + s]
    return out[0], out[1], out[2], out[3]


def flow_gray(frame: np.ndarray) -> np.ndarray:
    """The frame as grey uint8 at the flow's scale (longer side <= 480 px)."""
    h, w = frame.shape[:2]
    scale = min(1.0, _FLOW_SIDE / max(h, w))
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return grey


def backward_flow(prev_gray: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """DIS optical flow from ``gray`` (frame t) to ``prev_gray`` (t-1): ``[h, w, 2]`` float32 (dx, dy) at the
    flow's scale; pixel x of frame t came from ``x + flow[x]`` in frame t-1.

    OpenCV's MEDIUM preset refined down to the finest pyramid level (finest scale 0 instead of 1) with 3
    variational refinement iterations: on DAVIS 2016 the flow-only propagation scores J&F 54.9 with it,
    50.2 with the plain preset (docs/video)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    dis.setVariationalRefinementIterations(3)
    return dis.calc(gray, prev_gray, None)


def _along_flow(src: np.ndarray, flow: np.ndarray, border: int, value: float = 0.0) -> np.ndarray:
    """``src`` (at the flow's scale) sampled at ``x + flow[x]`` for every pixel x, bilinearly."""
    fh, fw = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(fw, dtype=np.float32), np.arange(fh, dtype=np.float32))
    return cv2.remap(src, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=border,
                     borderValue=value)


def occlusion_map(back: np.ndarray, fwd: np.ndarray) -> np.ndarray:
    """Pixels of frame t whose backward flow (t -> t-1) the forward flow (t-1 -> t) does not send back:
    ``|b(x) + f(x + b(x))|^2 > 0.05 (|b|^2 + |f|^2) + 3`` px^2, float32 0/1 at the flow's scale. Background
    uncovered behind a moving object fails it. The forward-backward check of Sundaram et al. (ECCV 2010) with
    looser bounds than their 0.01 and 0.5: theirs also fails inside flat-coloured objects, whose DIS flow is
    only interpolated, and erodes them (docs/video: generated clips 64.7 -> 54.4 with flow alone; 65.8 with
    these bounds)."""
    f_at = _along_flow(fwd, back, cv2.BORDER_REPLICATE)
    err = ((back + f_at) ** 2).sum(-1)
    bound = 0.05 * ((back**2).sum(-1) + (f_at**2).sum(-1)) + 3.0
    return (err > bound).astype(np.float32)


def warp_mask(mask: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Warp a full-size bool mask of frame t-1 into frame t with :func:`backward_flow`'s flow.

    Returns:
        ``[H, W]`` float32 in [0, 1] (soft at the edges); 0 where the flow points outside the frame.
    """
    h, w = mask.shape
    fh, fw = flow.shape[:2]
    small = cv2.resize(mask.astype(np.float32), (fw, fh), interpolation=cv2.INTER_AREA)
    warped = _along_flow(small, flow, cv2.BORDER_CONSTANT)
    return cv2.resize(warped, (w, h), interpolation=cv2.INTER_LINEAR)


def _gate_mask(prior: np.ndarray, gate: float) -> np.ndarray:
    """Where an object may be: the warped prior (> 0.5) grown by ``gate`` x its size (sqrt of area), as
    the pixels within that Euclidean distance of it (a distance transform: linear in the frame's pixels,
    where a disc-shaped dilation grows with the disc)."""
    core = prior > 0.5
    r = max(2, round(gate * np.sqrt(core.sum())))
    dist = cv2.distanceTransform((~core).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)
    return dist <= r


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


# ---------------------------------------------------------------------------------------------- propagator


class VideoPropagator:
    """Propagate annotated objects through a video with one shared model.

    Args:
        model: the SegGPT model (shared, never modified).
        settings: context, decoding and priors (:class:`VideoSettings`); default the ``video:`` block of the
            model's config (:meth:`VideoSettings.for_model`).
        context_frames: overrides ``settings.context_frames`` when given.
        seg_type: instance (default for VOS) or semantic (any spelling :meth:`SegType.parse` takes).
        precision: fp32 | bf16 | fp16 autocast.
        bg_threshold: overrides ``settings.bg_threshold`` when given.
    """

    def __init__(self, model: SegGPT, settings: VideoSettings | None = None, *,
                 context_frames: int | None = None, seg_type: SegType | str | int = SegType.INSTANCE,
                 precision: str = "fp32", bg_threshold: float | None = None) -> None:
        settings = settings if settings is not None else VideoSettings.for_model(model)
        overrides = {"context_frames": context_frames, "bg_threshold": bg_threshold}
        self.settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        self.model = self._on_canvas(model, self.settings.canvas)
        self.seg_type = SegType.parse(seg_type)
        self.precision = precision
        self.strategy = build_strategy("feature_ensemble", self.model)

    @staticmethod
    def _on_canvas(model: SegGPT, side: int) -> SegGPT:
        """``model`` on a ``2 * side x side`` canvas (``VideoSettings.canvas``), its weights shared."""
        if not side:
            return model
        try:
            return model.with_canvas((2 * side, side))
        except ValueError as e:
            raise InputError(f"video.canvas={side}: {e}") from None

    @property
    def context_frames(self) -> int:
        return self.settings.context_frames

    @property
    def half_size(self) -> tuple[int, int]:
        return self.strategy.half_size

    def init(self, frames_source: str | os.PathLike | FrameSource) -> VideoState:
        """Open a video (folder of frames or video file) lazily and return a fresh state."""
        src = frames_source if isinstance(frames_source, FrameSource) else FrameSource(frames_source)
        return VideoState(frames=src, size=src.size, recent=deque(maxlen=self.context_frames))

    def add_mask(self, state: VideoState, frame_idx: int, label_map: np.ndarray,
                 frame: np.ndarray | None = None) -> None:
        """Annotate frame ``frame_idx`` with ``label_map`` (``[H, W]`` ids 0..255, 0 = background). Later
        annotations may add new objects; their pixels override the prediction at that frame."""
        labels = np.asarray(label_map).astype(np.int64)
        if labels.shape != tuple(state.size):
            raise InputError(f"mask for frame {frame_idx} is {labels.shape[1]}x{labels.shape[0]} but the "
                             f"frames are {state.size[1]}x{state.size[0]}")
        if labels.min() < 0 or labels.max() > 255:
            raise InputError(f"mask for frame {frame_idx}: ids must be in 0..255, got up to {labels.max()}")
        if not labels.any():
            raise InputError(f"mask for frame {frame_idx} has no objects (all background)")
        if not 0 <= frame_idx < len(state.frames):
            raise InputError(f"frame {frame_idx} is outside the video's {len(state.frames)} frames")
        state.annotations[frame_idx] = labels
        state.object_ids = np.union1d(state.object_ids, np.unique(labels[labels > 0]))
        if frame is not None:
            self._set_anchor(state, frame_idx, frame, labels)

    # ------------------------------------------------------------------------------------ model-space parts

    def _image_tensor(self, frame: np.ndarray) -> torch.Tensor:
        return to_model_tensor(resize_image(frame, self.half_size))

    def _mask_tensor(self, small_labels: np.ndarray, palette: np.ndarray) -> torch.Tensor:
        return to_model_tensor(resize_color_mask(labels_to_colors(small_labels, palette), self.half_size))

    def _object_prompt(self, frame: np.ndarray, mask: np.ndarray) -> Prompt:
        """An object's prompt: the frame (cropped around the mask when cropping) and its white mask."""
        y0, y1, x0, x1 = self._window(mask, state_size=mask.shape)
        small = resize_labels(mask[y0:y1, x0:x1].astype(np.int64), self.half_size)
        return self._image_tensor(np.ascontiguousarray(frame[y0:y1, x0:x1])), self._mask_tensor(small, _WHITE)

    def _window(self, mask: np.ndarray | None, state_size: tuple[int, int]) -> Box:
        box = mask_box(mask) if mask is not None else None
        if box is None or not self.settings.crop:
            return 0, state_size[0], 0, state_size[1]
        return window_around(box, state_size, self.settings.crop_margin, self.settings.crop_min)

    def _run_model(self, prompts: list[Prompt], query: torch.Tensor) -> np.ndarray:
        """The painted query half ``[h, w, 3]`` float RGB 0..255 under the feature ensemble."""
        imgs = torch.stack([p[0] for p in prompts])
        masks = torch.stack([p[1] for p in prompts])
        self.strategy.set_prompts(imgs, masks, self.seg_type)
        device = self.strategy.device
        with autocast(device, self.precision):
            pred = self.strategy.predict(query.to(device))
        return paint_from_half(pred[None])[0]

    # ---------------------------------------------------------------------------------------- joint decoding

    def _set_anchor(self, state: VideoState, idx: int, frame: np.ndarray, labels: np.ndarray) -> None:
        if self.settings.decode == "joint":
            state.anchors[idx] = (self._image_tensor(frame), resize_labels(labels, self.half_size))
            return
        background = labels == 0
        for oid in np.unique(labels[labels > 0]):
            mask = labels == oid
            track = ObjectTrack(int(oid), self._object_prompt(frame, mask), int(mask.sum()),
                                deque(maxlen=self.context_frames))
            self._set_colours(track, frame, mask, background)
            old = state.tracks.get(int(oid))
            if old is not None:
                track.memory.extend(old.memory)
            state.tracks[int(oid)] = track

    def _set_colours(self, track: ObjectTrack, frame: np.ndarray, mask: np.ndarray, background: np.ndarray
                     ) -> None:
        """A track's colours from an annotated frame: the object's and the background's histograms and, as the
        settings ask, its distractors and the histogram of its own colours (``core_hist``)."""
        track.hist, track.bg_hist = colour_hist(frame, mask), colour_hist(frame, background)
        if self.settings.distractors:
            track.distractors = self._distractors(track, frame, background)
        if self.settings.core_colours:
            core = mask & (track.likelihood(frame) > 0.5)
            track.core_hist = colour_hist(frame, core) if core.any() else None
        if self.settings.foreign_tones > 1:
            track.tone_hist = colour_hist(frame, mask, self.settings.foreign_tones)

    def _distractors(self, track: ObjectTrack, frame: np.ndarray, background: np.ndarray) -> list[np.ndarray]:
        """Histograms of the connected background parts of an annotated frame that look like the object and
        have an area a re-detection could have (``redetect_area``), largest first, at most ``MAX_DISTRACTORS``."""
        looks = (track.likelihood(frame) > 0.5) & background
        _, lab, stats, _ = cv2.connectedComponentsWithStats(looks.astype(np.uint8), connectivity=8)
        lo, hi = track.area_range(self.settings.redetect_area)
        areas = stats[1:, cv2.CC_STAT_AREA]
        parts = [i + 1 for i in np.argsort(-areas) if lo <= areas[i] <= hi][:MAX_DISTRACTORS]
        return [colour_hist(frame, lab == i) for i in parts]

    def _predict_joint(self, state: VideoState, frame: np.ndarray) -> np.ndarray:
        palette = object_colors(state.object_ids)
        seen = [np.unique(state.annotations[i]) for i in state.anchors]  # annotations reached so far
        table = np.union1d(np.zeros(1, np.int64), np.concatenate(seen)).astype(np.int64)
        pairs = [state.anchors[i] for i in sorted(state.anchors)] + list(state.recent)
        prompts = [(img, self._mask_tensor(lab, palette)) for img, lab in pairs]
        paint = resize_paint(self._run_model(prompts, self._image_tensor(frame)), state.size, mode="bilinear")
        compact, _ = decode_paint(paint, palette[table], bg_threshold=self.settings.bg_threshold)
        return table[compact]

    # ----------------------------------------------------------------------------------- per-object decoding

    def _priors(self, state: VideoState, frame: np.ndarray) -> dict[int, np.ndarray]:
        """Each tracked object's expected mask in this frame, ``[H, W]`` float in [0, 1]: the previous mask
        warped by flow (or as is without flow); empty for an object absent from the previous frame."""
        if state.prev_labels is None:
            return {}
        flow = visible = bins = None
        if self.settings.flow:
            gray = flow_gray(frame)
            flow = backward_flow(state.prev_gray, gray)
            if self.settings.occlusion:
                occluded = occlusion_map(flow, backward_flow(gray, state.prev_gray))
                visible = 1.0 - cv2.resize(occluded, state.size[::-1], interpolation=cv2.INTER_LINEAR)
                bins = hs_bins(frame) if self.settings.occlusion_colour else None
        priors = {}
        for oid, track in state.tracks.items():
            prev = state.prev_labels == oid
            if not prev.any():
                priors[oid] = np.zeros(state.size, np.float32)
            elif flow is None:
                priors[oid] = prev.astype(np.float32)
            else:
                prior = warp_mask(prev, flow)
                if visible is not None:
                    vis = visible
                    if bins is not None and track.has_colours:
                        looks = track.likelihood(frame, bins) > 0.5
                        vis = np.where(looks, 1.0, visible).astype(np.float32)
                    kept = prior * vis
                    prior = kept if (kept > 0.5).any() else prior  # never lose an object to the check alone
                priors[oid] = prior
        return priors

    def _object_score(self, track: ObjectTrack, frame: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
        """The model's score map ``[H, W]`` in [0, 1] for one object (0 outside its window)."""
        size = frame.shape[:2]
        y0, y1, x0, x1 = self._window(prior > 0.5 if prior is not None else None, size)
        query = self._image_tensor(np.ascontiguousarray(frame[y0:y1, x0:x1]))
        paint = self._run_model([track.anchor, *track.memory], query)
        score = np.zeros(size, np.float32)
        win = cv2.resize(paint.mean(axis=2) / 255.0, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        score[y0:y1, x0:x1] = np.clip(win, 0.0, 1.0)
        return score

    def _fused_score(self, track: ObjectTrack, frame: np.ndarray, prior: np.ndarray | None,
                     taken: Callable[[], np.ndarray | None] | None = None,
                     bins: np.ndarray | None = None) -> np.ndarray:
        """Model score fused with the prior and gated around it. An object with no prior, or whose track ends
        in this frame (``lost_area``, ``lost_colour``), is searched for on the whole frame at once
        (:meth:`_search`). ``bins``: the frame's :func:`hs_bins`, computed once per frame by the caller."""
        s = self.settings
        if bins is None and s.uses_colour:
            bins = hs_bins(frame)
        if prior is not None and (prior > 0.5).any():
            score = self._tracked_score(track, frame, prior, bins)
            if score is not None:
                return score
        return self._search(track, frame, taken() if taken is not None else None, bins)

    def _tracked_score(self, track: ObjectTrack, frame: np.ndarray, prior: np.ndarray,
                       bins: np.ndarray | None) -> np.ndarray | None:
        """The fused score of an object the flow still follows, or None when its track ends here."""
        s = self.settings
        if s.model_weight == 0.0:
            return prior
        score = self._object_score(track, frame, prior)
        like = None  # the object's colour likelihood, computed once for both colour settings
        if (s.colour_weight > 0 or s.lost_colour > 0) and track.has_colours:
            like = track.likelihood(frame, bins)
        if s.flow:
            score = s.model_weight * score + (1.0 - s.model_weight) * prior
            if s.colour_weight > 0 and like is not None:
                score = (1.0 - s.colour_weight) * score + s.colour_weight * like
            score[~_gate_mask(prior, s.gate)] = 0.0
            kept = int((score > s.fg_threshold).sum())
            if kept <= s.min_keep * int((prior > 0.5).sum()):  # the prediction vanished or collapsed
                score = prior
        kept = score > s.fg_threshold
        if s.lost_area > 0 and int(kept.sum()) < s.lost_area * track.area:
            return None
        if s.lost_colour > 0 and like is not None and kept.any() and float(like[kept].mean()) < s.lost_colour:
            return None
        return score

    def _search(self, track: ObjectTrack, frame: np.ndarray, taken: np.ndarray | None,
                bins: np.ndarray | None) -> np.ndarray:
        """A lost object searched for on the whole frame, outside ``taken`` (the pixels other tracked objects
        are expected on); kept only when its area (and, if set, its colours) are plausible."""
        s = self.settings
        if s.model_weight == 0.0:
            return np.zeros(frame.shape[:2], np.float32)
        score = self._object_score(track, frame, None)
        if taken is not None:
            score[taken] = 0.0
        found = score > s.redetect_threshold
        looks = None  # the object-coloured pixels, for the colour cut and the colour search alike
        if track.has_colours and (s.redetect_colours or s.colour_search > 0):
            looks = track.likelihood(frame, bins) > 0.5
        if s.redetect_colours and looks is not None and found.any():
            found = largest_part(found & looks)
            score = np.where(found, score, 0.0)
        area = int(found.sum())
        lo, hi = track.area_range(s.redetect_area)
        ok = lo <= area <= hi
        if ok and (s.redetect_appearance < 1.0 or track.distractors) and track.hist is not None:
            found_hist = colour_hist(frame, found)
            dist = cv2.compareHist(track.cut_hist(s.redetect_colours), found_hist, cv2.HISTCMP_BHATTACHARYYA)
            ok = dist <= s.redetect_appearance and not track.like_a_distractor(found_hist, dist)
        if ok:
            return np.clip(score * (s.fg_threshold / s.redetect_threshold), 0.0, 1.0)
        if s.colour_search > 0 and looks is not None:
            part = self._colour_search(track, frame, looks if taken is None else looks & ~taken)
            if part is not None:  # held at the middle of the range above the threshold
                return np.where(part, (1.0 + s.fg_threshold) / 2, 0.0).astype(np.float32)
        return np.zeros_like(score)

    def _colour_search(self, track: ObjectTrack, frame: np.ndarray, looks: np.ndarray) -> np.ndarray | None:
        """The connected part of ``looks`` (the pixels whose colour is likelier the object's, outside the other
        objects) with a plausible area (``redetect_area``) whose colour histogram is closest to the annotated
        object's, if within ``colour_search``; None when there is none."""
        s = self.settings
        _, lab, stats, _ = cv2.connectedComponentsWithStats(looks.astype(np.uint8), connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        lo, hi = track.area_range(s.redetect_area)
        plausible = np.flatnonzero((areas >= lo) & (areas <= hi))
        best, best_dist = None, s.colour_search
        for i in plausible + 1:
            part = lab == i
            part_hist = colour_hist(frame, part)
            dist = cv2.compareHist(track.cut_hist(), part_hist, cv2.HISTCMP_BHATTACHARYYA)
            if dist <= best_dist and not track.like_a_distractor(part_hist, dist):
                best, best_dist = part, dist
        return best

    def _predict_objects(self, state: VideoState, frame: np.ndarray, priors: dict[int, np.ndarray]
                         ) -> np.ndarray:
        """Per-object passes; each pixel goes to the best-scoring object above ``fg_threshold``."""
        ids = sorted(state.tracks)
        if not ids:
            return np.zeros(state.size, np.int64)

        s = self.settings
        bins = hs_bins(frame) if s.uses_colour else None
        logp = looks = None  # with ownership: colour_ownership's log-likelihoods and object-like pixels
        coloured = [o for o in ids if state.tracks[o].has_colours]
        window = round(OWNERSHIP_WINDOW * np.sqrt(min(state.tracks[o].area for o in ids)))
        if s.ownership > 0 and len(coloured) >= 2:
            logp = colour_logp(bins, {o: state.tracks[o].hist for o in coloured})
            looks = {o: state.tracks[o].likelihood(frame, bins) > 0.5 for o in coloured}

        def others(oid: int) -> np.ndarray | None:
            """For a search only: the pixels the other objects are expected on, less (with ownership) those
            whose colours are this object's rather than theirs (an object seen through another's gaps)."""
            masks = []
            for o in ids:
                if o == oid or o not in priors:
                    continue
                m = priors[o] > 0.5
                if logp is not None and oid in logp and o in logp:
                    m &= ~claimed_by_colour(m, logp[oid], logp[o], s.ownership, window, looks[oid])
                masks.append(m)
            return np.logical_or.reduce(masks) if masks else None

        scores = np.stack([self._fused_score(state.tracks[o], frame, priors.get(o), partial(others, o), bins)
                           for o in ids])
        best = scores.argmax(axis=0)
        table = np.asarray(ids, np.int64)
        labels = np.where(scores.max(axis=0) > s.fg_threshold, table[best], 0)
        if logp is not None:
            labels = colour_ownership(labels, logp, s.ownership, window, looks, reach=window)
        if s.foreign_colour > 0 and len(coloured) >= 2:
            hists = {o: state.tracks[o].hist for o in coloured}
            labels = foreign_pixels(labels, bins, hists, s.foreign_colour, window, colour_rivals(hists))
            if s.foreign_tones > 1:  # again, telling colours apart by brightness too
                hists = {o: state.tracks[o].tone_hist for o in coloured}
                labels = foreign_pixels(labels, hs_bins(frame, s.foreign_tones), hists, s.foreign_colour, window,
                                        colour_rivals(hists), give=False)
        return labels

    def _remember_objects(self, state: VideoState, idx: int, frame: np.ndarray, labels: np.ndarray,
                          priors: dict[int, np.ndarray]) -> None:
        """Admit frame ``idx`` into each present object's memory (every frame, or gated), then keep the frame
        and its labels for the next frame's prior. Uses only frames and final labels (exact resume)."""
        if self.context_frames > 0 and idx not in state.annotations:
            for oid, track in state.tracks.items():
                mask = labels == oid
                if not mask.any():
                    continue
                if self.settings.memory == "gated":
                    prior = priors.get(oid)
                    if prior is None or _iou(mask, prior > 0.5) < self.settings.gate_iou:
                        continue
                track.memory.append(self._object_prompt(frame, mask))
        state.prev_labels = labels
        state.prev_gray = flow_gray(frame) if self.settings.flow else None

    # ------------------------------------------------------------------------------------------- public API

    @torch.inference_mode()
    def predict_frame(self, state: VideoState, frame: np.ndarray,
                      priors: dict[int, np.ndarray] | None = None) -> np.ndarray:
        """Label map ``[H, W]`` of one frame from the current context (does not change the state)."""
        if self.settings.decode == "joint":
            return self._predict_joint(state, frame)
        return self._predict_objects(state, frame, self._priors(state, frame) if priors is None else priors)

    def remember(self, state: VideoState, idx: int, frame: np.ndarray, labels: np.ndarray,
                 priors: dict[int, np.ndarray] | None = None) -> None:
        """Record frame ``idx`` with its final labels: annotated frames become anchors; predicted frames
        enter the memory (joint: the FIFO; per_object: see :class:`VideoSettings`)."""
        if self.settings.decode == "per_object":
            if idx in state.annotations:  # only the objects the user annotated get a new anchor
                self._set_anchor(state, idx, frame, state.annotations[idx])
            self._remember_objects(state, idx, frame, labels, priors or {})
            return
        if idx in state.annotations:
            self._set_anchor(state, idx, frame, labels)
        elif self.context_frames > 0:
            state.recent.append((self._image_tensor(frame), resize_labels(labels, self.half_size)))

    def propagate(self, state: VideoState, known: Mapping[int, np.ndarray] | None = None
                  ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(frame_idx, label_map)`` for every frame from the first annotated one to the end.

        Args:
            known: optional frame index -> label map already computed (e.g. written by an earlier run); those
                frames are not predicted again but still feed the context, so a resumed run continues exactly.
                Each is looked up once, when its frame comes: a lazy mapping (reading files on demand) keeps
                memory flat.
        """
        start = state.start
        known = known or {}
        per_object = self.settings.decode == "per_object"
        for idx, _name, frame in state.frames:
            if idx < start:
                continue
            if idx in state.annotations and idx not in state.anchors and not per_object:
                self._set_anchor(state, idx, frame, state.annotations[idx])
            priors = self._priors(state, frame) if per_object else {}
            if idx == start:
                labels = state.annotations[idx]
            elif idx in known:
                labels = known[idx]
            else:
                labels = self.predict_frame(state, frame, priors)
                if idx in state.annotations:  # a later annotation: its objects override the prediction
                    ann = state.annotations[idx]
                    labels = np.where(ann > 0, ann, labels)
            if idx in state.annotations and not per_object:  # joint: the anchor shows every object
                state.annotations[idx] = labels
            self.remember(state, idx, frame, labels, priors)
            yield idx, labels
