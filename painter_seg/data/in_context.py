"""Training samples for in-context segmentation: (prompt, query) pairs made into SegGPT canvases.

A sample is two views that share a context (the same class, the same object, or two augmented views
of one image), stacked prompt over query. The recipe follows the SegGPT paper (seggpt_facts §4.1,
§4.3) and Painter's data pipeline:

1. **Paired augmentation.** Each (image, label map) gets one random resized crop and horizontal
   flip, applied identically to the image and to its labels (bicubic for images, nearest for
   labels); colour jitter touches the image only.
2. **Mix-context** (probability ``mix_context_p``). Each half is instead a grid of 2-4 augmented
   views of the same context (all painted with one colour mapping), randomly cropped and resized
   back to the half size.
3. **Random colouring.** The ids found in the pair are mapped to random, well separated colours
   (:func:`~painter_seg.codec.palette.random_palette`, id 0 = black), one mapping for prompt *and*
   query: "same colour = same class / instance". Optionally only a random subset of the ids is kept
   (the others become background), the paper's "random subset of categories / instances".
4. **Canvas.** Images and colour masks are ImageNet-normalised and stacked prompt over query, with a
   ``valid`` map that is 0 on ignored pixels.

Every sample is a pure function of ``(seed, index)``: workers, epochs and resumption do not change
it.
Datasets return ``{"imgs": [3, 2h, w], "tgts": [3, 2h, w], "valid": [1, 2h, w], "seg_type": int64}``
(float32, ImageNet-normalised; ``seg_type`` 0 = semantic, 1 = instance).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..codec.canvas import IMAGENET_MEAN, IMAGENET_STD, resize_labels
from ..codec.palette import random_palette
from ..errors import InputError
from .synthetic import SyntheticConfig, generate_episode

__all__ = [
    "FolderInContextDataset",
    "InContextRecipe",
    "MixedInContextDataset",
    "SyntheticInContextDataset",
    "augment_view",
    "build_train_dataset",
    "color_jitter",
    "colorize_pair",
    "folder_in_context_dataset",
    "make_canvas",
    "make_sample",
    "mix_context_view",
    "random_resized_crop_box",
]

LabeledImage = tuple[np.ndarray, np.ndarray]  # (uint8 [H, W, 3] RGB, int [H, W] ids)

_MEAN32 = np.array(IMAGENET_MEAN, dtype=np.float32)
_INV_STD32 = (1.0 / np.array(IMAGENET_STD, dtype=np.float64)).astype(np.float32)


@dataclass
class InContextRecipe:
    """Knobs of the sample recipe (defaults: paper / Painter where known, else conservative).

    Attributes:
        scale: area fraction range of the random resized crop.
        ratio: aspect-ratio range (w / h) of the crop.
        hflip_p: probability of a horizontal flip (image and labels together).
        jitter_p: probability of colour jitter on each image.
        brightness / contrast / saturation: jitter strengths (factors drawn in ``[1 - s, 1 + s]``).
        mix_context_p: probability that a sample is a mix-context one.
        mix_context_n: range (inclusive) of views stitched per half in a mix-context sample.
        mix_crop_scale: area fraction range of the crop taken from a mix-context grid.
        same_image_p: probability that the prompt is another augmented view of the query image
            (always the case when the context has a single pair).
        label_subset_p: probability of keeping only a random non-empty subset of the ids.
        min_color_dist: wanted distance between random colours (0..255 per channel).
        ignore_index: label id whose pixels get ``valid = 0`` and are painted black (None = none).
    """

    scale: tuple[float, float] = (0.3, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    mix_context_p: float = 0.1
    mix_context_n: tuple[int, int] = (2, 4)
    mix_crop_scale: tuple[float, float] = (0.5, 1.0)
    same_image_p: float = 0.1
    label_subset_p: float = 0.2
    min_color_dist: float = 60.0
    ignore_index: int | None = None

    @classmethod
    def from_dict(
        cls, cfg: Mapping[str, Any] | None, base: InContextRecipe | None = None
    ) -> InContextRecipe:
        """A recipe from a (possibly partial) mapping on top of ``base`` (default: the defaults)."""
        base = base or cls()
        if not cfg:
            return base
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise InputError(f"unknown recipe keys {unknown}; known: {', '.join(sorted(names))}")
        vals = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in dict(cfg).items()}
        return dataclasses.replace(base, **vals)


# ------------------------------------------------------------------------------------ augmentation
def random_resized_crop_box(
    rng: np.random.Generator,
    shape: Sequence[int],
    scale: Sequence[float],
    ratio: Sequence[float],
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` with an explicit generator.

    Args:
        rng: random generator.
        shape: ``(H, W)`` of the source.
        scale: area fraction range; ratio: aspect (w / h) range, drawn log-uniformly.

    Returns:
        ``(top, left, h, w)`` of the crop (falls back to a centre crop after 10 tries).
    """
    height, width = int(shape[0]), int(shape[1])
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _resize_u8(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bicubic resize of a uint8 ``[H, W, 3]`` image, kept uint8 HWC."""
    return np.asarray(
        Image.fromarray(np.ascontiguousarray(img)).resize((size[1], size[0]), Image.BICUBIC)
    )


def _to_float_chw(img: np.ndarray) -> np.ndarray:
    """uint8 ``[h, w, 3]`` -> float32 ``[3, h, w]`` in [0, 1]."""
    out = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
    out *= np.float32(1.0 / 255.0)
    return out


def _crop_flip_resize(
    rng: np.random.Generator,
    img: np.ndarray,
    labels: np.ndarray,
    size: tuple[int, int],
    scale: Sequence[float],
    ratio: Sequence[float],
    hflip_p: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One random resized crop + flip, identical for the image (bicubic) and its labels (nearest).

    Returns:
        ``(uint8 [h, w, 3], int [h, w])``.
    """
    if img.shape[:2] != labels.shape:
        raise InputError(f"image {img.shape[:2]} and mask {labels.shape} sizes differ")
    top, left, h, w = random_resized_crop_box(rng, labels.shape, scale, ratio)
    flip = rng.random() < hflip_p
    out = _resize_u8(img[top : top + h, left : left + w], size)
    lab = resize_labels(labels[top : top + h, left : left + w], size)
    if flip:
        out, lab = out[:, ::-1], lab[:, ::-1]
    return out, lab


def _grey(img: np.ndarray) -> np.ndarray:
    return img[0] * np.float32(0.299) + img[1] * np.float32(0.587) + img[2] * np.float32(0.114)


def color_jitter(rng: np.random.Generator, img: np.ndarray, recipe: InContextRecipe) -> np.ndarray:
    """Brightness, contrast and saturation jitter, in random order, of an RGB image.

    Applied with probability ``recipe.jitter_p``; each factor is drawn from ``[1 - s, 1 + s]``.

    Args:
        rng: random generator.
        img: float32 ``[3, h, w]`` RGB in [0, 1] (modified in place and returned).
        recipe: jitter strengths.

    Returns:
        The jittered image, float32 ``[3, h, w]`` clipped to [0, 1].
    """
    if rng.random() >= recipe.jitter_p:
        return img
    factors = [
        np.float32(rng.uniform(max(0.0, 1 - s), 1 + s))
        for s in (recipe.brightness, recipe.contrast, recipe.saturation)
    ]
    for op in rng.permutation(3):
        f = factors[op]
        if op == 0:  # brightness
            img *= f
        elif op == 1:  # contrast: blend with the mean grey level
            mean = np.float32(_grey(img).mean())
            img *= f
            img += mean * (1 - f)
        else:  # saturation: blend with the grey image
            grey = _grey(img)[None]
            img *= f
            img += grey * (1 - f)
        np.clip(img, 0.0, 1.0, out=img)
    return img


def augment_view(
    rng: np.random.Generator, pair: LabeledImage, size: tuple[int, int], recipe: InContextRecipe
) -> tuple[np.ndarray, np.ndarray]:
    """One augmented view of an (image, labels) pair at ``size``: crop, flip, resize, jitter.

    Args:
        rng: random generator.
        pair: uint8 ``[H, W, 3]`` RGB image and ``[H, W]`` integer ids of the same size.
        size: ``(h, w)`` wanted.
        recipe: augmentation settings.

    Returns:
        ``(float32 [3, h, w] RGB in [0, 1], int [h, w] ids)``.
    """
    img, lab = _crop_flip_resize(
        rng, pair[0], pair[1], size, recipe.scale, recipe.ratio, recipe.hflip_p
    )
    return color_jitter(rng, _to_float_chw(img), recipe), lab


def _grid_shape(rng: np.random.Generator, n: int) -> tuple[int, int]:
    if n == 4:
        return 2, 2
    return (1, n) if rng.random() < 0.5 else (n, 1)


def mix_context_view(
    rng: np.random.Generator,
    pairs: Sequence[LabeledImage],
    size: tuple[int, int],
    recipe: InContextRecipe,
) -> tuple[np.ndarray, np.ndarray]:
    """A mix-context half: 2-4 augmented views stitched in a grid, randomly cropped and resized.

    Each view is cropped/flipped/resized to ``size`` and placed in a ``1 x n``, ``n x 1`` or
    ``2 x 2`` grid; a random crop of ``recipe.mix_crop_scale`` of the grid's area (aspect between
    the grid's and the half's) is resized back to ``size`` and jittered.

    Returns:
        ``(float32 [3, h, w] in [0, 1], int [h, w])`` like :func:`augment_view`.
    """
    n = len(pairs)
    if not 2 <= n <= 4:
        raise ValueError(f"mix-context stitches 2..4 views, got {n}")
    rows, cols = _grid_shape(rng, n)
    h, w = size
    cells = [
        _crop_flip_resize(rng, p[0], p[1], size, recipe.scale, recipe.ratio, recipe.hflip_p)
        for p in pairs
    ]
    grid_img = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    grid_lab = np.zeros((rows * h, cols * w), dtype=cells[0][1].dtype)
    for k, (ci, cl) in enumerate(cells):
        r, c = divmod(k, cols)
        grid_img[r * h : (r + 1) * h, c * w : (c + 1) * w] = ci
        grid_lab[r * h : (r + 1) * h, c * w : (c + 1) * w] = cl
    a_half, a_grid = w / h, cols * w / (rows * h)
    ratio = (min(a_half, a_grid) * recipe.ratio[0], max(a_half, a_grid) * recipe.ratio[1])
    top, left, ch, cw = random_resized_crop_box(rng, grid_lab.shape, recipe.mix_crop_scale, ratio)
    img = _to_float_chw(_resize_u8(grid_img[top : top + ch, left : left + cw], size))
    lab = resize_labels(grid_lab[top : top + ch, left : left + cw], size)
    return color_jitter(rng, img, recipe), lab


# ------------------------------------------------------------------------------------ colouring
def colorize_pair(
    rng: np.random.Generator,
    prompt_labels: np.ndarray,
    query_labels: np.ndarray,
    recipe: InContextRecipe,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONE random colour mapping for a prompt and a query label map.

    Ids are those present in either map (0 = background, always black; ``recipe.ignore_index`` is
    black too). With probability ``recipe.label_subset_p`` only a random non-empty subset of the ids
    keeps a colour (the rest become background).

    Returns:
        ``(prompt_rows, query_rows, palette)``: int64 ``[h, w]`` palette rows and uint8
        ``[K + 1, 3]`` colours, so that ``palette[prompt_rows]`` is the prompt's colour mask.
    """
    lo = int(min(prompt_labels.min(), query_labels.min()))
    hi = int(max(prompt_labels.max(), query_labels.max()))
    if lo >= 0 and hi < 1 << 16:  # small ids: counting is much cheaper than sorting
        ids = np.flatnonzero(
            np.bincount(prompt_labels.reshape(-1), minlength=hi + 1)
            + np.bincount(query_labels.reshape(-1), minlength=hi + 1)
        )
    else:
        ids = np.unique(np.concatenate([prompt_labels.reshape(-1), query_labels.reshape(-1)]))
    ids = ids[ids != 0]
    if recipe.ignore_index is not None:
        ids = ids[ids != recipe.ignore_index]
    if len(ids) > 1 and rng.random() < recipe.label_subset_p:
        keep = int(rng.integers(1, len(ids) + 1))
        ids = np.sort(rng.choice(ids, size=keep, replace=False))
    palette = random_palette(len(ids), rng, min_dist=recipe.min_color_dist)
    if hi - lo < 1 << 16:  # dense lookup: id -> palette row (0 for background / dropped ids)
        lut = np.zeros(hi - lo + 1, dtype=np.int64)
        lut[ids - lo] = np.arange(1, len(ids) + 1)
        rows = [lut[lab - lo] for lab in (prompt_labels, query_labels)]
    else:  # sparse, huge ids (e.g. packed RGB): search the sorted kept ids
        rows = []
        for lab in (prompt_labels, query_labels):
            pos = np.minimum(np.searchsorted(ids, lab), max(len(ids) - 1, 0))
            hit = ids[pos] == lab if len(ids) else np.zeros(lab.shape, dtype=bool)
            rows.append(np.where(hit, pos + 1, 0))
    return rows[0], rows[1], palette


def _valid(labels: np.ndarray, ignore_index: int | None) -> np.ndarray:
    if ignore_index is None:
        return np.ones(labels.shape, dtype=np.float32)
    return (labels != ignore_index).astype(np.float32)


def make_canvas(
    prompt_img: np.ndarray,
    query_img: np.ndarray,
    prompt_rows: np.ndarray,
    query_rows: np.ndarray,
    palette: np.ndarray,
    valid: np.ndarray,
    seg_type: int,
) -> dict[str, torch.Tensor]:
    """Stack prompt over query and ImageNet-normalise (float32).

    Args:
        prompt_img / query_img: float32 ``[3, h, w]`` RGB in [0, 1] (normalised in place).
        prompt_rows / query_rows: int ``[h, w]`` rows of ``palette`` (the colour masks).
        palette: uint8 ``[K + 1, 3]`` colours.
        valid: float32 ``[2h, w]`` loss weights of the whole canvas.
        seg_type: 0 semantic, 1 instance.

    Returns:
        ``{"imgs": [3, 2h, w], "tgts": [3, 2h, w], "valid": [1, 2h, w], "seg_type": int64 []}``.
    """
    imgs = np.concatenate([prompt_img, query_img], axis=1)
    imgs -= _MEAN32[:, None, None]
    imgs *= _INV_STD32[:, None, None]
    pal = (palette.astype(np.float32) / np.float32(255.0) - _MEAN32) * _INV_STD32  # [K + 1, 3]
    rows = np.concatenate([prompt_rows, query_rows], axis=0)
    tgts = np.stack([np.take(pal[:, c], rows) for c in range(3)])
    return {
        "imgs": torch.from_numpy(imgs),
        "tgts": torch.from_numpy(tgts),
        "valid": torch.from_numpy(np.ascontiguousarray(valid, dtype=np.float32)[None]),
        "seg_type": torch.tensor(int(seg_type), dtype=torch.int64),
    }


def make_sample(
    rng: np.random.Generator,
    prompt_views: Sequence[LabeledImage],
    query_views: Sequence[LabeledImage],
    size: tuple[int, int],
    seg_type: int,
    recipe: InContextRecipe,
) -> dict[str, torch.Tensor]:
    """Augment, colour and stitch one training sample.

    Args:
        rng: random generator (all randomness of the sample).
        prompt_views / query_views: (uint8 image, ids) pairs of one context, ids consistent across
            all of them. One each = a plain pair; 2-4 each = a mix-context sample (grids).
        size: ``(h, w)`` of one canvas half.
        seg_type: 0 semantic, 1 instance.
        recipe: augmentation settings.

    Returns:
        See :func:`make_canvas`.
    """

    def half(views: Sequence[LabeledImage]) -> tuple[np.ndarray, np.ndarray]:
        if len(views) == 1:
            return augment_view(rng, views[0], size, recipe)
        return mix_context_view(rng, views, size, recipe)

    p_img, p_lab = half(prompt_views)
    q_img, q_lab = half(query_views)
    p_rows, q_rows, palette = colorize_pair(rng, p_lab, q_lab, recipe)
    valid = _valid(np.concatenate([p_lab, q_lab], axis=0), recipe.ignore_index)
    return make_canvas(p_img, q_img, p_rows, q_rows, palette, valid, seg_type)


def _item_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, int(index)])


def _check_index(index: int, length: int) -> int:
    index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for {length} items")
    return index


def _half_size(half_size: Sequence[int]) -> tuple[int, int]:
    h, w = (int(s) for s in half_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"half_size must be positive (h, w), got {tuple(half_size)}")
    return h, w


# ------------------------------------------------------------------------------------ datasets
def _synthetic_config(cfg: SyntheticConfig | Mapping[str, Any] | None) -> SyntheticConfig | None:
    """A :class:`SyntheticConfig` from a (partial) mapping; lists become tuples."""
    if cfg is None or isinstance(cfg, SyntheticConfig):
        return cfg
    names = {f.name for f in dataclasses.fields(SyntheticConfig)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise InputError(f"unknown episode_cfg keys {unknown}; known: {', '.join(sorted(names))}")
    vals = {
        k: tuple(v) if isinstance(v, (list, tuple)) else (dict(v) if isinstance(v, Mapping) else v)
        for k, v in dict(cfg).items()
    }
    out = dataclasses.replace(SyntheticConfig(), **vals)
    try:
        out.validate()
    except ValueError as e:
        raise InputError(f"episode_cfg: {e}") from e
    return out


class SyntheticInContextDataset(Dataset):
    """In-context samples from generated episodes (:mod:`painter_seg.data.synthetic`), no files.

    Item ``i`` generates an episode from a seed drawn from ``(seed, i)`` and turns it into a sample;
    mix-context samples generate a larger episode of the same context (2-4 views per half).

    Args:
        length: number of items.
        seed: data seed.
        half_size: ``(h, w)`` of one canvas half (the model's ``img_size`` halved in height).
        recipe: augmentation settings (default :class:`InContextRecipe`).
        kinds: episode kinds to draw from uniformly (None = the generator's own choice).
        episode_size: size the episodes are generated at (None = ``half_size``).
        episode_cfg: :class:`~painter_seg.data.synthetic.SyntheticConfig` fields (a mapping or the
            object itself), passed to ``generate_episode(cfg=...)``.
    """

    def __init__(
        self,
        length: int,
        seed: int = 0,
        half_size: Sequence[int] = (224, 224),
        recipe: InContextRecipe | Mapping[str, Any] | None = None,
        kinds: Sequence[str] | None = None,
        episode_size: Sequence[int] | None = None,
        episode_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        if length <= 0:
            raise InputError(f"length must be positive, got {length}")
        self.length = int(length)
        self.seed = int(seed)
        self.half_size = _half_size(half_size)
        self.recipe = (
            recipe if isinstance(recipe, InContextRecipe) else InContextRecipe.from_dict(recipe)
        )
        self.kinds = list(kinds) if kinds else None
        self.episode_size = _half_size(episode_size) if episode_size else self.half_size
        self.episode_cfg = _synthetic_config(episode_cfg)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = _check_index(index, self.length)
        rng = _item_rng(self.seed, index)
        kind = self.kinds[int(rng.integers(len(self.kinds)))] if self.kinds else None
        n = 1
        if rng.random() < self.recipe.mix_context_p:
            n = int(rng.integers(self.recipe.mix_context_n[0], self.recipe.mix_context_n[1] + 1))
        same_image = n == 1 and rng.random() < self.recipe.same_image_p
        ep = generate_episode(
            int(rng.integers(0, 2**31 - 1)),
            kind=kind,
            num_shots=max(2 * n - 1, 1),
            size=self.episode_size,
            cfg=self.episode_cfg,
        )
        views = [(np.asarray(i), np.asarray(lab)) for i, lab in ep.prompts] + [
            (np.asarray(ep.query[0]), np.asarray(ep.query[1]))
        ]
        if same_image:
            prompt_views, query_views = views[-1:], views[-1:]
        else:
            prompt_views, query_views = views[:n], views[-n:]
        return make_sample(
            rng, prompt_views, query_views, self.half_size, int(ep.seg_type), self.recipe
        )


class FolderInContextDataset(Dataset):
    """In-context samples from image/mask files grouped by class (or object / video sequence).

    Prompt and query come from the same group. With ``window`` (video sequences, pairs in frame
    order) the two frames are at most ``window`` frames apart. Groups are drawn uniformly (every
    class equally often), pairs uniformly within a group.

    Args:
        groups: ``{name: [(image_path, mask_path), ...]}`` (e.g. from
            :func:`painter_seg.data.folders.load_fewshot_folder`).
        length: number of items (None = number of pairs).
        seed: data seed.
        half_size: ``(h, w)`` of one canvas half.
        recipe: augmentation settings.
        seg_type: 0 = semantic (class groups), 1 = instance (object ids of a video, DAVIS).
        window: maximum frame distance between prompt and query (None = anywhere in the group).
        max_side: files are downscaled on load so that their longer side is at most this.
    """

    def __init__(
        self,
        groups: Mapping[str, Sequence[tuple[str | os.PathLike, str | os.PathLike]]],
        length: int | None = None,
        seed: int = 0,
        half_size: Sequence[int] = (224, 224),
        recipe: InContextRecipe | Mapping[str, Any] | None = None,
        seg_type: int = 0,
        window: int | None = None,
        max_side: int | None = 1024,
    ) -> None:
        self.groups = {str(k): [(Path(a), Path(b)) for a, b in v] for k, v in groups.items() if v}
        if not self.groups:
            raise InputError("no (image, mask) pairs given")
        self.names = sorted(self.groups)
        total = sum(len(v) for v in self.groups.values())
        self.length = int(length) if length else total
        self.seed = int(seed)
        self.half_size = _half_size(half_size)
        self.recipe = (
            recipe if isinstance(recipe, InContextRecipe) else InContextRecipe.from_dict(recipe)
        )
        if seg_type not in (0, 1):
            raise InputError(f"seg_type must be 0 (semantic) or 1 (instance), got {seg_type}")
        self.seg_type = int(seg_type)
        if window is not None and window < 1:
            raise InputError(f"window must be >= 1 frame, got {window}")
        self.window = window
        self.max_side = max_side

    def __len__(self) -> int:
        return self.length

    def _load(self, pair: tuple[Path, Path]) -> LabeledImage:
        from ..io.images import load_image
        from ..io.masks import load_mask

        img = load_image(pair[0], max_side=None)
        lab = load_mask(pair[1]).labels
        if img.shape[:2] != lab.shape:  # e.g. a mask one pixel off (seen in DAVIS): fit it
            lab = resize_labels(lab, img.shape[:2])
        if self.max_side and max(img.shape[:2]) > self.max_side:
            s = self.max_side / max(img.shape[:2])
            size = (max(1, round(img.shape[0] * s)), max(1, round(img.shape[1] * s)))
            img, lab = _resize_u8(img, size), resize_labels(lab, size)
        return img, lab

    def _partner(self, rng: np.random.Generator, n: int, q: int) -> int:
        """Index of a prompt pair for query ``q`` in a group of ``n`` (another one if possible)."""
        lo, hi = 0, n - 1
        if self.window is not None:
            lo, hi = max(0, q - self.window), min(n - 1, q + self.window)
        if hi == lo:
            return q
        k = int(rng.integers(lo, hi))  # hi - lo choices, skipping q
        return k if k < q else k + 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = _check_index(index, self.length)
        rng = _item_rng(self.seed, index)
        pairs = self.groups[self.names[int(rng.integers(len(self.names)))]]
        n = 1
        if rng.random() < self.recipe.mix_context_p:
            n = int(rng.integers(self.recipe.mix_context_n[0], self.recipe.mix_context_n[1] + 1))
        q = int(rng.integers(len(pairs)))
        if n == 1:
            same = len(pairs) == 1 or rng.random() < self.recipe.same_image_p
            p = q if same else self._partner(rng, len(pairs), q)
            cache = {k: self._load(pairs[k]) for k in {p, q}}
            prompt_views, query_views = [cache[p]], [cache[q]]
        else:
            picks = [q] + [self._partner(rng, len(pairs), q) for _ in range(2 * n - 1)]
            cache = {k: self._load(pairs[k]) for k in set(picks)}
            views = [cache[k] for k in picks]
            prompt_views, query_views = views[n:], views[:n]
        return make_sample(
            rng, prompt_views, query_views, self.half_size, self.seg_type, self.recipe
        )

    @classmethod
    def from_folder(
        cls,
        root: str | os.PathLike,
        layout: str = "auto",
        seg_type: int | None = None,
        window: int | None = None,
        **kwargs: Any,
    ) -> FolderInContextDataset:
        """Read a folder data set (:func:`~painter_seg.data.folders.load_fewshot_folder` layouts).

        A ``davis`` layout (one group per sequence) defaults to ``seg_type=1`` and ``window=10``;
        other layouts to ``seg_type=0`` and no window.
        """
        from .folders import detect_layout, load_fewshot_folder

        root = Path(root).expanduser()
        if layout == "auto":
            if not root.is_dir():
                raise InputError(f"{root}: data folder not found")
            layout = detect_layout(root)
        groups = load_fewshot_folder(root, layout)
        video = layout == "davis"
        return cls(
            groups,
            seg_type=(1 if video else 0) if seg_type is None else seg_type,
            window=(10 if video else None) if window is None else window,
            **kwargs,
        )


def folder_in_context_dataset(root: str | os.PathLike, **kwargs: Any) -> FolderInContextDataset:
    """Config-friendly alias of :meth:`FolderInContextDataset.from_folder`."""
    return FolderInContextDataset.from_folder(root, **kwargs)


class MixedInContextDataset(Dataset):
    """Several datasets mixed by weight: item ``i`` picks a dataset (by weight) and one of its
    items, both drawn from ``(seed, i)``, so the mix is as deterministic as its parts.

    Args:
        datasets: the parts.
        weights: sampling weights (any positive scale).
        length: number of items.
        seed: mixing seed.
    """

    def __init__(
        self, datasets: Sequence[Dataset], weights: Sequence[float], length: int, seed: int = 0
    ) -> None:
        if len(datasets) != len(weights) or not datasets:
            raise InputError("need as many weights as datasets, and at least one dataset")
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise InputError(
                f"dataset weights must be >= 0 with a positive sum, got {list(weights)}"
            )
        self.datasets = list(datasets)
        self.cum = np.cumsum(w / w.sum())
        self.length = int(length)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = _check_index(index, self.length)
        rng = _item_rng(self.seed, index)
        k = min(int(np.searchsorted(self.cum, rng.random(), side="right")), len(self.datasets) - 1)
        ds = self.datasets[k]
        return ds[int(rng.integers(len(ds)))]


def build_train_dataset(
    data_cfg: Mapping[str, Any], half_size: Sequence[int], seed: int
) -> Dataset:
    """The training dataset described by a ``conf/data/*_train.yaml`` config.

    The config holds ``length`` (items per epoch), an optional shared ``recipe`` and ``sets``: a
    mapping ``name -> {_target_, weight, [recipe], ...kwargs}``. Each set is built by calling
    ``_target_`` with its kwargs plus ``half_size``, ``seed`` (derived from ``seed`` and the set's
    position), ``recipe`` (shared recipe updated by the set's own) and ``length`` (unless given).
    Sets with weight 0 are skipped; several sets are mixed by :class:`MixedInContextDataset`.
    """
    from hydra.utils import get_method
    from omegaconf import DictConfig, OmegaConf

    if isinstance(data_cfg, DictConfig):
        data_cfg = OmegaConf.to_container(data_cfg, resolve=True)
    data_cfg = dict(data_cfg)
    length = int(data_cfg.get("length") or 0)
    if length <= 0:
        raise InputError(f"data.length must be a positive number of items, got {length}")
    recipe = InContextRecipe.from_dict(data_cfg.get("recipe"))
    sets = data_cfg.get("sets") or {}
    parts, weights = [], []
    for k, (name, set_cfg) in enumerate(sorted(sets.items())):
        set_cfg = dict(set_cfg or {})
        weight = float(set_cfg.pop("weight", 1.0))
        if weight <= 0:
            continue
        target = set_cfg.pop("_target_", None)
        if target is None:
            raise InputError(f"data.sets.{name}: missing _target_")
        set_recipe = InContextRecipe.from_dict(set_cfg.pop("recipe", None), base=recipe)
        set_cfg.setdefault("length", length)
        sub_seed = int(np.random.SeedSequence([int(seed), k]).generate_state(1)[0])
        parts.append(
            get_method(target)(
                half_size=tuple(half_size), seed=sub_seed, recipe=set_recipe, **set_cfg
            )
        )
        weights.append(weight)
    if not parts:
        raise InputError("data.sets: no dataset with a positive weight")
    if len(parts) == 1:
        return parts[0]
    return MixedInContextDataset(parts, weights, length, seed=int(seed))
