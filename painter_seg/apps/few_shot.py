"""Few-shot segmentation from example pairs: a SAM-style predictor over an in-context strategy.

    seg = FewShotSegmenter(build_model("default"), strategy="feature_ensemble")
    seg.set_prompts([img_a, img_b], [mask_a, mask_b])        # numpy / PIL in
    out = seg.predict(query)                                 # numpy out
    out.labels   # [H, W] int64, the prompt masks' ids, at the query's size
    seg.predict(small, output_size=(H, W))  # decoded at (H, W), e.g. a file downscaled on load
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..codec.assign import AssignSettings, RegionPrototypes, assign_regions, prompt_prototypes
from ..codec.canvas import images_to_tensor, labels_to_tensor, paint_to_labels, resize_labels
from ..codec.palette import PALETTES, labels_to_compact, make_palette
from ..codec.refine import GuidedRefine, resolve_refine
from ..codec.seg_type import SegType
from ..errors import InputError
from ..model import SegGPT
from ..strategies import InContextStrategy, build_strategy
from ..tuning.artifact import TunedPrompt
from ..utils.runtime import PRECISIONS, maybe_compile
from .prompts import box_to_mask, scribble_to_mask


@dataclass
class Prediction:
    """Result for one query image.

    Attributes:
        labels: ``[H, W]`` int64 label map at the query's size (or the ``output_size`` asked
            for); ids as in the prompt masks, 0 = background.
        paint: ``[H, W, 3]`` uint8 RGB: the model's raw painted mask, resized to that size.
        scores: ``[H, W]`` float32 in [0, 1]: confidence of the label chosen at each pixel.
        colors: ``{id: (r, g, b)}`` the colour each id was painted with.
    """

    labels: np.ndarray
    paint: np.ndarray
    scores: np.ndarray
    colors: dict[int, tuple[int, int, int]]

    def areas(self) -> dict[int, int]:
        """Pixel count per foreground id found."""
        ids, counts = np.unique(self.labels[self.labels > 0], return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts)}

    def mean_scores(self) -> dict[int, float]:
        """Mean confidence per foreground id found."""
        return {i: float(self.scores[self.labels == i].mean()) for i in self.areas()}


def _as_rgb(image) -> np.ndarray:
    arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"image must be [H, W, 3] RGB, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = np.clip(arr if arr.max() > 1 else arr * 255, 0, 255).astype(np.uint8)
    return arr


def _as_labels(mask) -> np.ndarray:
    """Label map from a 2-D id/bool array, or a colour mask (distinct colours -> ids 1..K,
    black = 0)."""
    arr = np.asarray(mask)
    if arr.ndim == 3:
        if np.all(arr[..., :1] == arr[..., :3]):
            arr = arr[..., 0]
        else:
            colors, inv = np.unique(arr[..., :3].reshape(-1, 3), axis=0, return_inverse=True)
            ids = np.cumsum(np.any(colors != 0, axis=1)) * np.any(colors != 0, axis=1)
            return ids[inv.reshape(-1)].reshape(arr.shape[:2]).astype(np.int64)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    arr = arr.astype(np.int64)
    if arr.max(initial=0) == 255 and np.isin(arr, (0, 255)).all():  # 0/255 binary mask
        arr = arr // 255
    return arr


def _check_size(size) -> tuple[int, int]:
    if len(size) != 2 or any(int(v) != v or v < 1 for v in size):
        raise InputError(f"output_size={tuple(size)}: expected (H, W), two integers >= 1")
    return int(size[0]), int(size[1])


class FewShotSegmenter:
    """Segment query images like the given example pairs.

    Args:
        model: a :class:`SegGPT` (e.g. ``build_model("default")``), shared, never modified.
        strategy: ``plain`` (1 prompt), ``spatial_ensemble``, ``feature_ensemble``, ``tuned`` (a
            learned prompt, see :meth:`set_tuned_prompt`), or a strategy object.
        seg_type: ``"semantic"`` (same-class regions) or ``"instance"`` (the same object instances).
        precision: ``fp32`` | ``bf16`` | ``fp16`` autocast for the forward.
        bg_threshold: foreground pixels whose colour-match score is below this become background.
        resize_mode: how the painted half is resized back to the query size before decoding
            (``bilinear``: smooth edges; ``nearest``: the official behaviour).
        resize_masks: resize a prompt mask whose size differs from its image (else it is an error).
        compile: run the model through ``torch.compile`` (the first prediction compiles; if
            compiling fails, e.g. no C++ compiler for the CPU backend, a one-line warning is logged
            and it runs eager).
        refine: ``auto`` (default: the edge-aware refinement of :mod:`painter_seg.codec.refine` for models
            with a coarse patch grid, such as the shipped one; none for ViT-L, whose decode is the
            reference's), ``guided``, ``none``, or :class:`~painter_seg.codec.GuidedRefine` settings.
        palette: the colours prompt masks are painted in: ``auto`` (default: the model's own, ``model.palette``
            from its config: ``distinct`` for the shipped model, the reference's ``seggpt`` for ViT-L) or a key
            of :data:`~painter_seg.codec.palette.PALETTES`.
        assign: with two or more prompt classes, give each painted region one class from its colours and its
            outline (:mod:`painter_seg.codec.assign`; semantic prompts only): ``auto`` (default: when the model
            has a region matcher, as the shipped one does), ``none``, or
            :class:`~painter_seg.codec.assign.AssignSettings`.
    """

    def __init__(
        self,
        model: SegGPT,
        strategy: str | InContextStrategy = "plain",
        seg_type: str | int = "semantic",
        precision: str = "fp32",
        bg_threshold: float = 0.0,
        resize_mode: str = "bilinear",
        resize_masks: bool = False,
        compile: bool = False,
        refine: str | GuidedRefine | None = "auto",
        palette: str = "auto",
        assign: str | AssignSettings = "auto",
    ) -> None:
        self.model = model
        runner = maybe_compile(model, compile)  # the model itself when compile is False
        if isinstance(strategy, str):
            self.strategy = build_strategy(strategy, runner)
        else:
            self.strategy = strategy
            if compile:
                self.strategy.model = runner
        self.seg_type = SegType.parse(seg_type)
        if precision not in PRECISIONS:
            raise InputError(f"precision={precision}: expected one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.compile = compile
        if not 0.0 <= float(bg_threshold) < 1.0:
            raise InputError(f"bg_threshold={bg_threshold}: expected a score in [0, 1)")
        if resize_mode not in ("bilinear", "nearest"):
            raise InputError(f"resize_mode={resize_mode}: expected bilinear or nearest")
        self.bg_threshold = float(bg_threshold)
        self.resize_mode = resize_mode
        self.resize_masks = resize_masks
        self.grid = model.half_grid
        self.refine = resolve_refine(refine, self.grid)
        self.palette_name = getattr(model, "palette", "seggpt") if palette == "auto" else palette
        if self.palette_name not in PALETTES:
            raise InputError(f"palette={palette}: expected auto or one of {', '.join(PALETTES)}")
        matcher = getattr(model, "matcher", None)
        if isinstance(assign, AssignSettings):
            self.assign = assign
        elif assign in ("auto", "none"):
            self.assign = AssignSettings() if assign == "auto" and matcher is not None else None
        else:
            raise InputError(f"assign={assign}: expected auto, none or AssignSettings")
        if self.assign is not None and matcher is None:
            raise InputError(f"assign: the model {getattr(model, 'config_name', '')!r} has no region matcher")
        self.reset()

    # ------------------------------------------------------------------ prompts
    def reset(self) -> None:
        """Forget the prompts."""
        self.strategy.reset()
        self.ids: np.ndarray | None = None  # original id of compact label k at ids[k - 1]
        self.palette: np.ndarray | None = None  # [C + 1, 3] colours of compact labels
        self.prototypes: RegionPrototypes | None = None  # what the prompts say per class (region assignment)

    @property
    def is_prompt_set(self) -> bool:
        return self.ids is not None

    @property
    def colors(self) -> dict[int, tuple[int, int, int]]:
        """Colour of each prompt id (as painted)."""
        if self.ids is None or self.palette is None:
            return {}
        return {int(i): tuple(int(c) for c in self.palette[k + 1]) for k, i in enumerate(self.ids)}

    def set_prompts(
        self,
        images: Sequence,
        masks: Sequence | None = None,
        *,
        boxes: Sequence[Sequence[float]] | None = None,
        scribbles: Sequence | None = None,
        names: Sequence[str] | None = None,
        seg_type: str | int | None = None,
    ) -> None:
        """Give K example pairs.

        Args:
            images: K prompt images, ``[H, W, 3]`` uint8 RGB arrays or PIL images (any sizes).
            masks: K masks at their image's size: ``[H, W]`` id maps (0 = background; several
                ids = several classes or instances, segmented in one pass), bool / 0-1 / 0-255
                maps, or ``[H, W, 3]`` colour masks (distinct colours -> ids). Exactly one of
                masks, boxes, scribbles.
            boxes: K boxes ``(x0, y0, x1, y1)``; each becomes a one-object mask (GrabCut inside
                the box).
            scribbles: K stroke maps (``[H, W]``, nonzero = strokes of that id), grown into masks.
            names: optional K names used in error messages (e.g. file names).
            seg_type: ``semantic`` / ``instance`` for these prompts (default: the segmenter's).
        """
        if seg_type is not None:
            self.seg_type = SegType.parse(seg_type)
        imgs, labels = self._read_pairs(images, masks, boxes, scribbles, names)
        all_ids = np.unique(np.concatenate([np.unique(lab) for lab in labels]))
        self.ids = all_ids[all_ids > 0]
        self.palette = make_palette(self.palette_name, len(self.ids))
        self.strategy.set_prompts(*self._encode(imgs, labels), self.seg_type)
        self.prototypes = self._prototypes(imgs, labels)

    def set_tuned_prompt(
        self,
        prompt: TunedPrompt,
        images: Sequence = (),
        masks: Sequence | None = None,
        *,
        names: Sequence[str] | None = None,
        check: bool = True,
    ) -> None:
        """Use a tuned prompt, optionally with K real example pairs (the prompt comes first).

        The classes, their ids and colours and ``seg_type`` come from ``prompt``: predictions carry
        the ids the classes had when the prompt was tuned. Real pairs (``images``/``masks`` as in
        :meth:`set_prompts`) may only use those ids. The ``tuned`` strategy runs the prompt alone
        like an example pair and with real pairs in a feature ensemble; other strategies arrange
        the 1 + K prompts their own way. ``check=False`` skips verifying that the prompt belongs to
        the model (its weights fingerprint).

        Raises:
            InputError: a prompt tuned for another model, or masks with other ids.
        """
        if check:
            prompt.check(self.model)
        ids = np.asarray(prompt.class_ids, dtype=np.int64)
        imgs, labels = (self._read_pairs(images, masks, None, None, names) if len(images)
                        else ([], []))
        for lab, name in zip(labels, names or [f"prompt {i}" for i in range(len(labels))]):
            extra = np.setdiff1d(np.unique(lab[lab > 0]), ids)
            if extra.size:
                raise InputError(f"{name}: mask ids {extra.tolist()} are not classes of the tuned "
                                 f"prompt (ids {ids.tolist()})")
        self.seg_type = SegType.parse(prompt.seg_type)
        self.ids, self.palette = ids, np.asarray(prompt.palette, dtype=np.uint8)
        p_imgs, p_masks = self._encode(imgs, labels) if imgs else (None, None)
        self.strategy.set_prompts(p_imgs, p_masks, tuned=prompt)
        # a tuned prompt alone is decoded by its colours: reading outlines off the learned pair cost 2.3 points on the
        # generated 2-class scene (docs/prompt_tuning "Region matcher"); real pairs given with it feed the matcher
        self.prototypes = self._prototypes(imgs, labels) if imgs else None

    def _read_pairs(self, images, masks, boxes, scribbles, names
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """RGB images and checked ``[H, W]`` label maps of K prompt pairs (from one of masks,
        boxes, scribbles)."""
        given = [x is not None for x in (masks, boxes, scribbles)]
        if sum(given) != 1:
            raise InputError("give exactly one of masks, boxes or scribbles for the prompts")
        imgs = [_as_rgb(im) for im in images]
        names = list(names) if names is not None else [f"prompt {i}" for i in range(len(imgs))]
        other = masks if masks is not None else boxes if boxes is not None else scribbles
        if len(other) != len(imgs):
            raise InputError(f"{len(imgs)} prompt images but {len(other)} masks/boxes/scribbles")
        if not imgs:
            raise InputError("no prompt images given")
        labels = []
        for k, (img, name) in enumerate(zip(imgs, names)):
            if boxes is not None:
                lab = box_to_mask(img, boxes[k]).astype(np.int64)
            elif scribbles is not None:
                lab = scribble_to_mask(img, _as_labels(scribbles[k]))
            else:
                lab = _as_labels(masks[k])
            if lab.shape != img.shape[:2]:
                if not self.resize_masks:
                    raise InputError(
                        f"{name}: mask is {lab.shape[1]}x{lab.shape[0]} but its image is "
                        f"{img.shape[1]}x{img.shape[0]} (set resize_masks to resize it)")
                lab = resize_labels(lab, img.shape[:2])
            if lab.min() < 0 or lab.max() > 255:
                raise InputError(f"{name}: mask ids must be in 0..255, got "
                                 f"{lab.min()}..{lab.max()}")
            if not lab.any():
                raise InputError(f"{name}: prompt mask is empty (no foreground pixels)")
            labels.append(lab)
        return imgs, labels

    def _encode(self, imgs: list[np.ndarray], labels: list[np.ndarray]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt halves ``[K, 3, h, w]`` (normalised): images, and masks painted in
        ``self.palette`` (id ``self.ids[k - 1]`` -> colour k)."""
        assert self.ids is not None and self.palette is not None
        size = self.strategy.half_size
        compact = [labels_to_compact(lab, self.ids) for lab in labels]
        return images_to_tensor(imgs, size), labels_to_tensor(compact, self.palette, size)

    def _prototypes(self, imgs: list[np.ndarray], labels: list[np.ndarray]) -> RegionPrototypes | None:
        """The prompt classes' outlines for region assignment (None when it is off or there is one class)."""
        assert self.ids is not None
        if self.assign is None or len(self.ids) < 2 or self.seg_type is not SegType.SEMANTIC:
            return None  # instances: which is which is the painting's call (painter_seg.codec.assign)
        h, w = self.strategy.half_size
        small = [cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in imgs]
        compact = [resize_labels(labels_to_compact(lab, self.ids), (h, w)) for lab in labels]
        return prompt_prototypes(self.model.matcher, small, compact, len(self.ids), self.assign.min_pixels,
                                 self.assign.turns)

    # ------------------------------------------------------------------ prediction
    def predict_batch(self, images: Sequence, batch_size: int = 4,
                      output_sizes: Sequence[tuple[int, int] | None] | None = None
                      ) -> list[Prediction]:
        """Segment several query images (``[H, W, 3]`` uint8 RGB or PIL); one :class:`Prediction`
        each.

        Args:
            images: the queries, any sizes.
            batch_size: queries per forward.
            output_sizes: per image, the ``(H, W)`` its paint is resized to before decoding (e.g.
                the size of a file the query was downscaled from on load), or None for the
                image's own size (the default for all).
        """
        if not self.is_prompt_set:
            raise RuntimeError("FewShotSegmenter: call set_prompts(...) before predict")
        imgs = [_as_rgb(im) for im in images]
        sizes = list(output_sizes) if output_sizes is not None else [None] * len(imgs)
        if len(sizes) != len(imgs):
            raise InputError(f"{len(sizes)} output sizes for {len(imgs)} images")
        sizes = [im.shape[:2] if size is None else _check_size(size)
                 for im, size in zip(imgs, sizes)]
        paints = self.strategy.paint(imgs, self.precision, batch_size)
        return [self._decode(paint, size, im) for paint, size, im in zip(paints, sizes, imgs)]

    def predict(self, image, output_size: tuple[int, int] | None = None) -> Prediction:
        """Segment one query image; its paint is decoded at ``output_size`` ``(H, W)`` (default:
        the image's own size). See :meth:`predict_batch`."""
        return self.predict_batch([image], output_sizes=[output_size])[0]

    def _decode(self, paint: np.ndarray, size: tuple[int, int], image: np.ndarray) -> Prediction:
        """The painted half ``[h, w, 3]`` resized to ``size`` and decoded
        (:func:`~painter_seg.codec.paint_to_labels`; refined along ``image``'s edges if ``self.refine``)."""
        assert self.palette is not None and self.ids is not None
        labels, resized, scores = paint_to_labels(paint, self.palette, self.ids, size,
                                                  self.resize_mode, self.bg_threshold, image=image,
                                                  refine=self.refine, grid=self.grid)
        if self.prototypes is not None and self.assign is not None:
            labels = assign_regions(labels, paint, self.palette, self.ids, image, self.model.matcher,
                                    self.prototypes, self.assign)
        return Prediction(labels=labels, paint=np.clip(resized + 0.5, 0, 255).astype(np.uint8),
                          scores=scores, colors=self.colors)
