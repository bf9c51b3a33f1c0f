"""Label maps exported for labelling tools: COCO JSON (one RLE per image and id), YOLO-seg polygons, and one
binary PNG per image and id.

Every exporter turns label maps into files in memory (``{relative name: bytes}``), so the same output can be
written to a folder (:func:`write_export`, atomically, file by file) or sent as a zip by the server.

    items = [ExportItem("cat.jpg", "cat", labels)]          # labels: [H, W] ids, 0 = background
    files = export_files("coco", items, {1: "cat", 2: "dog"})
    write_export("out", files)                               # out/coco.json

Formats (``fmt``):

- ``coco``: ``coco.json``, one image per item (``file_name``, ``width``, ``height``), one category per id
  (``names`` or ``class_<id>``), one annotation per (image, id present) with its mask as compressed RLE
  (pycocotools, ``counts`` as a string), ``bbox`` ``[x, y, w, h]``, ``area`` and ``iscrowd=0``.
- ``yolo``: ``<stem>.txt`` with one line per outer contour, ``<class> x1 y1 x2 y2 ...`` normalised to
  [0, 1] (Ultralytics YOLO-seg), class = the id's index among the sorted ids of ``names`` / the items;
  ``classes.txt`` lists the names in that order.
- ``png``: ``<stem>_id<k>.png``: 0 / 255 grey PNG per image and id present.

File names are flat (no sub-folders), so they sit beside the job's ``<stem>_mask.png`` files.
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import InputError
from .files import atomic_write_bytes

EXPORT_FORMATS = ("none", "coco", "yolo", "png")
"""Values of the ``export`` option (``none`` writes nothing)."""


@dataclass
class ExportItem:
    """One segmented image.

    Attributes:
        file_name: the image's file name as the labelling tool should see it (``images[].file_name``).
        stem: unique name for per-image output files (``<stem>.txt``, ``<stem>_id<k>.png``).
        labels: ``[H, W]`` integer ids 0..255, 0 = background.
    """

    file_name: str
    stem: str
    labels: np.ndarray


def _ids(labels: np.ndarray) -> list[int]:
    u = np.unique(labels)
    return [int(i) for i in u if i > 0]


def class_table(items: Sequence[ExportItem], names: Mapping[int, str] | None = None) -> dict[int, str]:
    """``{id: name}`` for every id of ``names`` and every id found in the items, sorted by id; ids without a
    name are called ``class_<id>``."""
    names = {int(k): str(v) for k, v in (names or {}).items()}
    ids = sorted(set(names) | {i for it in items for i in _ids(it.labels)})
    return {i: names.get(i, f"class_{i}") for i in ids}


def coco_dict(items: Sequence[ExportItem], names: Mapping[int, str] | None = None) -> dict:
    """The COCO instance-segmentation dict of ``items`` (see the module docstring)."""
    from pycocotools import mask as mask_utils

    table = class_table(items, names)
    images, annotations = [], []
    for image_id, it in enumerate(items, start=1):
        labels = np.asarray(it.labels)
        h, w = labels.shape
        images.append({"id": image_id, "file_name": it.file_name, "width": int(w), "height": int(h)})
        for k in _ids(labels):
            rle = mask_utils.encode(np.asfortranarray((labels == k).astype(np.uint8)))
            x, y, bw, bh = (float(v) for v in mask_utils.toBbox(rle))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": k,
                "segmentation": {"size": [int(h), int(w)], "counts": rle["counts"].decode("ascii")},
                "area": float(mask_utils.area(rle)), "bbox": [x, y, bw, bh], "iscrowd": 0,
            })
    categories = [{"id": i, "name": n, "supercategory": "object"} for i, n in table.items()]
    return {"info": {"description": "painter_seg predictions"}, "images": images,
            "annotations": annotations, "categories": categories}


def yolo_lines(labels: np.ndarray, class_index: Mapping[int, int]) -> list[str]:
    """YOLO-seg lines of one label map: one per outer contour with at least 3 points, coordinates normalised
    by the image's width and height (6 decimals)."""
    labels = np.asarray(labels)
    h, w = labels.shape
    lines = []
    for k in _ids(labels):
        contours, _ = cv2.findContours((labels == k).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        for c in contours:
            pts = c.reshape(-1, 2).astype(np.float64)
            if len(pts) < 3:
                continue
            pts = (pts + 0.5) / np.array([w, h])  # pixel centres, normalised
            coords = " ".join(f"{v:.6f}" for v in np.clip(pts, 0.0, 1.0).reshape(-1))
            lines.append(f"{class_index[k]} {coords}")
    return lines


def _png_bytes(binary: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.where(binary, 255, 0).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def export_files(fmt: str, items: Sequence[ExportItem], names: Mapping[int, str] | None = None
                 ) -> dict[str, bytes]:
    """The files of export format ``fmt`` (one of :data:`EXPORT_FORMATS`) as ``{relative path: bytes}``.

    Raises:
        InputError: unknown format, or a label map that is not ``[H, W]`` ids in 0..255.
    """
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"export={fmt}: expected one of {', '.join(EXPORT_FORMATS)}")
    for it in items:
        lab = np.asarray(it.labels)
        if lab.ndim != 2 or (lab.size and (lab.min() < 0 or lab.max() > 255)):
            raise InputError(f"{it.file_name}: label map must be [H, W] ids in 0..255")
    if fmt == "none":
        return {}
    if fmt == "coco":
        return {"coco.json": json.dumps(coco_dict(items, names)).encode()}
    if fmt == "yolo":
        table = class_table(items, names)
        index = {k: n for n, k in enumerate(table)}
        files = {f"{it.stem}.txt": "".join(f"{ln}\n" for ln in yolo_lines(it.labels, index)).encode()
                 for it in items}
        files["classes.txt"] = "".join(f"{n}\n" for n in table.values()).encode()
        return files
    return {f"{it.stem}_id{k}.png": _png_bytes(np.asarray(it.labels) == k)
            for it in items for k in _ids(np.asarray(it.labels))}


def write_export(out_dir: str | os.PathLike, files: Mapping[str, bytes]) -> list[Path]:
    """Write ``files`` (from :func:`export_files`) under ``out_dir``, each atomically; sub-folders are
    created. Returns the paths written."""
    out = Path(out_dir)
    paths = []
    for rel, data in files.items():
        path = out / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ValueError(f"{rel}: export file names must stay inside the output folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        paths.append(path)
    return paths
