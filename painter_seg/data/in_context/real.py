"""Training samples from the real photo sets of ``../shared/data_train`` (read in place, never copied).

Three sets, each read in its own source layout (see that folder's README):

* PASCAL VOC co-segmentation groups (:func:`pascal_voc_coseg_dataset`): 19 classes, binary masks
  (RGB PNG, ``R > 127`` = object). Same-class pairs (semantic), or two augmented views of one image
  whose objects are told apart by connected components (instance, ``instances=True``). Whole classes
  are held out (``holdout``, default :data:`PASCAL_HOLDOUT`): ``split="train"`` never lists them,
  ``split="holdout"`` lists only them (real-image validation during training).
* Weizmann horses (:func:`weizmann_horses_dataset`): one class; colour images resized to their grey
  JPEG masks (``> 127`` = horse); ``horse318`` (misaligned) skipped.
* CIHP human parts (:func:`cihp_parts_dataset`): 5 images, ids 0..19 (multi-class pairs).

Decoded images are downscaled once to at most ``cache_side`` px (JPEG draft decoding) and kept in a
per-process cache: a 128 x 128 half never needs more, and a worker then decodes each file once.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ...codec.canvas import resize_labels
from ...codec.seg_type import SegType
from ...errors import InputError
from .augment import resize_u8
from .datasets import FolderInContextDataset
from .recipe import InContextRecipe, LabeledImage

__all__ = [
    "CIHP_PARTS",
    "PASCAL_CLASSES",
    "PASCAL_HOLDOUT",
    "RealPairsDataset",
    "cihp_parts_dataset",
    "pascal_voc_coseg_dataset",
    "pascal_voc_coseg_groups",
    "weizmann_horses_dataset",
]

PASCAL_CLASSES = (
    "Aero", "Bicycle", "Bird", "Boat", "Bottle", "Bus", "Car", "Cat", "Chair", "Dog", "Horse",
    "Mbike", "Monitor", "Person", "Plant", "Sheep", "Sofa", "Table", "Train",
)
#: The three whole PASCAL classes never trained on (an animal, a vehicle, an object).
PASCAL_HOLDOUT = ("Bus", "Monitor", "Sheep")
CIHP_PARTS = (
    "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks",
    "pants", "torso-skin", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg",
    "right-leg", "left-shoe", "right-shoe",
)
IGNORE = 255  # id of connected components too small to be instances (valid = 0)


def _read_rgb(path: Path, max_side: int | None) -> np.ndarray:
    """uint8 ``[H, W, 3]``; JPEGs decoded at a reduced scale when ``max_side`` allows."""
    with Image.open(path) as im:
        if max_side and im.format == "JPEG":
            im.draft("RGB", (max_side, max_side))
        return np.asarray(im.convert("RGB"))


def _read_mask(path: Path, mode: str) -> np.ndarray:
    """uint8 ``[H, W]`` ids: ``binary`` (first channel > 127 -> 1) or ``ids`` (stored values)."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    if mode == "binary":
        first = arr[..., 0] if arr.ndim == 3 else arr
        return (first > 127).astype(np.uint8)
    if mode == "ids":
        return (arr[..., 0] if arr.ndim == 3 else arr).astype(np.uint8)
    raise ValueError(f"mask mode must be 'binary' or 'ids', got {mode!r}")


def instance_ids(fg: np.ndarray, min_frac: float = 0.002, max_instances: int = 12) -> np.ndarray:
    """Instance ids of a binary mask from its 8-connected components.

    Args:
        fg: ``[H, W]`` bool / 0-1 foreground.
        min_frac: components smaller than this share of the image become :data:`IGNORE`.
        max_instances: only the largest ones get ids ``1..max_instances``; the rest :data:`IGNORE`.

    Returns:
        uint8 ``[H, W]``: 0 background, 1.. instances by decreasing area, :data:`IGNORE` elsewhere.
    """
    n, comp, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    out = np.zeros(fg.shape, dtype=np.uint8)
    if n <= 1:
        return out
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(-areas, kind="stable") + 1
    lut = np.full(n, IGNORE, dtype=np.uint8)
    lut[0] = 0
    min_area = min_frac * fg.size
    for rank, c in enumerate(order):
        if rank < max_instances and stats[c, cv2.CC_STAT_AREA] >= min_area:
            lut[c] = rank + 1
    return lut[comp]


