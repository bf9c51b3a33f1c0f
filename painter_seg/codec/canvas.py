"""The SegGPT canvas: resizing, stitching, (de)normalisation, the query mask and n x n tiling.

A canvas is ``2h x w``: the prompt on top, the query below. The model sees an image canvas (prompt
image over query image) and a mask canvas (prompt mask over a copy of it; that half is masked out)
and paints the bottom half of the mask canvas. Every encode step here has its decode step:

=====================================  =====================================================
encode                                 decode
=====================================  =====================================================
:func:`resize_image` / ``_labels``     :func:`resize_paint` (back to the original size)
:func:`stitch`                         :func:`split`
:func:`normalize` / ``_tensor``        :func:`denormalize` / ``_tensor``
:func:`to_model_tensor`                :func:`paint_from_output`
:func:`tile_grid`                      :func:`untile_grid`
=====================================  =====================================================

Resizing follows the official inference script: PIL bicubic for images, nearest for masks, then
``/ 255``; the painting goes back with nearest (official) or bilinear.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from .palette import decode_paint, expand_labels, labels_to_colors
from .refine import GuidedRefine, refine_decode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MEAN = np.array(IMAGENET_MEAN, dtype=np.float64)
_STD = np.array(IMAGENET_STD, dtype=np.float64)


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive (h, w), got {tuple(size)}")
    return h, w


def pil_nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source indices PIL's ``NEAREST`` resize picks along one axis (exact, rounding included).

    Pillow walks ``x = scale / 2, x += scale`` in double precision and truncates,
    ``scale = n_in / n_out``.
    """
    scale = n_in / n_out
    pos = np.cumsum(
        np.concatenate([[scale * 0.5], np.full(n_out - 1, scale)])
    )  # sequential, like the C loop
    return np.clip(pos.astype(np.int64), 0, n_in - 1)


def torch_nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source indices of ``F.interpolate(mode="nearest")`` along one axis (exact replica).

    ATen uses ``floor(i * (float)(n_in / n_out))`` in float32, with shortcuts for equal and doubled
    sizes.
    """
    if n_in == n_out:
        return np.arange(n_out)
    if n_out == 2 * n_in:
        return np.arange(n_out) >> 1
    scale = np.float32(n_in) / np.float32(n_out)
    idx = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def resize_image(img: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize an RGB image like the official script: PIL bicubic on uint8, then ``/ 255``.

    Args:
        img: ``[H, W, 3]`` uint8 RGB.
        size: ``(h, w)`` wanted.

    Returns:
        ``[h, w, 3]`` float32 in [0, 1].
    """
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected a [H, W, 3] uint8 image, got {img.shape} {img.dtype}")
    h, w = _check_size(size)
    out = np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC))
    return (out.astype(np.float64) / 255.0).astype(np.float32)


