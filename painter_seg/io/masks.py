"""Reading masks in every form users bring, and writing label maps as palette PNGs.

:func:`load_mask` turns a mask file into an ``[H, W]`` int64 label map (0 = background) and says
how it read it:

- ``"binary"``: one object, labels in {0, 1}. From 1-bit files, grey maps with two values
  ``{0, v}`` (0/1, 0/255, ...), soft or JPEG-compressed grey masks (thresholded at half range: 128
  for 8 bit, 32768 for 16 bit), and palette PNGs whose indices are {0, 1}.
- ``"index"``: ids as stored. Palette (``P``) PNGs (the indices are the ids; the palette is kept)
  and grey maps
  whose levels form regions (e.g. {0, 1, 2, 3}, or ADE-style class ids).
- ``"color"``: RGB colour masks; each distinct colour is an id (black = 0, ids 1..K in sorted RGB
  order), with anti-aliasing / compression colours snapped to the nearest main colour; the palette
  holds the colours.

RGB files whose channels are equal (or nearly so, e.g. a grey mask saved as colour JPEG) are read as
grey. Alpha: when RGB is constant and alpha varies, alpha is the mask; when RGB is photo-like (a
cut-out) alpha is the mask; otherwise the image is composited on black (transparent = background).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InputError
from .files import atomic_path
from .images import open_pil

PathLike = str | os.PathLike

# A colour is "major" if it covers at least this share of the pixels (smaller: edge artefacts).
MAJOR_SHARE = 0.0005
# Main colours closer than this (Euclidean RGB) are one colour (JPEG / quantisation drift).
COLOR_MERGE_DIST = 24.0
# RGB pixels with more distinct colours than this (or than a quarter of the pixels) are a photo.
PHOTO_COLORS = 1 << 14
# A colour mask with more than this share of pixels far (2 x COLOR_MERGE_DIST) from every main colour is a
# photo; so is a grey map with more than PHOTO_LEVELS levels and under MIN_FLAT_SHARE of its pixels in flat
# region interiors (label maps are mostly flat; ADE-style maps have up to 150 ids).
MAX_FAR_SHARE = 0.25
PHOTO_LEVELS = 160
MIN_FLAT_SHARE = 0.5


@dataclass
class LoadedMask:
    """A mask file read as labels.

    Attributes:
        labels: ``[H, W]`` int64 ids, 0 = background.
        palette: ``[256, 3]`` uint8 colours indexed by id when the file carried colours (a ``P``
            palette or an RGB colour mask), else None.
        kind: ``"binary"``, ``"index"`` or ``"color"`` (see the module docstring).
    """

    labels: np.ndarray
    palette: np.ndarray | None
    kind: str

    @property
    def ids(self) -> np.ndarray:
        """Sorted nonzero ids present."""
        u = np.unique(self.labels)
        return u[u != 0]


def _flat(a: np.ndarray) -> np.ndarray:
    """Pixels equal to all their 4-neighbours (image borders count as equal): region interiors."""
    flat = np.ones(a.shape, dtype=bool)
    eq = a[1:] == a[:-1]
    flat[1:] &= eq
    flat[:-1] &= eq
    eq = a[:, 1:] == a[:, :-1]
    flat[:, 1:] &= eq
    flat[:, :-1] &= eq
    return flat


def _is_soft(uniq: np.ndarray, counts: np.ndarray, flat: np.ndarray, depth: int) -> bool:
    """Is a grey map one object with soft / compressed edges (rather than an index map)?

    Args:
        uniq: the distinct levels (sorted); counts: pixels per level; flat: region-interior pixels
            per level.
        depth: the top of the value range (255 or 65535).

    Soft iff there is a plateau at or above half range (the object) and every other level with a
    real interior (> 2% of the plateau's) is background noise (within 10% of the range from 0, and
    at most 3 apart: JPEG shifts a black background to 1 or 2) or plateau noise (within 10% of the
    range from the plateau). Anti-aliasing levels lie on edges, so they have next to no interior.
    """
    half = (depth + 1) // 2
    high = uniq >= half
    if not high.any():
        return False
    weight = flat if flat[high].any() else counts
    plateau = int(np.flatnonzero(high)[np.argmax(weight[high])])
    top = int(uniq[plateau])
    near = 0.1 * depth
    substantial = flat > 0.02 * max(int(flat[plateau]), 1)
    substantial[plateau] = False
    levels = uniq.astype(np.int64)
    low = substantial & (levels <= near)
    if low.any() and levels[low].max() - levels[low].min() > 3:
        return False
    return not (substantial & (levels > near) & (np.abs(levels - top) > near)).any()


def _grey_mask(
    g: np.ndarray, depth: int, binary: bool | None, path: PathLike
) -> tuple[np.ndarray, str]:
    """Labels of a grey map ``g`` (ints in ``0..depth``); see the module docstring for the rules."""
    half = (depth + 1) // 2
    if binary is False:
        return _ids_as_stored(g, path), "index"
    if g.max(initial=0) <= 65535:  # fast path: histogram over the value range
        hist = np.bincount(g.reshape(-1), minlength=1)
        uniq = np.flatnonzero(hist)
        counts = hist[uniq]
    else:
        uniq, counts = np.unique(g, return_counts=True)
    if len(uniq) <= 2:  # {v}, {0, v} or {lo, hi}: the top value is the object
        fg = g == uniq[-1] if (len(uniq) == 2 or uniq[0] != 0) else np.zeros(g.shape, bool)
        return fg.astype(np.int64), "binary"
    interior = g[_flat(g)]
    flat = np.searchsorted(uniq, interior)
    flat = np.bincount(flat, minlength=len(uniq))
    if _is_soft(uniq, counts, flat, depth):
        return (g >= half).astype(np.int64), "binary"
    if binary:
        return (g > 0).astype(np.int64), "binary"
    if len(uniq) > PHOTO_LEVELS and flat.sum() < MIN_FLAT_SHARE * g.size:
        raise InputError(f"{path}: looks like a photograph, not a mask ({len(uniq)} grey levels, "
                         f"{100 * flat.sum() / g.size:.0f}% of pixels in flat regions); a label mask "
                         f"has a few flat levels (ids, or 0/255)")
    return _ids_as_stored(g, path), "index"


def _ids_as_stored(g: np.ndarray, path: PathLike) -> np.ndarray:
    top = int(g.max(initial=0))
    if top > 255:
        raise InputError(f"{path}: mask ids above 255 (max {top}); at most 255 objects supported")
    return g.astype(np.int64)


def _color_mask(
    rgb: np.ndarray, binary: bool | None, path: PathLike
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Labels of an RGB colour mask: main colours -> ids, the other colours snapped to them."""
    keys = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    uniq, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    inv = inv.reshape(keys.shape)
    cols = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1).astype(np.float64)
    flat = np.bincount(inv[_flat(keys)], minlength=len(uniq))
    # main colours: big enough and forming regions (anti-aliasing colours lie on edges: no interior)
    major = (counts >= max(1.0, MAJOR_SHARE * keys.size)) & (flat >= 0.1 * counts)
    if not major.any():
        major[np.argmax(counts)] = True
    # biggest first; a main colour within the merge distance of a bigger one joins it
    centres: list[int] = []
    cand = np.flatnonzero(major)
    for i in cand[np.argsort(-counts[cand], kind="stable")]:
        if all(((cols[i] - cols[c]) ** 2).sum() > COLOR_MERGE_DIST**2 for c in centres):
            centres.append(int(i))
    cen = cols[centres]
    if (cen.max(1) - cen.min(1) <= COLOR_MERGE_DIST).all():  # all main colours grey: a grey mask
        grey = np.rint(rgb.astype(np.float64).mean(-1)).astype(np.int64)
        labels, kind = _grey_mask(grey, 255, binary, path)
        return labels, None, kind
    # nearest centre for every distinct colour (chunked: many colours x few centres)
    nearest = np.empty(len(uniq), dtype=np.int64)
    for s in range(0, len(uniq), 1 << 16):
        d2 = ((cols[s : s + (1 << 16), None, :] - cen[None]) ** 2).sum(-1)
        nearest[s : s + (1 << 16)] = d2.argmin(1)
    # background = black, or the main colour nearest black if it is within the merge distance
    bg_c = int(np.argmin((cen**2).sum(1)))
    has_bg = (cen[bg_c] ** 2).sum() <= COLOR_MERGE_DIST**2
    fg_c = [c for c in range(len(cen)) if not (has_bg and c == bg_c)]
    fg_c.sort(key=lambda c: tuple(cen[c]))
    if len(fg_c) > 255:
        raise InputError(
            f"{path}: colour mask has {len(fg_c)} colours; at most 255 objects supported"
        )
    far = (((cols - cen[nearest]) ** 2).sum(-1) > (2 * COLOR_MERGE_DIST) ** 2)[inv]
    if far.mean() > MAX_FAR_SHARE:
        raise InputError(f"{path}: looks like a photograph, not a mask ({len(uniq)} colours, "
                         f"{100 * far.mean():.0f}% of pixels far from every main colour); a colour "
                         f"mask has a few flat colours")
    cid = np.zeros(len(cen), dtype=np.int64)
    cid[fg_c] = np.arange(1, len(fg_c) + 1)
    labels = cid[nearest][inv]
    if binary:
        return (labels > 0).astype(np.int64), None, "binary"
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[1 : len(fg_c) + 1] = cen[fg_c].astype(np.uint8)
    return labels, palette, "color"