class RealPairsDataset(FolderInContextDataset):
    """:class:`FolderInContextDataset` over files in their source conventions, with a decode cache.

    Args:
        groups: ``{name: [(image_path, mask_path), ...]}``.
        mask_mode: ``binary`` (threshold at 127) or ``ids`` (label values as stored).
        instances: binary masks become instance ids (:func:`instance_ids`); samples are two views
            of one image (instance seg_type; no mix-context or tiles: ids do not match across
            images).
        cache_side: longest side images and masks are kept at (None = full size).
        **kwargs: :class:`FolderInContextDataset` arguments (``length``, ``seed``, ``half_size``,
            ``recipe``, ``seg_type``).
    """

    def __init__(
        self,
        groups: Mapping[str, Sequence[tuple[str | os.PathLike, str | os.PathLike]]],
        mask_mode: str = "binary",
        instances: bool = False,
        cache_side: int | None = 256,
        **kwargs: Any,
    ) -> None:
        if mask_mode not in ("binary", "ids"):
            raise InputError(f"mask_mode must be 'binary' or 'ids', got {mask_mode!r}")
        if instances:
            kwargs["recipe"] = dataclasses.replace(
                InContextRecipe.coerce(kwargs.get("recipe")), same_image_p=1.0, mix_context_p=0.0, tile_prompts_p=0.0,
                ignore_index=IGNORE,
            )
            kwargs["seg_type"] = SegType.INSTANCE
        super().__init__(groups, max_side=cache_side, **kwargs)
        self.mask_mode = mask_mode
        self.instances = instances
        self._cache: dict[tuple[Path, Path], LabeledImage] = {}

    def _load(self, pair: tuple[Path, Path]) -> LabeledImage:
        hit = self._cache.get(pair)
        if hit is not None:
            return hit
        lab = _read_mask(pair[1], self.mask_mode)
        img = _read_rgb(pair[0], self.max_side)
        side = max(lab.shape)
        if self.max_side and side > self.max_side:
            s = self.max_side / side
            size = (max(1, round(lab.shape[0] * s)), max(1, round(lab.shape[1] * s)))
            lab = resize_labels(lab, size)
        if img.shape[:2] != lab.shape:  # draft-decoded, or another size (Weizmann rgb/)
            img = resize_u8(img, lab.shape)
        if self.instances:
            lab = instance_ids(lab > 0)
        self._cache[pair] = (img, lab)
        return img, lab


def pascal_voc_coseg_groups(
    root: str | os.PathLike, classes: Sequence[str] | None = None
) -> dict[str, list[tuple[Path, Path]]]:
    """``{class: [(Pascal_10/<C>/img_N.jpg, eval_pascal_10/<C>/img_N.png), ...]}`` (sorted)."""
    root = Path(root).expanduser()
    img_root, mask_root = root / "Pascal_10", root / "eval_pascal_10"
    if not img_root.is_dir() or not mask_root.is_dir():
        raise InputError(f"{root}: expected Pascal_10/<Class>/ and eval_pascal_10/<Class>/")
    names = sorted(d.name for d in img_root.iterdir() if d.is_dir()) if classes is None else classes
    groups = {}
    for name in names:
        pairs = [
            (img, mask_root / name / f"{img.stem}.png")
            for img in sorted((img_root / name).glob("*.jpg"))
            if (mask_root / name / f"{img.stem}.png").is_file()
        ]
        if not pairs:
            raise InputError(f"{img_root / name}: no image with a mask")
        groups[name] = pairs
    return groups


def pascal_voc_coseg_dataset(
    root: str | os.PathLike,
    split: str = "train",
    holdout: Sequence[str] = PASCAL_HOLDOUT,
    instances: bool = False,
    **kwargs: Any,
) -> RealPairsDataset:
    """PASCAL VOC co-segmentation pairs; ``split`` ``train`` (all classes but ``holdout``) or
    ``holdout`` (only those). Same-class pairs, or with ``instances`` two views of one image."""
    unknown = sorted(set(holdout) - set(PASCAL_CLASSES))
    if unknown:
        raise InputError(f"holdout: unknown PASCAL classes {unknown}")
    if split == "train":
        classes = [c for c in PASCAL_CLASSES if c not in set(holdout)]
    elif split == "holdout":
        classes = list(holdout)
    else:
        raise InputError(f"split must be 'train' or 'holdout', got {split!r}")
    groups = pascal_voc_coseg_groups(root, classes)
    return RealPairsDataset(groups, mask_mode="binary", instances=instances, **kwargs)


def weizmann_horses_dataset(root: str | os.PathLike, **kwargs: Any) -> RealPairsDataset:
    """Weizmann horses: ``rgb/horseNNN.jpg`` (resized to the mask) + ``figure_ground/`` masks."""
    root = Path(root).expanduser()
    base = root / "weizmann_horse_db" if (root / "weizmann_horse_db").is_dir() else root
    pairs = [
        (img, base / "figure_ground" / img.name)
        for img in sorted((base / "rgb").glob("horse*.jpg"))
        if img.stem != "horse318" and (base / "figure_ground" / img.name).is_file()
    ]
    if not pairs:
        raise InputError(f"{root}: expected weizmann_horse_db/rgb/ and figure_ground/ images")
    return RealPairsDataset({"horse": pairs}, mask_mode="binary", **kwargs)


def cihp_parts_dataset(root: str | os.PathLike, **kwargs: Any) -> RealPairsDataset:
    """CIHP human parts: ``datasets/CIHP/images/X.jpg`` + ``labels/X.png`` (ids 0..19), one group:
    multi-class pairs between different people (semantic)."""
    root = Path(root).expanduser()
    base = root / "datasets" / "CIHP" if (root / "datasets" / "CIHP").is_dir() else root
    pairs = [
        (img, base / "labels" / f"{img.stem}.png")
        for img in sorted((base / "images").glob("*.jpg"))
        if (base / "labels" / f"{img.stem}.png").is_file()
    ]
    if not pairs:
        raise InputError(f"{root}: expected datasets/CIHP/images/ and labels/")
    return RealPairsDataset({"cihp": pairs}, mask_mode="ids", **kwargs)
