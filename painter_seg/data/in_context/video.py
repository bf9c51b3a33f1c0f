"""Video-like training pairs: two frames of one scene a short time apart (issues 15 and 17).

Video propagation prompts the model with earlier frames of the same clip, cropped around the
objects, and asks for the current frame: prompt and query share the camera, the objects and their
ids, and differ by a small motion. The few-shot pairs (two photographs of a class, two independent
crops of one image) never look like that. Two sources:

- :class:`SyntheticClipPairsDataset`: frames ``t`` and ``t + d`` (``d`` up to ``max_gap``) of a
  generated clip (:func:`~painter_seg.data.synthetic.generate_clip`): objects that move, turn,
  occlude each other, over a moving textured background; instance ids.
- :class:`MotionPairsDataset`: one photograph and a motion-like warp of it (a small rotation,
  zoom and shift plus a smooth elastic field), ids from the photo set's masks (connected
  components for binary masks, as the instance pairs).

Both crop the two frames with ONE box and flip (the camera is shared), jitter their colours with one
draw of the recipe's jitter (the light changes little between frames), and randomly swap which
frame is the prompt (propagation runs forwards and backwards in time).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ...codec.canvas import resize_labels
from ...codec.seg_type import SegType
from ...errors import InputError
from ..synthetic import generate_clip
from .augment import _to_float_chw, color_jitter, random_resized_crop_box, resize_u8
from .datasets import _check_index, _half_size, _item_rng, _synthetic_config
from .real import IGNORE, PASCAL_CLASSES, PASCAL_HOLDOUT, RealPairsDataset, pascal_voc_coseg_groups
from .recipe import InContextRecipe, LabeledImage
from .sample import finish_sample


def shared_crop(
    rng: np.random.Generator,
    frames: Sequence[LabeledImage],
    size: tuple[int, int],
    recipe: InContextRecipe,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Frames of one scene cropped with ONE random box and flip, resized to ``size`` and jittered
    with ONE draw of the recipe's colour jitter.

    Returns:
        ``[(float32 [3, h, w] RGB in [0, 1], int [h, w] ids), ...]`` in the order given.
    """
    shape = frames[0][1].shape
    for img, lab in frames:
        if img.shape[:2] != shape or lab.shape != shape:
            raise InputError(f"frames of one pair differ in size: {img.shape[:2]} vs {shape}")
    top, left, h, w = random_resized_crop_box(rng, shape, recipe.scale, recipe.ratio)
    flip = rng.random() < recipe.hflip_p
    state = rng.bit_generator.state
    out = []
    for img, lab in frames:
        im = resize_u8(img[top : top + h, left : left + w], size)
        lb = resize_labels(lab[top : top + h, left : left + w], size)
        if flip:
            im, lb = im[:, ::-1], lb[:, ::-1]
        rng.bit_generator.state = state  # the same jitter factors for every frame
        out.append((color_jitter(rng, _to_float_chw(im), recipe), np.ascontiguousarray(lb)))
    return out


def _swap_finish(
    rng: np.random.Generator,
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    seg_type: int,
    recipe: InContextRecipe,
) -> dict[str, torch.Tensor]:
    if rng.random() < 0.5:
        a, b = b, a
    return finish_sample(rng, a, b, seg_type, recipe)


