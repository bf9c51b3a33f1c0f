"""Training datasets: generated episodes, image/mask folders, and a weighted mix of datasets.

Every item is a pure function of ``(seed, index)``: workers, epochs and resumption do not change it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ...codec.canvas import resize_labels
from ...codec.seg_type import SegType
from ...errors import InputError
from ...io.images import load_image
from ...io.masks import load_mask
from ..folders import detect_layout, load_few_shot_folder
from ..synthetic import SyntheticConfig, generate_episode
from .augment import resize_u8
from .recipe import InContextRecipe, LabeledImage
from .sample import make_sample

FAMILY_STRIDE = 1 << 16  # packs a family map under a label map (generated ids are far below it)


def _item_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, int(index)])


def _check_index(index: int, length: int) -> int:
    index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for {length} items")
    return index


def _draw_tiles(rng: np.random.Generator, recipe: InContextRecipe, n: int) -> int:
    """K tiled prompt views for a sample (0 = not tiled). Draws nothing when tiling is off or the
    sample is already a mix-context one, so such recipes keep their samples bit for bit."""
    if n != 1 or recipe.tile_prompts_p <= 0 or rng.random() >= recipe.tile_prompts_p:
        return 0
    lo, hi = recipe.tile_prompts_k
    return int(rng.integers(max(1, lo), max(1, hi) + 1))


def _half_size(half_size: Sequence[int]) -> tuple[int, int]:
    h, w = (int(s) for s in half_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"half_size must be positive (h, w), got {tuple(half_size)}")
    return h, w



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
        family_targets: items also carry ``family`` (uint8 ``[2h, w]``: the shape family of every pixel,
            :func:`~painter_seg.data.synthetic.episodes.family_map`, cropped and flipped with the
            labels), for training's auxiliary family loss; off, items are what they always were.
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
        family_targets: bool = False,
    ) -> None:
        if length <= 0:
            raise InputError(f"length must be positive, got {length}")
        self.length = int(length)
        self.seed = int(seed)
        self.half_size = _half_size(half_size)
        self.recipe = InContextRecipe.coerce(recipe)
        self.kinds = list(kinds) if kinds else None
        self.episode_size = _half_size(episode_size) if episode_size else self.half_size
        self.episode_cfg = _synthetic_config(episode_cfg)
        self.family_targets = bool(family_targets)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = _check_index(index, self.length)
        rng = _item_rng(self.seed, index)
        kind = self.kinds[int(rng.integers(len(self.kinds)))] if self.kinds else None
        n = 1
        if rng.random() < self.recipe.mix_context_p:
            n = int(rng.integers(self.recipe.mix_context_n[0], self.recipe.mix_context_n[1] + 1))
        tiles = _draw_tiles(rng, self.recipe, n)
        same_image = n == 1 and not tiles and rng.random() < self.recipe.same_image_p
        ep = generate_episode(
            int(rng.integers(0, 2**31 - 1)),
            kind=kind,
            num_shots=tiles or max(2 * n - 1, 1),
            size=self.episode_size,
            cfg=self.episode_cfg,
        )
        views = [(np.asarray(i), np.asarray(lab)) for i, lab in ep.prompts] + [
            (np.asarray(ep.query[0]), np.asarray(ep.query[1]))
        ]
        stride = None
        if self.family_targets:  # one packed map: ids and families cropped and flipped together
            stride = FAMILY_STRIDE
            views = [(img, lab.astype(np.int64) + stride * fam.astype(np.int64))
                     for (img, lab), fam in zip(views, ep.meta["family_maps"])]
        if same_image:
            prompt_views, query_views = views[-1:], views[-1:]
        elif tiles:
            prompt_views, query_views = views[:-1], views[-1:]
        else:
            prompt_views, query_views = views[:n], views[-n:]
        return make_sample(
            rng, prompt_views, query_views, self.half_size, int(ep.seg_type), self.recipe,
            tiled=bool(tiles), family_stride=stride,
        )


class FolderInContextDataset(Dataset):
    """In-context samples from image/mask files grouped by class (or object / video sequence).

    Prompt and query come from the same group. With ``window`` (video sequences, pairs in frame
    order) the two frames are at most ``window`` frames apart. Groups are drawn uniformly (every
    class equally often), pairs uniformly within a group.

    Args:
        groups: ``{name: [(image_path, mask_path), ...]}`` (e.g. from
            :func:`painter_seg.data.folders.load_few_shot_folder`).
        length: number of items (None = number of pairs).
        seed: data seed.
        half_size: ``(h, w)`` of one canvas half.
        recipe: augmentation settings.
        seg_type: semantic (class groups) or instance (object ids of a video, DAVIS); any
            spelling :meth:`~painter_seg.codec.SegType.parse` takes (0 / 1, names).
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
        seg_type: SegType | str | int = SegType.SEMANTIC,
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
        self.recipe = InContextRecipe.coerce(recipe)
        self.seg_type = int(SegType.parse(seg_type))
        if window is not None and window < 1:
            raise InputError(f"window must be >= 1 frame, got {window}")
        self.window = window
        self.max_side = max_side

    def __len__(self) -> int:
        return self.length

    def _load(self, pair: tuple[Path, Path]) -> LabeledImage:
        img = load_image(pair[0], max_side=None)
        lab = load_mask(pair[1]).labels
        if img.shape[:2] != lab.shape:  # e.g. a mask one pixel off (seen in DAVIS): fit it
            lab = resize_labels(lab, img.shape[:2])
        if self.max_side and max(img.shape[:2]) > self.max_side:
            s = self.max_side / max(img.shape[:2])
            size = (max(1, round(img.shape[0] * s)), max(1, round(img.shape[1] * s)))
            img, lab = resize_u8(img, size), resize_labels(lab, size)
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
        tiles = _draw_tiles(rng, self.recipe, n)
        q = int(rng.integers(len(pairs)))
        if tiles:
            picks = [q] + [self._partner(rng, len(pairs), q) for _ in range(tiles)]
            cache = {k: self._load(pairs[k]) for k in set(picks)}
            prompt_views, query_views = [cache[k] for k in picks[1:]], [cache[q]]
        elif n == 1:
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
            rng, prompt_views, query_views, self.half_size, self.seg_type, self.recipe,
            tiled=bool(tiles),
        )

    @classmethod
    def from_folder(
        cls,
        root: str | os.PathLike,
        layout: str = "auto",
        seg_type: SegType | str | int | None = None,
        window: int | None = None,
        **kwargs: Any,
    ) -> FolderInContextDataset:
        """Read a folder data set (:func:`~painter_seg.data.folders.load_few_shot_folder` layouts).

        A ``davis`` layout (one group per sequence) defaults to ``seg_type=1`` and ``window=10``;
        other layouts to ``seg_type=0`` and no window.
        """
        root = Path(root).expanduser()
        if layout == "auto":
            if not root.is_dir():
                raise InputError(f"{root}: data folder not found")
            layout = detect_layout(root)
        groups = load_few_shot_folder(root, layout)
        video = layout == "davis"
        return cls(
            groups,
            seg_type=(SegType.INSTANCE if video else SegType.SEMANTIC) if seg_type is None
            else seg_type,
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