def resize_labels(labels: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map, picking exactly the pixels PIL ``NEAREST`` picks.

    Args:
        labels: ``[H, W]`` integer or bool ids.
        size: ``(h, w)`` wanted.

    Returns:
        ``[h, w]`` with the input's dtype (no new ids appear).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a [H, W] label map, got shape {labels.shape}")
    h, w = _check_size(size)
    rows = pil_nearest_index(labels.shape[0], h)
    cols = pil_nearest_index(labels.shape[1], w)
    return labels[rows[:, None], cols[None, :]]


def resize_color_mask(mask: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize a colour mask like the official script: PIL nearest, then ``/ 255``.

    Args:
        mask: ``[H, W, 3]`` uint8 RGB colour mask.
        size: ``(h, w)`` wanted.

    Returns:
        ``[h, w, 3]`` float32 in [0, 1], only colours of the input.
    """
    mask = np.asarray(mask)
    if mask.dtype != np.uint8 or mask.ndim != 3 or mask.shape[2] != 3:
        raise ValueError(f"expected a [H, W, 3] uint8 colour mask, got {mask.shape} {mask.dtype}")
    h, w = _check_size(size)
    out = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST))
    return (out.astype(np.float64) / 255.0).astype(np.float32)


def normalize(x: np.ndarray) -> np.ndarray:
    """ImageNet-normalise ``[..., 3]`` RGB in [0, 1]: ``(x - mean) / std`` (computed in float64).

    Returns:
        float32 array of the same shape.
    """
    x = np.asarray(x, dtype=np.float64)
    return ((x - _MEAN) / _STD).astype(np.float32)


def denormalize(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalize`: ``x * std + mean`` on ``[..., 3]``; float32, about [0, 1]."""
    x = np.asarray(x, dtype=np.float64)
    return (x * _STD + _MEAN).astype(np.float32)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return mean, std


def normalize_tensor(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalise a ``[..., 3, H, W]`` (CHW or NCHW) float tensor of RGB in [0, 1]."""
    if x.shape[-3] != 3:
        raise ValueError(f"expected [..., 3, H, W], got shape {tuple(x.shape)}")
    mean, std = _stats(x)
    return (x - mean) / std


def denormalize_tensor(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize_tensor` on ``[..., 3, H, W]``: ``x * std + mean``."""
    if x.shape[-3] != 3:
        raise ValueError(f"expected [..., 3, H, W], got shape {tuple(x.shape)}")
    mean, std = _stats(x)
    return x * std + mean


def stitch(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Stack ``top`` (prompt) over ``bottom`` (query): two ``[h, w, C]`` -> ``[2h, w, C]``."""
    top, bottom = np.asarray(top), np.asarray(bottom)
    if top.shape != bottom.shape:
        raise ValueError(f"canvas halves differ: {top.shape} vs {bottom.shape}")
    return np.concatenate([top, bottom], axis=0)


def split(
    canvas: np.ndarray | torch.Tensor,
) -> tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`stitch`: the top and bottom halves of a canvas.

    Args:
        canvas: numpy ``[2h, w, C]`` (HWC), or a torch tensor ``[..., 2h, w]`` (CHW / NCHW).

    Returns:
        ``(top, bottom)``, views of the input.
    """
    if isinstance(canvas, torch.Tensor):
        axis, height = canvas.dim() - 2, canvas.shape[-2]
    else:
        canvas = np.asarray(canvas)
        axis, height = 0, canvas.shape[0]
    if height % 2:
        raise ValueError(f"canvas height {height} is odd; expected 2h")
    half = height // 2
    if isinstance(canvas, torch.Tensor):
        return canvas.narrow(axis, 0, half), canvas.narrow(axis, half, half)
    return canvas[:half], canvas[half:]


def make_canvases(
    prompt_img01: np.ndarray, prompt_mask01: np.ndarray, query_img01: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The two official canvases for one prompt pair and one query.

    Args:
        prompt_img01: ``[h, w, 3]`` prompt image in [0, 1].
        prompt_mask01: ``[h, w, 3]`` prompt colour mask in [0, 1].
        query_img01: ``[h, w, 3]`` query image in [0, 1].

    Returns:
        ``(img_canvas, tgt_canvas)``, each ``[2h, w, 3]`` float32 in [0, 1]: prompt image over query
        image, and prompt mask over a copy of the prompt mask (official; the bottom half is masked
        out anyway).
    """
    img = stitch(np.asarray(prompt_img01, np.float32), np.asarray(query_img01, np.float32))
    mask = np.asarray(prompt_mask01, np.float32)
    return img, stitch(mask, mask.copy())


def to_model_tensor(canvas: np.ndarray) -> torch.Tensor:
    """``[2h, w, 3]`` canvas in [0, 1] -> normalised ``[3, 2h, w]`` float32 tensor (no batch)."""
    canvas = np.asarray(canvas)
    if canvas.ndim != 3 or canvas.shape[2] != 3:
        raise ValueError(f"expected a [2h, w, 3] canvas, got shape {canvas.shape}")
    return torch.from_numpy(np.ascontiguousarray(normalize(canvas).transpose(2, 0, 1)))


def query_mask(grid: Sequence[int]) -> torch.Tensor:
    """The official ``bool_masked_pos``: every patch of the bottom (query) half masked.

    Args:
        grid: ``(Hp, Wp)`` patch grid of the whole canvas (``(56, 28)`` for 896 x 448 with 16 px
            patches).

    Returns:
        ``[1, Hp * Wp]`` bool, row-major, True for the last ``Hp // 2 * Wp`` patches.
    """
    hp, wp = (int(g) for g in grid)
    if hp <= 0 or wp <= 0 or hp % 2:
        raise ValueError(f"grid must be (even Hp, Wp) > 0, got {tuple(grid)}")
    mask = torch.zeros(1, hp * wp, dtype=torch.bool)
    mask[:, (hp // 2) * wp :] = True
    return mask


def paint_from_output(pred: torch.Tensor) -> np.ndarray:
    """The painted query masks from model output canvases (official post-processing).

    Args:
        pred: ``[N, 3, 2h, w]`` normalised output canvases (any device / float dtype).

    Returns:
        ``[N, h, w, 3]`` float32 RGB in [0, 255]: bottom half, ``(x * std + mean) * 255``, clipped
        (not rounded).
    """
    if pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"expected [N, 3, 2h, w], got shape {tuple(pred.shape)}")
    return paint_from_half(split(pred)[1])


def paint_from_half(half: torch.Tensor) -> np.ndarray:
    """Like :func:`paint_from_output` for already-cut query halves ``[N, 3, h, w]`` (normalised)."""
    rgb = denormalize_tensor(half.detach().float().cpu()) * 255.0
    return rgb.clamp(0.0, 255.0).permute(0, 2, 3, 1).contiguous().numpy()


def resize_paint(paint: np.ndarray, size: Sequence[int], mode: str = "bilinear") -> np.ndarray:
    """Resize a painting (float RGB) back to an original image size.

    Args:
        paint: ``[h, w, 3]`` float RGB (0..255).
        size: ``(H, W)`` wanted.
        mode: ``"bilinear"`` (cv2, half-pixel centres: smoother edges) or ``"nearest"`` (exactly the
            pixels the official ``F.interpolate(mode="nearest")`` picks).

    Returns:
        ``[H, W, 3]`` float32.
    """
    paint = np.asarray(paint, dtype=np.float32)
    if paint.ndim != 3:
        raise ValueError(f"expected [h, w, C] paint, got shape {paint.shape}")
    h, w = _check_size(size)
    if paint.shape[:2] == (h, w):
        return paint.copy()
    if mode == "nearest":
        # cv2's INTER_NEAREST rounds ties unlike torch: index exactly like the official code
        rows = torch_nearest_index(paint.shape[0], h)
        cols = torch_nearest_index(paint.shape[1], w)
        return paint[rows[:, None], cols[None, :]]
    if mode == "bilinear":
        return cv2.resize(paint, (w, h), interpolation=cv2.INTER_LINEAR)
    raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")


def cell_bounds(length: int, n: int) -> list[int]:
    """Edges of n grid cells along one axis: n cells of ``length // n``, the last takes the rest.

    The one definition of the spatial-ensemble grid: :func:`tile_grid` / :func:`untile_grid`
    (arrays) and :func:`painter_seg.strategies.arrangements.tile_prompts` (tensors) cut the same
    cells.
    """
    step = length // n
    if step == 0:
        raise ValueError(f"cannot split {length} px into {n} cells")
    return [i * step for i in range(n)] + [length]


def _resize_cell(item: np.ndarray, size: tuple[int, int], kind: str) -> np.ndarray:
    h, w = size
    if item.shape[:2] == (h, w):
        return item
    if kind == "mask":
        rows = pil_nearest_index(item.shape[0], h)
        cols = pil_nearest_index(item.shape[1], w)
        return item[rows[:, None], cols[None, :]]
    if kind != "image":
        raise ValueError(f"kind must be 'image' or 'mask', got {kind!r}")
    if item.dtype == np.uint8 and item.ndim == 3 and item.shape[2] == 3:
        return np.asarray(Image.fromarray(item).resize((w, h), Image.BICUBIC))
    chans = item[..., None] if item.ndim == 2 else item
    out = [
        np.asarray(Image.fromarray(chans[..., c].astype(np.float32)).resize((w, h), Image.BICUBIC))
        for c in range(chans.shape[2])
    ]
    res = np.stack(out, axis=-1).reshape((h, w) + item.shape[2:])
    if np.issubdtype(item.dtype, np.integer):
        info = np.iinfo(item.dtype)
        res = np.clip(np.rint(res), info.min, info.max)
    return res.astype(item.dtype)


def tile_grid(
    items: Sequence[np.ndarray], n: int, kind: str = "image", size: Sequence[int] | None = None
) -> np.ndarray:
    """Spatial ensemble: tile up to ``n * n`` prompts into one ``n x n`` grid of the same size.

    Item i goes to cell ``(i // n, i % n)``. Cells are ``(h // n, w // n)``; the last row / column
    takes the remainder. Each item is resized to its cell: bicubic (PIL) for images, PIL-nearest for
    masks (no new colours). Empty cells are 0 (black). With ``n = 1`` and one item of the grid size,
    the item comes back as is.

    Args:
        items: K arrays ``[h_i, w_i, C]`` (uint8 or float; the grid keeps the first item's dtype).
        n: cells per side (K <= n * n).
        kind: ``"image"`` or ``"mask"``.
        size: ``(h, w)`` of the grid; default the first item's size.

    Returns:
        ``[h, w, C]`` array.
    """
    if not items:
        raise ValueError("tile_grid needs at least one item")
    if n < 1 or len(items) > n * n:
        raise ValueError(f"{len(items)} items do not fit a {n}x{n} grid")
    if kind not in ("image", "mask"):
        raise ValueError(f"kind must be 'image' or 'mask', got {kind!r}")
    first = np.asarray(items[0])
    h, w = _check_size(size) if size is not None else first.shape[:2]
    ys, xs = cell_bounds(h, n), cell_bounds(w, n)
    grid = np.zeros((h, w) + first.shape[2:], dtype=first.dtype)
    for i, item in enumerate(items):
        r, c = divmod(i, n)
        cell = _resize_cell(np.asarray(item), (ys[r + 1] - ys[r], xs[c + 1] - xs[c]), kind)
        grid[ys[r] : ys[r + 1], xs[c] : xs[c + 1]] = cell
    return grid


def untile_grid(
    grid: np.ndarray, n: int, k: int, size: Sequence[int] | None = None, kind: str = "mask"
) -> list[np.ndarray]:
    """Inverse of :func:`tile_grid`: the first ``k`` cells of an ``n x n`` grid, row-major.

    Cells come back at cell size, or resized to ``size`` (``(h, w)``, ``kind`` as in
    :func:`tile_grid`). For masks whose size is divisible by n, tiling then untiling with ``size`` =
    the original size is exact when the masks are constant on ``n x n`` blocks (and always exact at
    cell size).

    Returns:
        k arrays ``[h_cell, w_cell, C]`` (or ``[*size, C]``), copies.
    """
    grid = np.asarray(grid)
    if k < 0 or k > n * n:
        raise ValueError(f"cannot take {k} cells from a {n}x{n} grid")
    ys, xs = cell_bounds(grid.shape[0], n), cell_bounds(grid.shape[1], n)
    out = []
    for i in range(k):
        r, c = divmod(i, n)
        cell = grid[ys[r] : ys[r + 1], xs[c] : xs[c + 1]].copy()
        out.append(_resize_cell(cell, _check_size(size), kind).copy() if size is not None else cell)
    return out



# --------------------------------------------------------------------------- tensors for the model
def rgb01_to_tensor(x: np.ndarray) -> torch.Tensor:
    """ImageNet-normalise ``[..., h, w, 3]`` RGB in [0, 1] and view it as ``[..., 3, h, w]``.

    Returns:
        float32 tensor sharing memory with the normalised array (channels-last strides; call
        ``.contiguous()`` where a packed CHW layout is wanted).
    """
    x = np.asarray(x)
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"expected [..., h, w, 3] RGB, got shape {x.shape}")
    return torch.from_numpy(np.moveaxis(normalize(x), -1, -3))


def images_to_tensor(images: Sequence[np.ndarray], size: Sequence[int]) -> torch.Tensor:
    """K uint8 RGB images (any sizes) -> the normalised ``[K, 3, h, w]`` float32 model input.

    Each image is resized like the official script (:func:`resize_image`), then normalised
    (:func:`rgb01_to_tensor`; channels-last strides).
    """
    if not len(images):
        raise ValueError("images_to_tensor needs at least one image")
    return rgb01_to_tensor(np.stack([resize_image(im, size) for im in images]))


def labels_to_tensor(
    labels: Sequence[np.ndarray], palette: np.ndarray, size: Sequence[int]
) -> torch.Tensor:
    """K label maps (any sizes) -> their normalised colour masks ``[K, 3, h, w]`` float32.

    Args:
        labels: K ``[H, W]`` integer ids in ``0..len(palette) - 1`` (compact labels, see
            :func:`painter_seg.codec.palette.labels_to_compact`).
        palette: ``[C + 1, 3]`` uint8 RGB, row k = colour of id k.
        size: ``(h, w)`` of the result; each colour mask is resized with PIL nearest
            (:func:`resize_color_mask`).

    Returns:
        ``[K, 3, h, w]`` float32 tensor (channels-last strides).
    """
    if not len(labels):
        raise ValueError("labels_to_tensor needs at least one label map")
    return rgb01_to_tensor(
        np.stack([resize_color_mask(labels_to_colors(lab, palette), size) for lab in labels])
    )


def canvas_tensors(
    top_images: torch.Tensor, top_masks: torch.Tensor, queries: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`make_canvases` for normalised ``[B, 3, h, w]`` tensor halves.

    Returns:
        ``(imgs, tgts)``, each ``[B, 3, 2h, w]``: prompt image over query, and prompt mask over a
        copy of the prompt mask (official; :func:`query_mask` masks that half). Differentiable.
    """
    if top_images.shape != queries.shape or top_masks.shape != queries.shape:
        raise ValueError(
            f"canvas halves differ: {tuple(top_images.shape)}, {tuple(top_masks.shape)}, "
            f"{tuple(queries.shape)}"
        )
    return torch.cat([top_images, queries], dim=2), torch.cat([top_masks, top_masks], dim=2)


def paint_to_labels(
    paint: np.ndarray,
    palette: np.ndarray,
    ids: Sequence[int],
    size: Sequence[int],
    mode: str = "bilinear",
    bg_threshold: float = 0.0,
    image: np.ndarray | None = None,
    refine: GuidedRefine | None = None,
    grid: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one painted query half at an image's size: resize the paint, then decode colours (or, with
    ``refine``, decode class scores refined along the query image's edges).

    Args:
        paint: ``[h, w, 3]`` float RGB 0..255 (one item of :func:`paint_from_half`).
        palette: ``[K + 1, 3]`` colours the prompt was painted in (row 0 = background).
        ids: the K ids of palette rows 1..K (``ids[k - 1]`` for compact label k).
        size: ``(H, W)`` to decode at (:func:`resize_paint`).
        mode: ``bilinear`` or ``nearest`` (the official resize).
        bg_threshold: see :func:`painter_seg.codec.palette.decode_paint`.
        image: the query ``[H', W', 3]`` uint8 RGB, the guide of ``refine``.
        refine: a :class:`~painter_seg.codec.refine.GuidedRefine`, or None (plain decode).
        grid: ``(rows, cols)`` patches of the half (``refine``'s radius is in patches).

    Returns:
        ``(labels, paint, scores)``: ``[H, W]`` int64 ids (0 = background), the resized
        ``[H, W, 3]`` float32 paint and ``[H, W]`` float32 scores in [0, 1].
    """
    resized = resize_paint(paint, size, mode=mode)
    if refine is not None:
        if image is None or grid is None:
            raise ValueError("paint_to_labels: refine needs the query image and the patch grid")
        compact, scores = refine_decode(paint, palette, image, size, grid, refine, bg_threshold)
    else:
        compact, scores = decode_paint(resized, palette, bg_threshold=bg_threshold)
    return expand_labels(compact, ids).astype(np.int64), resized, scores.astype(np.float32)