class SyntheticClipPairsDataset(Dataset):
    """Frames ``t`` and ``t + d`` of a generated clip as a (prompt, query) pair, instance ids.

    Args:
        length: number of items.
        seed: data seed.
        half_size: ``(h, w)`` of one canvas half.
        recipe: augmentation settings (crop scale, flip, jitter, label subsets).
        max_gap: largest frame distance ``d`` (drawn uniformly in ``1..max_gap``).
        num_objects: inclusive range of labelled objects per clip.
        clip_size: ``(h, w)`` the clips are generated at (None = ``half_size``).
        episode_cfg: :class:`~painter_seg.data.synthetic.SyntheticConfig` fields.
    """

    def __init__(
        self,
        length: int,
        seed: int = 0,
        half_size: Sequence[int] = (224, 224),
        recipe: InContextRecipe | Mapping[str, Any] | None = None,
        max_gap: int = 6,
        num_objects: Sequence[int] = (1, 3),
        clip_size: Sequence[int] | None = None,
        episode_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        if length <= 0:
            raise InputError(f"length must be positive, got {length}")
        if max_gap < 1:
            raise InputError(f"max_gap must be >= 1 frame, got {max_gap}")
        lo, hi = (int(v) for v in num_objects)
        if not 1 <= lo <= hi:
            raise InputError(f"num_objects must be a range 1 <= lo <= hi, got {list(num_objects)}")
        self.length = int(length)
        self.seed = int(seed)
        self.half_size = _half_size(half_size)
        self.recipe = InContextRecipe.coerce(recipe)
        self.max_gap = int(max_gap)
        self.num_objects = (lo, hi)
        self.clip_size = _half_size(clip_size) if clip_size else self.half_size
        self.episode_cfg = _synthetic_config(episode_cfg)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = _check_index(index, self.length)
        rng = _item_rng(self.seed, index)
        gap = int(rng.integers(1, self.max_gap + 1))
        n = int(rng.integers(self.num_objects[0], self.num_objects[1] + 1))
        frames, labels = generate_clip(
            int(rng.integers(0, 2**31 - 1)), gap + 1, size=self.clip_size, num_objects=n,
            cfg=self.episode_cfg,
        )
        a, b = shared_crop(
            rng, [(frames[0], labels[0]), (frames[gap], labels[gap])], self.half_size, self.recipe
        )
        return _swap_finish(rng, a, b, int(SegType.INSTANCE), self.recipe)


def motion_warp(
    rng: np.random.Generator,
    img: np.ndarray,
    labels: np.ndarray,
    rotate: float = 10.0,
    zoom: float = 0.1,
    shift: float = 0.08,
    elastic: float = 0.03,
) -> tuple[np.ndarray, np.ndarray]:
    """A motion-like warp of an image and its ids: a random similarity transform (rotation up to
    ``rotate`` degrees, zoom ``1 +- zoom``, shift up to ``shift`` of the size) composed with a
    smooth elastic field (a 4 x 4 grid of displacements up to ``elastic`` of the size, upsampled
    bicubically). The image is resampled bilinearly, the ids by nearest neighbour; borders reflect.
    """
    h, w = labels.shape
    angle = rng.uniform(-rotate, rotate)
    scale = rng.uniform(1 - zoom, 1 + zoom)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += rng.uniform(-shift, shift, 2) * (w, h)
    inv = cv2.invertAffineTransform(m)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    grid = rng.uniform(-elastic, elastic, (2, 4, 4)).astype(np.float32) * np.float32(max(h, w))
    dx = cv2.resize(grid[0], (w, h), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(grid[1], (w, h), interpolation=cv2.INTER_CUBIC)
    xd, yd = xs + dx, ys + dy  # elastic first, then the inverse similarity: where to sample
    map_x = (inv[0, 0] * xd + inv[0, 1] * yd + inv[0, 2]).astype(np.float32)
    map_y = (inv[1, 0] * xd + inv[1, 1] * yd + inv[1, 2]).astype(np.float32)
    out = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    lab = cv2.remap(
        labels.astype(np.int32), map_x, map_y, cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    return out, lab.astype(labels.dtype)


class MotionPairsDataset(RealPairsDataset):
    """A photograph and a motion-like warp of it (:func:`motion_warp`) as a (prompt, query) pair.

    Binary masks become instance ids (connected components, :func:`~.real.instance_ids`); small
    components are ignored in the loss. Args as :class:`~.real.RealPairsDataset` plus the warp's
    ``rotate``, ``zoom``, ``shift`` and ``elastic``.
    """

    def __init__(
        self,
        groups: Mapping[str, Sequence[tuple[str | os.PathLike, str | os.PathLike]]],
        rotate: float = 10.0,
        zoom: float = 0.1,
        shift: float = 0.08,
        elastic: float = 0.03,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("instances", True)
        super().__init__(groups, **kwargs)
        self.warp = {"rotate": rotate, "zoom": zoom, "shift": shift, "elastic": elastic}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = _check_index(index, self.length)
        rng = _item_rng(self.seed, index)
        pairs = self.groups[self.names[int(rng.integers(len(self.names)))]]
        img, lab = self._load(pairs[int(rng.integers(len(pairs)))])
        (a_img, a_lab), = shared_crop(rng, [(img, lab)], self.half_size, self.recipe)
        u8 = np.ascontiguousarray((a_img.transpose(1, 2, 0) * 255.0).round().astype(np.uint8))
        b_u8, b_lab = motion_warp(rng, u8, a_lab, **self.warp)
        b_img = _to_float_chw(b_u8)
        return _swap_finish(rng, (a_img, a_lab), (b_img, b_lab), self.seg_type, self.recipe)


def pascal_motion_pairs_dataset(
    root: str | os.PathLike, holdout: Sequence[str] = PASCAL_HOLDOUT, **kwargs: Any
) -> MotionPairsDataset:
    """:class:`MotionPairsDataset` over the PASCAL VOC co-segmentation photos (``holdout``
    classes left out), objects as instances."""
    unknown = sorted(set(holdout) - set(PASCAL_CLASSES))
    if unknown:
        raise InputError(f"holdout: unknown PASCAL classes {unknown}")
    classes = [c for c in PASCAL_CLASSES if c not in set(holdout)]
    return MotionPairsDataset(pascal_voc_coseg_groups(root, classes), mask_mode="binary", **kwargs)


__all__ = [
    "IGNORE",
    "MotionPairsDataset",
    "SyntheticClipPairsDataset",
    "motion_warp",
    "pascal_motion_pairs_dataset",
    "shared_crop",
]