def _photo_like(pixels: np.ndarray) -> bool:
    """Do ``[N, 3]`` uint8 pixels look like a photo rather than a colour mask (too many colours)?"""
    keys = (
        (pixels[:, 0].astype(np.int64) << 16) | (pixels[:, 1].astype(np.int64) << 8) | pixels[:, 2]
    )
    return len(np.unique(keys)) > min(PHOTO_COLORS, len(keys) // 4)


def _pil_palette(im: Image.Image) -> np.ndarray:
    pal = np.zeros((256, 3), dtype=np.uint8)
    raw = im.getpalette("RGB") or []
    arr = np.asarray(raw[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
    pal[: len(arr)] = arr
    return pal


def load_mask(path: str | os.PathLike, binary: bool | None = None) -> LoadedMask:
    """Read a mask file into labels, whatever its form (see the module docstring for the rules).

    Args:
        path: mask image (PNG, JPEG, BMP, TIFF, ...).
        binary: ``None`` = decide from the file; ``True`` = one object: foreground = nonzero after
            thresholding soft masks; ``False`` = grey values are ids as stored (no thresholding).

    Returns:
        :class:`LoadedMask` with ``[H, W]`` int64 labels (EXIF orientation applied, as for images).

    Raises:
        InputError: missing, empty or unreadable file, or ids above 255 (one-line message starting
            with the path).
    """
    im = open_pil(path)
    mode = im.mode
    if mode == "1":
        return LoadedMask(np.asarray(im, dtype=bool).astype(np.int64), None, "binary")
    if mode in ("P", "PA"):
        idx = np.asarray(im)[..., 0] if mode == "PA" else np.asarray(im)
        idx = idx.astype(np.int64)
        palette = _pil_palette(im)
        if binary:
            return LoadedMask((idx > 0).astype(np.int64), None, "binary")
        kind = "binary" if idx.max(initial=0) <= 1 else "index"
        return LoadedMask(idx, palette, kind)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        g = np.asarray(im).astype(np.int64)
        if g.min(initial=0) < 0:
            raise InputError(f"{path}: mask has negative values")
        depth = 65535 if (mode != "I" or g.max(initial=0) > 255) else 255
        labels, kind = _grey_mask(g, depth, binary, path)
        return LoadedMask(labels, None, kind)
    if mode == "F":
        f = np.nan_to_num(np.asarray(im, dtype=np.float64))
        g = np.rint(np.clip(f * 255.0 if f.max(initial=0) <= 1.0 else f, 0, 255)).astype(np.int64)
        labels, kind = _grey_mask(g, 255, binary, path)
        return LoadedMask(labels, None, kind)

    if mode in ("LA", "La", "RGBA", "RGBa"):
        rgba = np.asarray(im.convert("RGBA"))
        rgb, alpha = rgba[..., :3], rgba[..., 3]
        if alpha.min() != alpha.max():
            flat_rgb = rgb.reshape(-1, 3)
            if (flat_rgb == flat_rgb[0]).all() or _photo_like(flat_rgb[alpha.reshape(-1) > 0]):
                # the shape is in the alpha channel (white / black fill, or a photo cut-out)
                labels, kind = _grey_mask(alpha.astype(np.int64), 255, binary, path)
                return LoadedMask(labels, None, kind)
            rgb = ((rgb.astype(np.uint16) * alpha[..., None] + 127) // 255).astype(np.uint8)
    else:
        rgb = np.asarray(im.convert("RGB") if mode != "RGB" else im)
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        labels, kind = _grey_mask(rgb[..., 0].astype(np.int64), 255, binary, path)
        return LoadedMask(labels, None, kind)
    labels, palette, kind = _color_mask(rgb, binary, path)
    return LoadedMask(labels, palette, kind)


def davis_palette(n: int = 256) -> np.ndarray:
    """The DAVIS / PASCAL VOC bit-interleaved palette: ``[n, 3]`` uint8, id -> RGB (0 black, 1 dark red,
    2 dark green, ...). The one home of this palette (DAVIS masks, generated data, video outputs)."""
    ids = np.arange(n, dtype=np.int64)
    pal = np.zeros((n, 3), dtype=np.int64)
    c = ids.copy()
    for bit in range(8):
        for ch in range(3):
            pal[:, ch] |= ((c >> ch) & 1) << (7 - bit)
        c >>= 3
    return pal.astype(np.uint8)


def save_label_png(path: str | os.PathLike, labels: np.ndarray, palette: np.ndarray) -> None:
    """Write a label map as a palette (``P``) PNG, atomically: pixel values are the ids.

    Args:
        path: output ``.png``; its folder must exist.
        labels: ``[H, W]`` integer ids in 0..255.
        palette: ``[K, 3]`` uint8 RGB colours by id (K <= 256), padded with black to 256 entries.

    Raises:
        ValueError: an id is outside 0..255, or the palette has more than 256 colours.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be [H, W], got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(
            f"label ids must be in 0..255 for a palette PNG, got {labels.min()}..{labels.max()}"
        )
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(pal) > 256:
        raise ValueError(f"a PNG palette holds at most 256 colours, got {len(pal)}")
    full = np.zeros((256, 3), dtype=np.uint8)
    full[: len(pal)] = pal
    im = Image.fromarray(labels.astype(np.uint8))
    im.putpalette(full.reshape(-1).tolist())  # L -> P
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read ids from a label PNG: the indices of a palette PNG, the values of a grey (8/16-bit) PNG.

    Returns:
        ``[H, W]`` int64.

    Raises:
        InputError: unreadable file, or a colour image (not a label map).
    """
    im = open_pil(path)
    if im.mode in ("P", "L", "1", "I", "I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(im).astype(np.int64)
    if im.mode in ("PA", "LA"):
        return np.asarray(im)[..., 0].astype(np.int64)
    rgb = np.asarray(im.convert("RGB"))
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0].astype(np.int64)
    raise InputError(f"{path}: not a label map (a colour image; expected a palette or grey PNG)")
