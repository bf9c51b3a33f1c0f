"""Exports for labelling tools: COCO RLE round trip through pycocotools, YOLO-seg polygons, binary PNGs."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from painter_seg.errors import InputError
from painter_seg.io.export import ExportItem, class_table, export_files, write_export, yolo_lines

pytest.importorskip("pycocotools")


def _items() -> list[ExportItem]:
    a = np.zeros((40, 60), np.int64)
    a[5:20, 10:30] = 1
    a[25:35, 40:55] = 3
    a[0:3, 0:3] = 1  # a second part of id 1
    b = np.zeros((30, 20), np.int64)
    b[10:20, 5:15] = 3
    return [ExportItem("a.jpg", "a", a), ExportItem("b.png", "b", b)]


def test_coco_round_trip_with_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    items = _items()
    files = export_files("coco", items, {1: "cat", 3: "dog"})
    write_export(tmp_path, files)
    coco = COCO(str(tmp_path / "coco.json"))
    assert {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())} == {1: "cat", 3: "dog"}
    for img in coco.loadImgs(coco.getImgIds()):
        item = next(it for it in items if it.file_name == img["file_name"])
        assert (img["height"], img["width"]) == item.labels.shape
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert sorted(a["category_id"] for a in anns) == sorted(int(i) for i in np.unique(item.labels) if i)
        for ann in anns:  # one RLE per image and id, decoded exactly
            assert np.array_equal(coco.annToMask(ann), item.labels == ann["category_id"])
            assert ann["area"] == (item.labels == ann["category_id"]).sum()


def test_unnamed_ids_get_class_names():
    assert class_table(_items(), {1: "cat"}) == {1: "cat", 3: "class_3"}
    data = json.loads(export_files("coco", _items())["coco.json"])
    assert [c["name"] for c in data["categories"]] == ["class_1", "class_3"]


def test_yolo_polygons_cover_the_regions():
    items = _items()
    files = export_files("yolo", items, {1: "cat", 3: "dog"})
    assert files["classes.txt"].decode().splitlines() == ["cat", "dog"]
    lines = files["a.txt"].decode().splitlines()
    assert sorted(ln.split()[0] for ln in lines) == ["0", "0", "1"]  # id 1 in two parts, id 3 -> class 1
    h, w = items[0].labels.shape
    for ln in lines:
        cls, *coords = ln.split()
        pts = np.array(coords, float).reshape(-1, 2)
        assert len(pts) >= 3 and (pts >= 0).all() and (pts <= 1).all()
        poly = np.zeros((h, w), np.uint8)
        import cv2

        cv2.fillPoly(poly, [np.rint(pts * [w, h] - 0.5).astype(np.int32)], 1)
        k = 1 if cls == "0" else 3
        inside = items[0].labels[poly > 0] == k
        assert inside.mean() > 0.9  # the polygon lies on its region
    assert yolo_lines(np.zeros((5, 5), np.int64), {}) == []


def test_binary_pngs_one_per_image_and_id(tmp_path):
    files = export_files("png", _items())
    assert sorted(files) == ["a_id1.png", "a_id3.png", "b_id3.png"]
    paths = write_export(tmp_path, files)
    arr = np.asarray(Image.open(paths[0]))
    assert arr.dtype == np.uint8 and set(np.unique(arr)) == {0, 255}
    assert np.array_equal(arr == 255, _items()[0].labels == 1)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(files["b_id3.png"]))) > 0,
                          _items()[1].labels == 3)


def test_bad_format_and_labels_are_input_errors():
    assert export_files("none", _items()) == {}
    with pytest.raises(InputError, match="export=zip"):
        export_files("zip", _items())
    with pytest.raises(InputError, match="0..255"):
        export_files("png", [ExportItem("x.png", "x", np.full((2, 2), 300))])
    with pytest.raises(ValueError, match="inside"):
        write_export("/tmp", {"../evil.txt": b""})


def test_segment_job_exports_what_it_wrote(tmp_path):
    """``painter-seg segment export=coco|yolo|png`` writes the exports of its own label maps beside them (and
    lists them in summary.json, so a rerun may replace them); an unknown format is an error before any work."""
    from hydra import compose, initialize_config_dir

    from painter_seg.config import conf_dir
    from painter_seg.io.masks import read_label_png
    from painter_seg.jobs.segment import run

    out = tmp_path / "out"

    def cfg(fmt: str):
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return compose("segment", [f"export={fmt}", "model=seggpt_tiny", "refine=none", f"output_dir={out}"])

    for fmt in ("png", "coco"):
        assert run(cfg(fmt)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "coco.json" in summary["outputs"] and "duck_toy_00_mask.png" in summary["outputs"]
    assert "duck_toy_00_id1.png" in {p.name for p in out.iterdir()}
    data = json.loads((out / "coco.json").read_text())
    assert [im["file_name"] for im in data["images"]] == ["duck_toy_00.jpg", "duck_toy_01.jpg"]
    for im in data["images"]:
        lab = read_label_png(out / f"{Path(im['file_name']).stem}_mask.png")
        ids = sorted(a["category_id"] for a in data["annotations"] if a["image_id"] == im["id"])
        assert ids == [int(i) for i in np.unique(lab) if i]
    with pytest.raises(InputError, match="export=zip"):
        run(cfg("zip"))
