"""One training sample: ONE random colouring of prompt and query ids, then the stacked canvas."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ...codec.canvas import IMAGENET_MEAN, IMAGENET_STD, stitch
from ...codec.palette import labels_to_colors, labels_to_compact, random_palette
from .augment import augment_view, mix_context_view, tiled_prompt_view
from .recipe import InContextRecipe, LabeledImage

_MEAN32 = np.array(IMAGENET_MEAN, dtype=np.float32)
_INV_STD32 = (1.0 / np.array(IMAGENET_STD, dtype=np.float64)).astype(np.float32)


def _present_ids(prompt_labels: np.ndarray, query_labels: np.ndarray, lo: int, hi: int
                 ) -> np.ndarray:
    """Sorted ids present in either map (``lo`` / ``hi``: their joint minimum / maximum)."""
    if lo >= 0 and hi < 1 << 16:  # small ids: counting is much cheaper than sorting
        return np.flatnonzero(
            np.bincount(prompt_labels.reshape(-1), minlength=hi + 1)
            + np.bincount(query_labels.reshape(-1), minlength=hi + 1)
        )
    return np.unique(np.concatenate([prompt_labels.reshape(-1), query_labels.reshape(-1)]))


def _palette_rows(labels: np.ndarray, ids: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """int64 palette row of every pixel: k for ``ids[k - 1]``, 0 for every other id."""
    if lo >= 0 and hi < 1 << 16:  # the codec's id lookup table
        return labels_to_compact(labels, ids)
    # negative or huge ids (e.g. packed RGB): search the sorted kept ids
    pos = np.minimum(np.searchsorted(ids, labels), max(len(ids) - 1, 0))
    hit = ids[pos] == labels if len(ids) else np.zeros(labels.shape, dtype=bool)
    return np.where(hit, pos + 1, 0)


def colorize_pair(
    rng: np.random.Generator,
    prompt_labels: np.ndarray,
    query_labels: np.ndarray,
    recipe: InContextRecipe,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONE random colour mapping for a prompt and a query label map.

    Ids are those present in either map (0 = background, always black; ``recipe.ignore_index`` is
    black too). With probability ``recipe.label_subset_p`` only a random non-empty subset of the ids
    keeps a colour (the rest become background). Colours come from
    :func:`~painter_seg.codec.palette.random_palette`.

    Returns:
        ``(prompt_rows, query_rows, palette)``: int64 ``[h, w]`` palette rows and uint8
        ``[K + 1, 3]`` colours, so that ``palette[prompt_rows]`` is the prompt's colour mask.
    """
    lo = int(min(prompt_labels.min(), query_labels.min()))
    hi = int(max(prompt_labels.max(), query_labels.max()))
    ids = _present_ids(prompt_labels, query_labels, lo, hi)
    ids = ids[ids != 0]
    if recipe.ignore_index is not None:
        ids = ids[ids != recipe.ignore_index]
    if len(ids) > 1 and rng.random() < recipe.label_subset_p:
        keep = int(rng.integers(1, len(ids) + 1))
        ids = np.sort(rng.choice(ids, size=keep, replace=False))
    palette = random_palette(len(ids), rng, min_dist=recipe.min_color_dist)
    rows = [_palette_rows(lab, ids, lo, hi) for lab in (prompt_labels, query_labels)]
    return rows[0], rows[1], palette


def _valid(labels: np.ndarray, ignore_index: int | None) -> np.ndarray:
    """float32 loss weights: 0 on ``ignore_index`` pixels, 1 elsewhere."""
    if ignore_index is None:
        return np.ones(labels.shape, dtype=np.float32)
    return (labels != ignore_index).astype(np.float32)


def _normalize_chw32(x: np.ndarray) -> np.ndarray:
    """ImageNet-normalise float32 ``[3, H, W]`` RGB in [0, 1] in place, in float32 arithmetic.

    :func:`painter_seg.codec.canvas.normalize` computes in float64 and differs in the last bit of
    most values; the training samples keep these bits (those the shipped model was trained on).
    """
    x -= _MEAN32[:, None, None]
    x *= _INV_STD32[:, None, None]
    return x


