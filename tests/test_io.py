"""Tests for painter_seg.io: image / mask loading in every form users bring, label PNGs, atomic
files, overlays."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from painter_seg.errors import InputError
from painter_seg.io import (
    LoadedMask,
    atomic_path,
    atomic_write_bytes,
    ensure_output_dir,
    load_image,
    load_mask,
    overlay,
    read_label_png,
    save_image,
    save_label_png,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# ----------------------------------------------------------------------------------------- helpers
def disc(
    h: int = 96, w: int = 128, cy: float = 48, cx: float = 60, r: float = 30, ss: int = 1
) -> np.ndarray:
    """Bool disc, or (ss > 1) its anti-aliased coverage in [0, 1] from ss x ss supersampling."""
    yy, xx = np.mgrid[0 : h * ss, 0 : w * ss]
    inside = ((yy + 0.5) / ss - cy) ** 2 + ((xx + 0.5) / ss - cx) ** 2 <= r * r
    if ss == 1:
        return inside
    return inside.reshape(h, ss, w, ss).mean(axis=(1, 3))


def regions(h: int = 60, w: int = 80) -> np.ndarray:
    """Index map with ids {0, 1, 2, 3} as solid blocks."""
    lab = np.zeros((h, w), np.int64)
    lab[5:30, 5:35] = 1
    lab[35:55, 10:40] = 2
    lab[10:50, 50:75] = 3
    return lab


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def save(path: Path, arr: np.ndarray, **kw) -> Path:
    Image.fromarray(arr).save(path, **kw)
    return path


# -------------------------------------------------------------------------------------- load_image
def test_load_image_forms(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(load_image(save(tmp_path / "rgb.png", rgb)), rgb)
    grey = rgb[..., 0]
    out = load_image(save(tmp_path / "l.png", grey))
    assert out.shape == (20, 30, 3) and np.array_equal(out[..., 2], grey)
    one = load_image(save(tmp_path / "one.png", grey > 128))
    assert set(np.unique(one)) <= {0, 255} and np.array_equal(one[..., 0] > 0, grey > 128)
    # palette image -> its colours
    p = Image.fromarray((grey % 3).astype(np.uint8))
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    p.save(tmp_path / "p.png")
    pout = load_image(tmp_path / "p.png")
    assert np.array_equal(pout[grey % 3 == 1], np.tile([255, 0, 0], ((grey % 3 == 1).sum(), 1)))
    # RGBA -> composited on black
    rgba = np.dstack([rgb, np.full((20, 30), 255, np.uint8)])
    rgba[0, 0] = (200, 100, 50, 128)
    rgba[0, 1] = (200, 100, 50, 0)
    a = load_image(save(tmp_path / "rgba.png", rgba))
    assert a[0, 0].tolist() == [
        (200 * 128 + 127) // 255,
        (100 * 128 + 127) // 255,
        (50 * 128 + 127) // 255,
    ]
    assert a[0, 1].tolist() == [0, 0, 0] and np.array_equal(a[1:], rgb[1:])
    la = np.dstack([grey, np.where(grey > 100, 255, 0).astype(np.uint8)])
    la_out = load_image(save(tmp_path / "la.png", la))
    assert np.array_equal(la_out[..., 0], np.where(grey > 100, grey, 0))
    # 16-bit grey -> 8-bit
    g16 = grey.astype(np.uint16) * 257
    g16[0, 0] = 65535
    i16 = Image.fromarray(g16)
    assert i16.mode.startswith("I;16")
    i16.save(tmp_path / "g16.png")
    out16 = load_image(tmp_path / "g16.png")
    assert (
        np.array_equal(out16[..., 0], np.where(g16 == 65535, 255, grey)) and out16.dtype == np.uint8
    )
    # CMYK (TIFF: lossless); no ink = white
    Image.new("CMYK", (8, 6), (0, 0, 0, 0)).save(tmp_path / "cmyk.tif")
    assert load_image(tmp_path / "cmyk.tif").tolist() == np.full((6, 8, 3), 255).tolist()


def test_load_image_exif_orientation(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)  # H = 20, W = 40
    img[0, 0] = (255, 0, 0)  # stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # display = rotate 90 degrees clockwise
    Image.fromarray(img).save(tmp_path / "rot.png", exif=exif)
    out = load_image(tmp_path / "rot.png")
    assert out.shape == (40, 20, 3)
    assert out[0, -1].tolist() == [255, 0, 0]  # top-left went to top-right


def test_load_image_downscales_with_warning(tmp_path):
    p = save(tmp_path / "big.png", np.full((50, 100, 3), 90, np.uint8))
    with pytest.warns(UserWarning) as rec:
        out = load_image(p, max_side=40)
    assert out.shape == (20, 40, 3) and (out == 90).all()
    assert str(rec[0].message) == f"{p}: 100x50 image downscaled to 40x20 (max_side=40)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(p).shape == (50, 100, 3)  # default limit: no warning


@pytest.mark.parametrize("loader", [load_image, load_mask, read_label_png])
def test_unreadable_files_one_line_errors(tmp_path, loader):
    missing = tmp_path / "nope.png"
    with pytest.raises(InputError) as e:
        loader(missing)
    assert str(e.value) == f"{missing}: file not found"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError) as e:
        loader(empty)
    assert str(e.value) == f"{empty}: empty file (0 bytes)"
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image at all\n" * 10)
    with pytest.raises(InputError) as e:
        loader(garbage)
    assert str(e.value) == f"{garbage}: not a readable image (cannot identify image file)"
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        buf, "PNG"
    )
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError) as e:
        loader(truncated)
    msg = str(e.value)
    assert msg.startswith(f"{truncated}: not a readable image (") and "\n" not in msg
    with pytest.raises(InputError, match="is a folder"):
        loader(tmp_path)


# --------------------------------------------------------------------------------------- load_mask
def test_mask_binary_forms(tmp_path):
    d = disc()
    m = load_mask(save(tmp_path / "one.png", d))  # 1-bit
    assert Image.open(tmp_path / "one.png").mode == "1"
    assert m.kind == "binary" and np.array_equal(m.labels, d.astype(np.int64)) and m.palette is None
    for name, arr in (("l01.png", d.astype(np.uint8)), ("l0255.png", d.astype(np.uint8) * 255)):
        m = load_mask(save(tmp_path / name, arr))
        assert m.kind == "binary" and m.labels.dtype == np.int64 and np.array_equal(m.labels, d)
    # grey RGB (r == g == b) 0/255
    m = load_mask(
        save(tmp_path / "grey_rgb.png", np.repeat(d[..., None] * np.uint8(255), 3, axis=2))
    )
    assert m.kind == "binary" and np.array_equal(m.labels, d)
    # RGBA with constant alpha -> alpha dropped
    rgba = np.dstack(
        [np.repeat(d[..., None] * np.uint8(255), 3, axis=2), np.full(d.shape, 255, np.uint8)]
    )
    m = load_mask(save(tmp_path / "rgba_const.png", rgba))
    assert m.kind == "binary" and np.array_equal(m.labels, d)


def test_mask_soft_edges_and_jpeg(tmp_path):
    cover = disc(ss=8)
    soft = np.rint(cover * 255).astype(np.uint8)
    assert len(np.unique(soft)) > 10
    expected = soft >= 128
    m = load_mask(save(tmp_path / "soft.png", soft))
    assert m.kind == "binary" and np.array_equal(m.labels, expected)
    m = load_mask(save(tmp_path / "soft_rgb.png", np.repeat(soft[..., None], 3, axis=2)))
    assert m.kind == "binary" and np.array_equal(m.labels, expected)
    # JPEG, grey and colour (a colour JPEG of a grey mask drifts a little per channel)
    hard = disc()
    m = load_mask(save(tmp_path / "mask.jpg", hard.astype(np.uint8) * 255, quality=70))
    assert m.kind == "binary" and iou(m.labels > 0, hard) > 0.97
    rgb_noisy = np.repeat(hard[..., None] * np.uint8(255), 3, axis=2)
    rgb_noisy[..., 0] = cv2.GaussianBlur(rgb_noisy[..., 0], (3, 3), 0)
    m = load_mask(save(tmp_path / "mask_rgb.jpg", rgb_noisy, quality=60))
    assert m.kind == "binary" and iou(m.labels > 0, hard) > 0.95
    # RGBA: constant white RGB, the shape in a soft alpha
    rgba = np.dstack([np.full(soft.shape + (3,), 255, np.uint8), soft])
    m = load_mask(save(tmp_path / "alpha.png", rgba))
    assert m.kind == "binary" and np.array_equal(m.labels, expected)
    # RGBA cut-out: a photo in RGB, the shape in alpha
    photo = np.random.default_rng(0).integers(0, 256, soft.shape + (3,), dtype=np.uint8)
    m = load_mask(save(tmp_path / "cutout.png", np.dstack([photo, soft])))
    assert m.kind == "binary" and np.array_equal(m.labels, expected)
    # binary=True on a soft mask: the same threshold
    assert np.array_equal(load_mask(tmp_path / "soft.png", binary=True).labels, expected)


def test_mask_16bit(tmp_path):
    d = disc()
    g = d.astype(np.uint16) * 65535
    Image.fromarray(g).save(tmp_path / "b16.png")
    assert Image.open(tmp_path / "b16.png").mode.startswith("I;16")
    m = load_mask(tmp_path / "b16.png")
    assert m.kind == "binary" and np.array_equal(m.labels, d)
    soft = np.rint(disc(ss=8) * 65535).astype(np.uint16)
    Image.fromarray(soft).save(tmp_path / "s16.png")
    m = load_mask(tmp_path / "s16.png")
    assert m.kind == "binary" and np.array_equal(m.labels, soft >= 32768)
    idx = regions().astype(np.uint16)
    Image.fromarray(idx).save(tmp_path / "i16.png")
    m = load_mask(tmp_path / "i16.png")
    assert m.kind == "index" and np.array_equal(m.labels, regions())
    Image.fromarray(idx * 200).save(tmp_path / "big16.png")  # ids 200, 400, 600
    with pytest.raises(InputError) as e:
        load_mask(tmp_path / "big16.png")
    assert str(e.value).startswith(f"{tmp_path / 'big16.png'}: mask ids above 255")


def test_mask_index_and_palette(tmp_path):
    lab = regions()
    m = load_mask(save(tmp_path / "idx.png", lab.astype(np.uint8)))
    assert m.kind == "index" and np.array_equal(m.labels, lab) and m.palette is None
    assert m.ids.tolist() == [1, 2, 3]
    assert np.array_equal(load_mask(tmp_path / "idx.png", binary=True).labels, lab > 0)
    # {0, v}: binary; binary=False keeps the stored value
    save(tmp_path / "two.png", (lab > 0).astype(np.uint8) * 7)
    assert load_mask(tmp_path / "two.png").kind == "binary"
    kept = load_mask(tmp_path / "two.png", binary=False)
    assert kept.kind == "index" and set(np.unique(kept.labels)) == {0, 7}
    # palette PNG: indices are the ids, palette kept
    pal = np.zeros((256, 3), np.uint8)
    pal[1], pal[3] = (200, 10, 10), (10, 200, 10)
    ids = np.where(lab == 2, 0, lab).astype(np.uint8)  # ids {0, 1, 3}
    p = Image.fromarray(ids)
    p.putpalette(pal.reshape(-1).tolist())
    p.save(tmp_path / "pal.png")
    m = load_mask(tmp_path / "pal.png")
    assert m.kind == "index" and np.array_equal(m.labels, ids) and np.array_equal(m.palette, pal)
    p01 = Image.fromarray((lab > 0).astype(np.uint8))
    p01.putpalette([0, 0, 0, 255, 255, 255])
    p01.save(tmp_path / "p01.png")
    m = load_mask(tmp_path / "p01.png")
    assert m.kind == "binary" and np.array_equal(m.labels, lab > 0) and m.palette is not None


def test_mask_colour_with_antialiasing(tmp_path):
    h, w, ss = 120, 160, 4
    hi = np.zeros((h * ss, w * ss, 3), np.uint8)
    red, green = disc(h, w, 50, 50, 35), disc(h, w, 70, 115, 30)
    hi_red = disc(h * ss, w * ss, 50 * ss, 50 * ss, 35 * ss)  # the same discs, drawn 4x larger
    hi_green = disc(h * ss, w * ss, 70 * ss, 115 * ss, 30 * ss)
    hi[hi_red] = (255, 0, 0)
    hi[hi_green] = (0, 255, 0)
    img = cv2.resize(
        hi, (w, h), interpolation=cv2.INTER_AREA
    )  # anti-aliased edges, blended colours
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20
    m = load_mask(save(tmp_path / "colour.png", img))
    assert isinstance(m, LoadedMask) and m.kind == "color"
    assert m.ids.tolist() == [1, 2]
    # ids in sorted colour order: (0, 255, 0) < (255, 0, 0)
    assert m.palette[1].tolist() == [0, 255, 0] and m.palette[2].tolist() == [255, 0, 0]
    assert not m.palette[3:].any() and m.palette.shape == (256, 3)
    assert iou(m.labels == 2, red) > 0.95 and iou(m.labels == 1, green) > 0.95
    assert np.array_equal(load_mask(tmp_path / "colour.png", binary=True).labels, m.labels > 0)
    # RGBA colour mask whose transparent background holds garbage colours: transparent = background
    rgba = np.dstack([img, np.where(img.any(-1), 255, 0).astype(np.uint8)])
    rgba[..., :3][~img.any(-1)] = (255, 255, 255)
    m2 = load_mask(save(tmp_path / "colour_rgba.png", rgba))
    assert m2.kind == "color" and np.array_equal(m2.labels, m.labels)


# -------------------------------------------------------------------------------------- label PNGs
def test_save_read_label_png(tmp_path):
    lab = regions()
    lab[0, 0] = 255
    pal = np.random.default_rng(0).integers(0, 256, (4, 3), dtype=np.uint8)
    save_label_png(tmp_path / "lab.png", lab, pal)
    im = Image.open(tmp_path / "lab.png")
    assert im.mode == "P"
    stored = np.asarray(im.getpalette()[: 256 * 3], np.uint8).reshape(-1, 3)
    assert np.array_equal(stored[:4], pal) and not stored[4:].any()
    assert np.array_equal(read_label_png(tmp_path / "lab.png"), lab)
    m = load_mask(tmp_path / "lab.png")
    assert np.array_equal(m.labels, lab) and np.array_equal(m.palette[:4], pal)
    save(tmp_path / "grey.png", lab.astype(np.uint8))
    assert np.array_equal(read_label_png(tmp_path / "grey.png"), lab)
    Image.fromarray(lab.astype(np.uint16)).save(tmp_path / "grey16.png")
    assert read_label_png(tmp_path / "grey16.png").dtype == np.int64
    with pytest.raises(ValueError):
        save_label_png(tmp_path / "bad.png", lab + 1, pal)  # 256 does not fit
    assert sorted(x.name for x in tmp_path.iterdir()) == ["grey.png", "grey16.png", "lab.png"]
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[0, 0] = (1, 2, 3)
    with pytest.raises(InputError, match="not a label map"):
        read_label_png(save(tmp_path / "colour.png", colour))


# ------------------------------------------------------------------------------------------- files
def test_atomic_path(tmp_path):
    target = tmp_path / "out.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp != target
        tmp.write_text("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "new"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "out.json"]
    with pytest.raises(InputError, match="does not exist"):
        atomic_write_bytes(tmp_path / "missing" / "x.bin", b"")


def test_ensure_output_dir(tmp_path):
    out = ensure_output_dir(tmp_path / "a" / "b")
    assert isinstance(out, Path) and out.is_dir()
    assert ensure_output_dir(str(out)) == out  # existing folder is fine
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(InputError) as e:
        ensure_output_dir(f)
    assert str(e.value) == f"{f}: exists and is a file, not a folder"
    with pytest.raises(InputError, match="cannot create output folder"):
        ensure_output_dir(f / "sub")


def test_save_image(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    save_image(tmp_path / "x.png", rgb)
    assert np.array_equal(load_image(tmp_path / "x.png"), rgb)
    save_image(tmp_path / "x.jpg", rgb)
    assert Image.open(tmp_path / "x.jpg").format == "JPEG"
    with pytest.raises(InputError, match="unknown image format"):
        save_image(tmp_path / "x.nope", rgb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jpg", "x.png"]


def test_overlay():
    img = np.full((40, 50, 3), 100, np.uint8)
    lab = np.zeros((40, 50), np.int64)
    lab[10:30, 10:30] = 1
    lab[5:15, 35:45] = 2
    pal = np.zeros((256, 3), np.uint8)
    pal[1], pal[2] = (255, 0, 0), (0, 0, 255)
    out = overlay(img, lab, pal, alpha=0.5, contours=False)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.array_equal(out[lab == 0], img[lab == 0])  # background untouched
    assert out[20, 20].tolist() == [178, 50, 50]  # 0.5 * 100 + 0.5 * (255, 0, 0), rounded
    with_c = overlay(img, lab, pal)
    assert with_c[10, 20].tolist() == [255, 0, 0]  # contour in the class colour
    assert with_c[20, 20].tolist() == [178, 50, 50]  # interior still blended
    assert np.array_equal(with_c[lab == 0][:5], img[lab == 0][:5])
    assert np.array_equal(overlay(img, np.zeros_like(lab), pal), img)
    with pytest.raises(ValueError):
        overlay(img, lab[:-1], pal)
    big = np.zeros((640, 640), np.int64)  # a photo-sized image: thickness 2 (640 / 320), a 3 px line
    big[100:300, 100:300] = 1
    rows = overlay(np.full((640, 640, 3), 100, np.uint8), big, pal)[:, 200]
    assert [r.tolist() == [255, 0, 0] for r in rows[98:104]] == [False, True, True, True, False, False]


# --------------------------------------------------------------------------------------- real data
REAL_MASKS = [
    "fss1000/apple/1.png",  # RGBA, near-grey colour noise, soft edges
    "fss1000/apple/5.png",
    "fss1000/basketball/2.png",  # RGBA 0/255
    "fss1000/eiffel_tower/1.png",  # RGB {0, 1}
    "persam_examples/cat_00.png",  # palette PNG, 1 = object
    "persam_examples/duck_toy_01.png",
    "kvasir_seg/masks/cju0roawvklrq0799vmjorwfv.jpg",  # JPEG ringing
    "seggpt_examples/hmbb_1_target.png",  # grey RGB, anti-aliased
    "seggpt_examples/video_3_target.png",
    "davis2016/Annotations/480p/blackswan/00000.png",  # L {0, 255}
    "isbi2012_membrane/label/0.png",  # L {0, 255}, mostly foreground
]


@pytest.mark.skipif(not DATA.is_dir(), reason="shared data folder not available")
@pytest.mark.parametrize("rel", REAL_MASKS)
def test_real_masks_load_binary(rel):
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"{rel} not present")
    m = load_mask(path)
    assert m.kind == "binary", (rel, m.kind, m.ids)
    assert set(np.unique(m.labels)) == {0, 1}
    frac = float(m.labels.mean())
    assert 0.003 < frac < 0.9, (rel, frac)
    img = Image.open(path)
    if img.mode != "P":  # 0/255-style files: same as thresholding the grey level at 128
        grey = np.asarray(img.convert("RGB"), np.float64).mean(-1)
        ref = grey >= 128 if grey.max() > 1 else grey > 0
        assert abs(frac - ref.mean()) < 0.005, (rel, frac, ref.mean())


@pytest.mark.skipif(
    not (DATA / "cutie_examples").is_dir(), reason="shared data folder not available"
)
def test_real_palette_mask_keeps_object_ids():
    m = load_mask(DATA / "cutie_examples/masks/judo/00005.png")  # object 2 only
    assert m.kind == "index" and m.ids.tolist() == [2] and m.palette is not None
    bike = load_mask(DATA / "cutie_examples/masks/bike/00000.png")
    assert bike.ids.tolist() == [1, 2]
