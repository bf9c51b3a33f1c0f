"""Uploaded bytes -> images and masks, within the server's limits.

The server never opens a path a client names: an upload's bytes are written to a file of the server's own
(a random name in its work folder) and read with the library's readers (:func:`painter_seg.io.load_image`,
:func:`painter_seg.io.load_mask`), so every format, mode and EXIF rule of the CLI holds here too. The client's
file name is only a label, cleaned by :func:`display_name`.
"""
from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from ..io.images import load_image
from ..io.masks import LoadedMask, load_mask


class ApiError(Exception):
    """A request the server refuses: answered as ``status`` with JSON ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())


_UNSAFE = re.compile(r"[^\w.\- ()+,@]")


def display_name(filename: str | None, fallback: str) -> str:
    """The last component of a client's file name, with unusual characters replaced (at most 120 chars);
    ``fallback`` when empty. Only ever used as a label, never as a path."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    base = _UNSAFE.sub("_", base)[:120].lstrip(".")
    return base or fallback


def image_size(data: bytes, name: str, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` from the header of an uploaded image, without decoding its pixels.

    Raises:
        ApiError: 400 for an empty or unreadable upload, 413 for more than ``max_pixels`` pixels.
    """
    if not data:
        raise ApiError(400, f"{name}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ApiError(400, f"{name}: not a readable image") from None
    except Image.DecompressionBombError:
        raise ApiError(413, f"{name}: image too large") from None
    if w * h > max_pixels:
        raise ApiError(413, f"{name}: image is {w}x{h} = {w * h} pixels; this server takes at most "
                            f"{max_pixels}")
    return w, h


class UploadReader:
    """Decode uploads through files of the server's own in ``tmp_dir``.

    Args:
        tmp_dir: a folder only the server writes (created if missing).
        max_pixels: largest image accepted (width x height).
    """

    def __init__(self, tmp_dir: str | os.PathLike, max_pixels: int) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.max_pixels = max_pixels

    def _read(self, data: bytes, name: str, reader):
        image_size(data, name, self.max_pixels)
        with tempfile.NamedTemporaryFile(dir=self.tmp_dir, prefix="upload-", suffix=".bin") as f:
            f.write(data)
            f.flush()
            try:
                return reader(f.name)
            except InputError as e:  # the message starts with our file's path: name the upload instead
                raise ApiError(400, str(e).replace(f.name, name)) from None
            except (Image.DecompressionBombError, MemoryError):
                raise ApiError(413, f"{name}: image too large to decode") from None

    def image(self, data: bytes, name: str) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB of an uploaded image (any format PIL reads; EXIF orientation applied)."""
        return self._read(data, name, lambda p: load_image(p, max_side=None))

    def mask(self, data: bytes, name: str, mode: str = "auto") -> LoadedMask:
        """An uploaded mask read like a mask file (:func:`painter_seg.io.load_mask`).

        Args:
            mode: ``auto`` (decide from the file), ``ids`` (grey values are ids as stored: what the browser
                UI sends) or ``binary`` (one object: nonzero after thresholding).
        """
        binary = {"auto": None, "ids": False, "binary": True}.get(mode, "bad")
        if binary == "bad":
            raise ApiError(400, f"mask_mode={mode}: expected auto, ids or binary")
        return self._read(data, name, lambda p: load_mask(p, binary=binary))