def make_canvas(
    prompt_img: np.ndarray,
    query_img: np.ndarray,
    prompt_rows: np.ndarray,
    query_rows: np.ndarray,
    palette: np.ndarray,
    valid: np.ndarray,
    seg_type: int,
) -> dict[str, torch.Tensor]:
    """Stack prompt over query, colour the ids and ImageNet-normalise (float32).

    Args:
        prompt_img / query_img: float32 ``[3, h, w]`` RGB in [0, 1] (left unchanged).
        prompt_rows / query_rows: int ``[h, w]`` rows of ``palette`` (the colour masks, painted
            with :func:`~painter_seg.codec.palette.labels_to_colors`).
        palette: uint8 ``[K + 1, 3]`` colours.
        valid: float32 ``[2h, w]`` loss weights of the whole canvas.
        seg_type: 0 semantic, 1 instance.

    Returns:
        ``{"imgs": [3, 2h, w], "tgts": [3, 2h, w], "valid": [1, 2h, w], "seg_type": int64 []}``.
    """
    imgs = _normalize_chw32(np.concatenate([prompt_img, query_img], axis=1))
    colors = labels_to_colors(stitch(prompt_rows, query_rows), palette)  # uint8 [2h, w, 3]
    tgts = np.ascontiguousarray(colors.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
    return {
        "imgs": torch.from_numpy(imgs),
        "tgts": torch.from_numpy(_normalize_chw32(tgts)),
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
    tiled: bool = False,
    family_stride: int | None = None,
) -> dict[str, torch.Tensor]:
    """Augment, colour and stitch one training sample.

    Args:
        rng: random generator (all randomness of the sample).
        prompt_views / query_views: (uint8 image, ids) pairs of one context, ids consistent across
            all of them. One each = a plain pair; 2-4 each = a mix-context sample (grids).
        size: ``(h, w)`` of one canvas half.
        seg_type: 0 semantic, 1 instance.
        recipe: augmentation settings.
        tiled: the prompt half is a spatial-ensemble grid of all ``prompt_views``
            (:func:`~.augment.tiled_prompt_view`) over one query view.
        family_stride: the views' labels are packed ``id + family_stride * family`` (a second map
            that goes through the same crops and flips, every draw of which ignores the labels): they
            are split after augmentation and the family map is returned as ``family``.

    Returns:
        See :func:`make_canvas`; with ``family_stride`` also ``"family"``: uint8 ``[2h, w]``.
    """

    def half(views: Sequence[LabeledImage]) -> tuple[np.ndarray, np.ndarray]:
        if len(views) == 1:
            return augment_view(rng, views[0], size, recipe)
        return mix_context_view(rng, views, size, recipe)

    p_img, p_lab = tiled_prompt_view(rng, prompt_views, size, recipe) if tiled else half(
        prompt_views
    )
    q_img, q_lab = half(query_views)
    if family_stride is None:
        return finish_sample(rng, (p_img, p_lab), (q_img, q_lab), seg_type, recipe)
    p_lab, p_fam = p_lab % family_stride, p_lab // family_stride
    q_lab, q_fam = q_lab % family_stride, q_lab // family_stride
    sample = finish_sample(rng, (p_img, p_lab), (q_img, q_lab), seg_type, recipe)
    sample["family"] = torch.from_numpy(stitch(p_fam, q_fam).astype(np.uint8))
    return sample


def finish_sample(
    rng: np.random.Generator,
    prompt: tuple[np.ndarray, np.ndarray],
    query: tuple[np.ndarray, np.ndarray],
    seg_type: int,
    recipe: InContextRecipe,
) -> dict[str, torch.Tensor]:
    """Colour and stitch an augmented ``(float32 [3, h, w] image, ids)`` prompt and query: one
    random colouring (:func:`colorize_pair`), loss weights, canvas (:func:`make_canvas`)."""
    (p_img, p_lab), (q_img, q_lab) = prompt, query
    p_rows, q_rows, palette = colorize_pair(rng, p_lab, q_lab, recipe)
    valid = _valid(stitch(p_lab, q_lab), recipe.ignore_index)
    return make_canvas(p_img, q_img, p_rows, q_rows, palette, valid, seg_type)
