"""Rasterising placed objects, compositing them over a background and finishing the image."""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from .config import SyntheticConfig
from .objects import Placed

_BANK = 512        # noise bank side
_SUB = 16          # fillPoly sub-pixel factor (shift = 4)


def rasterize(obj: Placed, h: int, w: int) -> tuple[int, int, np.ndarray] | None:
    """Anti-aliased coverage (uint8 0-255) of ``obj`` on its clipped bounding box, or None."""
    lin = obj.linear()
    c = np.array([obj.cx, obj.cy])
    px = [p @ lin.T + c for p, _ in obj.proto.shape.parts]
    allp = np.concatenate(px)
    x0 = max(math.floor(allp[:, 0].min()) - 1, 0)
    y0 = max(math.floor(allp[:, 1].min()) - 1, 0)
    x1 = min(math.ceil(allp[:, 0].max()) + 2, w)
    y1 = min(math.ceil(allp[:, 1].max()) + 2, h)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    off = np.array([x0, y0], np.float64)
    for (_, fill), p in zip(obj.proto.shape.parts, px):
        q = np.round((p - off) * _SUB).astype(np.int32)
        cv2.fillPoly(mask, [q], 255 if fill else 0, cv2.LINE_AA, 4)
    return x0, y0, mask


def _composite(canvas: np.ndarray, obj: Placed, x0: int, y0: int, mask: np.ndarray) -> None:
    """Blend the object's texture (warped from its frame) into ``canvas`` under ``mask``."""
    hh, ww = mask.shape
    region = canvas[y0:y0 + hh, x0:x0 + ww]
    a = mask.astype(np.float32) * (1.0 / 255.0)
    look = obj.proto.look
    if look.tex is None:
        region += (look.c1 - region) * a[..., None]
        return
    lin = obj.linear()
    n = look.tex.shape[0]
    m = np.empty((2, 3), np.float64)
    m[:, :2] = lin * (2.0 / n)
    m[:, 2] = lin @ np.full(2, 1.0 / n - 1.0) + np.array([obj.cx - x0, obj.cy - y0])
    tex = cv2.warpAffine(look.tex, m, (ww, hh), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT)
    region += (tex - region) * a[..., None]


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed-seed ``[_BANK, _BANK, 3]`` float32 bank of standard normal noise (read-only)."""
    bank = np.random.default_rng(0x5EED).standard_normal((_BANK, _BANK, 3), dtype=np.float32)
    bank.flags.writeable = False
    return bank


def sensor_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random ``[h, w, 3]`` float32 window of the noise bank (unit variance)."""
    bank = _noise_bank()
    if h > _BANK or w > _BANK:
        bank = np.tile(bank, (h // _BANK + 1, w // _BANK + 1, 1))
    oy = int(rng.integers(0, bank.shape[0] - h + 1))
    ox = int(rng.integers(0, bank.shape[1] - w + 1))
    return bank[oy:oy + h, ox:ox + w]


def finish_image(rng: np.random.Generator, canvas: np.ndarray, cfg: SyntheticConfig,
                 photometric: tuple[float, float, float, bool] | None = None) -> np.ndarray:
    """Gain, bias, sensor noise, optional blur; to uint8."""
    if photometric is None:
        photometric = random_photometric(rng, cfg)
    gain, bias, sigma, blur = photometric
    h, w = canvas.shape[:2]
    img = canvas * gain + bias
    if sigma > 0.25:
        img += sensor_noise(rng, h, w) * sigma
    if blur:
        img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_photometric(rng: np.random.Generator, cfg: SyntheticConfig
                       ) -> tuple[float, float, float, bool]:
    """Random ``(gain, bias, noise sigma, blur)`` of one image (or of a whole clip)."""
    return (float(rng.uniform(0.85, 1.12)), float(rng.uniform(-14, 14)),
            float(rng.uniform(*cfg.noise_sigma)), bool(rng.random() < cfg.blur_prob))


def draw_objects(objs: list[Placed], rasters: list, bg: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Composite objects in list order over ``bg`` (copied). Returns (canvas, objmap int16)."""
    canvas = bg.copy()
    h, w = canvas.shape[:2]
    objmap = np.full((h, w), -1, np.int16)
    for i, (obj, r) in enumerate(zip(objs, rasters)):
        if r is None:
            continue
        x0, y0, mask = r
        _composite(canvas, obj, x0, y0, mask)
        om = objmap[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
        om[mask >= 128] = i
    return canvas, objmap


def object_map(rasters: list, h: int, w: int) -> np.ndarray:
    """int16 ``[h, w]``: index of the last-drawn object covering each pixel (coverage >= 1/2),
    -1 for background; ``rasters`` as from :func:`rasterize`, in draw order."""
    objmap = np.full((h, w), -1, np.int16)
    for i, r in enumerate(rasters):
        if r is None:
            continue
        x0, y0, mask = r
        om = objmap[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
        om[mask >= 128] = i
    return objmap


def label_map(objs: list[Placed], objmap: np.ndarray) -> np.ndarray:
    """int64 ``[h, w]`` ids: each object's ``proto.label`` where it is seen, 0 elsewhere."""
    lut = np.zeros(len(objs) + 1, np.int64)
    for i, o in enumerate(objs):
        lut[i + 1] = o.proto.label
    return lut[objmap.astype(np.int64) + 1]
