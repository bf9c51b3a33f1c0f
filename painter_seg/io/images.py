"""Reading RGB images from whatever files users bring, writing images, drawing masks over images.

Every problem with an input file is an :class:`~painter_seg.errors.InputError` whose one-line
message starts with the path, e.g. ``"a/b.png: empty file (0 bytes)"``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from .files import atomic_path

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _one_line(text: str, path: str | os.PathLike) -> str:
    text = " ".join(str(text).split())
    for form in (f"'{path}'", f'"{path}"', str(path)):
        text = text.replace(form, "").strip()
    return text.rstrip(":,; ") or "unknown error"


def open_pil(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file, with its EXIF orientation applied (mode as stored).

    Args:
        path: image file.

    Returns:
        A loaded :class:`PIL.Image.Image` (any mode: ``1``, ``L``, ``P``, ``RGB``, ``RGBA``,
        ``I;16``, ...).

    Raises:
        InputError: missing file, folder, empty file, unreadable or corrupt image (one-line
            message).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: file not found")
    if p.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise InputError(f"{path}: cannot read file ({e.strerror})") from None
    if size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(p) as im:
            im.load()
            out = im.copy()
    except UnidentifiedImageError:
        raise InputError(f"{path}: not a readable image (cannot identify image file)") from None
    except PermissionError:
        raise InputError(f"{path}: cannot read file (permission denied)") from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, zlib errors, ...
        raise InputError(f"{path}: not a readable image ({_one_line(e, path)})") from None
    try:
        return ImageOps.exif_transpose(out)
    except Exception:  # noqa: BLE001 - a malformed EXIF block must not make the pixels unusable
        return out


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL image -> ``[H, W, 3]`` uint8 RGB.

    Alpha is removed by compositing on black; 16-bit (``I;16``, and ``I`` above 255) is scaled to 8
    bits (``/ 257``); float (``F``) in [0, 1] is scaled by 255; other modes (``1``, ``L``, ``P``,
    ``CMYK``, ``YCbCr``, ...) are converted by PIL.
    """
    mode = im.mode
    if mode == "P" and "transparency" in im.info:
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)
        rgb = (rgba[..., :3] * rgba[..., 3:] + 127) // 255  # composite on black, rounded
        return rgb.astype(np.uint8)
    if mode in _16BIT_MODES or mode == "I":
        arr = np.asarray(im).astype(np.float64)
        if mode != "I" or arr.max(initial=0) > 255:
            arr = np.clip(arr, 0, 65535) / 257.0
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64))
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB") if mode != "RGB" else im, dtype=np.uint8).copy()


def load_image(path: str | os.PathLike, max_side: int | None = 4096) -> np.ndarray:
    """Read an image file as RGB.

    Handles grayscale, 1-bit, palette, CMYK, 16-bit, alpha (composited on black) and EXIF
    orientation.

    Args:
        path: image file (any format PIL reads).
        max_side: images whose longer side exceeds this are downscaled (area interpolation) to it,
            with a warning; ``None`` or 0 = no limit.

    Returns:
        ``[H, W, 3]`` uint8 RGB (after orientation and downscaling).

    Raises:
        InputError: missing, empty, or unreadable file (one-line message starting with the path).
    """
    rgb = pil_to_rgb(open_pil(path))
    h, w = rgb.shape[:2]
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        warnings.warn(
            f"{path}: {w}x{h} image downscaled to {nw}x{nh} (max_side={max_side})", stacklevel=2
        )
    return rgb


def _pil_format(path: Path) -> str:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown image format {path.suffix!r} (use .png, .jpg, ...)")
    return fmt


def save_image(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an image atomically; the format follows the suffix (``.png``; ``.jpg`` at quality 95).

    Args:
        path: output file; its folder must exist.
        rgb: ``[H, W, 3]`` uint8 RGB (``[H, W]`` grayscale is also accepted).
    """
    p = Path(path)
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(f"expected [H, W, 3] uint8 RGB, got {arr.shape} {arr.dtype}")
    fmt = _pil_format(p)
    im = Image.fromarray(np.ascontiguousarray(arr))
    if fmt == "JPEG" and im.mode == "RGBA":
        im = im.convert("RGB")
    kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    with atomic_path(p) as tmp:
        im.save(tmp, format=fmt, **kwargs)


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    palette: np.ndarray,
    alpha: float = 0.5,
    contours: bool = True,
) -> np.ndarray:
    """Draw a label map over an image so a person can check it.

    Background (0) pixels are left as they are; a pixel of id k becomes ``(1 - alpha) * image +
    alpha * palette[k]``; with ``contours`` each region also gets an outline in its colour, thick
    enough to see on a photo: OpenCV thickness ``round(longer side / 320)``, at least 1 (a 1 px line
    below 480 px; 3 px, one of them outside the region, at 640 px; 5 px at 1280 px).

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        labels: ``[H, W]`` integer ids, 0 = background.
        palette: ``[K, 3]`` uint8 RGB colours indexed by id (e.g. ``[256, 3]``).
        alpha: opacity of the colour fill in [0, 1].
        contours: draw region outlines.

    Returns:
        ``[H, W, 3]`` uint8 RGB (a new array).
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a [H, W, 3] uint8 image, got {image.shape} {image.dtype}")
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} do not match the image {image.shape[:2]}")
    out = image.copy()
    fg = labels > 0
    if not fg.any():
        return out
    ids = np.unique(labels[fg])
    if ids.min() < 0 or ids.max() >= len(palette):
        raise ValueError(f"label ids up to {ids.max()} but the palette has {len(palette)} colours")
    col = palette[labels[fg]].astype(np.float32)
    out[fg] = np.clip(np.rint((1.0 - alpha) * image[fg].astype(np.float32) + alpha * col), 0, 255)
    if contours:
        thickness = max(1, round(max(image.shape[:2]) / 320))
        for i in ids:
            m = (labels == i).astype(np.uint8)
            cnts, _ = cv2.findContours(m, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, cnts, -1, tuple(int(c) for c in palette[i]), thickness)
    return out
