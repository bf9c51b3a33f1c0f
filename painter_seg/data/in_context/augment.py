"""Paired augmentation of (image, labels) views: crop, flip, resize, jitter, mix-context grids.

Images go through PIL bicubic on uint8 and are scaled to [0, 1] in float32 arithmetic
(``x * float32(1 / 255)``); labels through :func:`painter_seg.codec.canvas.resize_labels`. The
codec's :func:`~painter_seg.codec.canvas.resize_image` scales in float64 and differs in the last bit
of about half the values, so it is not used here: training samples stay bit-identical to those the
shipped model was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ...codec.canvas import cell_bounds, resize_labels
from ...errors import InputError
from .recipe import InContextRecipe, LabeledImage


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


def resize_u8(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
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
    out = resize_u8(img[top : top + h, left : left + w], size)
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
    img = _to_float_chw(resize_u8(grid_img[top : top + ch, left : left + cw], size))
    lab = resize_labels(grid_lab[top : top + ch, left : left + cw], size)
    return color_jitter(rng, img, recipe), lab


def tiled_prompt_view(
    rng: np.random.Generator,
    pairs: Sequence[LabeledImage],
    size: tuple[int, int],
    recipe: InContextRecipe,
) -> tuple[np.ndarray, np.ndarray]:
    """A spatial-ensemble prompt half: K augmented views tiled row-major in an n x n grid.

    The layout of the ``spatial_ensemble`` strategy at inference
    (:func:`painter_seg.codec.canvas.tile_grid`): n = ceil(sqrt(K)) cells per side cut by
    :func:`~painter_seg.codec.canvas.cell_bounds`, view i in cell ``(i // n, i % n)``, empty cells
    black with background labels. Each view is cropped / flipped and resized straight to its cell;
    the whole grid is then jittered once.

    Args:
        rng: random generator.
        pairs: K >= 1 (uint8 ``[H, W, 3]`` image, ``[H, W]`` ids) views of one context.
        size: ``(h, w)`` of the half.
        recipe: augmentation settings.

    Returns:
        ``(float32 [3, h, w] in [0, 1], int [h, w])`` like :func:`augment_view`.
    """
    k = len(pairs)
    if k < 1:
        raise ValueError("a tiled prompt needs at least one view")
    n = math.ceil(math.sqrt(k))
    h, w = size
    ys, xs = cell_bounds(h, n), cell_bounds(w, n)
    grid_img = np.zeros((h, w, 3), dtype=np.uint8)
    grid_lab: np.ndarray | None = None
    for i, (img, lab) in enumerate(pairs):
        r, c = divmod(i, n)
        cell = (ys[r + 1] - ys[r], xs[c + 1] - xs[c])
        ci, cl = _crop_flip_resize(rng, img, lab, cell, recipe.scale, recipe.ratio, recipe.hflip_p)
        if grid_lab is None:
            grid_lab = np.zeros((h, w), dtype=cl.dtype)
        grid_img[ys[r] : ys[r + 1], xs[c] : xs[c + 1]] = ci
        grid_lab[ys[r] : ys[r + 1], xs[c] : xs[c + 1]] = cl
    return color_jitter(rng, _to_float_chw(grid_img), recipe), grid_lab
