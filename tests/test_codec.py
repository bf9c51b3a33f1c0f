"""Tests for painter_seg.codec: palettes, label <-> colour codes, paint decoding, canvas layout
and tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from painter_seg.codec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_palette,
    colors_to_labels,
    compact_labels,
    decode_paint,
    decode_paint_scores,
    denormalize,
    denormalize_tensor,
    distinct_palette,
    expand_labels,
    labels_to_colors,
    make_canvases,
    make_palette,
    normalize,
    normalize_tensor,
    paint_from_output,
    palette_sigma,
    query_mask,
    random_palette,
    resize_color_mask,
    resize_image,
    resize_labels,
    resize_paint,
    split,
    stitch,
    tile_grid,
    to_model_tensor,
    untile_grid,
)
from painter_seg.errors import InputError


# ----------------------------------------------------------------------------------------- palette
def _hf_build_palette(num_labels: int) -> list[tuple[int, int, int]]:
    """Line-by-line transcription of the HF/Painter loop (seggpt_facts §3.4), as an oracle."""
    base = int(num_labels ** (1 / 3)) + 1
    margin = 256 // base
    colors = [(0, 0, 0)]
    for loc in range(num_labels):
        r = 255 - (loc // base**2) * margin
        g = 255 - ((loc % base**2) // base) * margin
        b = 255 - (loc % base) * margin
        colors.append((r, g, b))
    return colors


def test_build_palette_hand_checked():
    # K = 0: background only
    assert build_palette(0).tolist() == [[0, 0, 0]]
    # K = 1: base = int(1) + 1 = 2, margin 128; loc 0 -> (255, 255, 255)
    assert build_palette(1).tolist() == [[0, 0, 0], [255, 255, 255]]
    # K = 8: 8 ** (1/3) = 2.0 -> base 3, margin 85; loc in base 3 = digits (r, g, b) -> 255 - 85 * d
    assert build_palette(8).tolist() == [
        [0, 0, 0],
        [255, 255, 255],  # loc 0 = (0, 0, 0)
        [255, 255, 170],  # loc 1 = (0, 0, 1)
        [255, 255, 85],  # loc 2 = (0, 0, 2)
        [255, 170, 255],  # loc 3 = (0, 1, 0)
        [255, 170, 170],  # loc 4 = (0, 1, 1)
        [255, 170, 85],  # loc 5 = (0, 1, 2)
        [255, 85, 255],  # loc 6 = (0, 2, 0)
        [255, 85, 170],  # loc 7 = (0, 2, 1)
    ]
    # K = 27: 27 ** (1/3) = 3.0 -> base 4, margin 64; loc 26 = (1, 2, 2) -> (191, 127, 127)
    assert build_palette(27)[27].tolist() == [191, 127, 127]
    # K = 64: float cube root 3.999... -> int 3 -> base 4; loc 16 = (1, 0, 0), loc 63 = (3, 3, 3)
    p64 = build_palette(64)
    assert p64[17].tolist() == [191, 255, 255]
    assert p64[64].tolist() == [63, 63, 63]


@pytest.mark.parametrize("k", [0, 1, 2, 5, 8, 26, 27, 63, 64, 100, 125, 255])
def test_build_palette_matches_hf_loop(k):
    pal = build_palette(k)
    assert pal.dtype == np.uint8 and pal.shape == (k + 1, 3)
    assert pal.tolist() == [list(c) for c in _hf_build_palette(k)]
    assert len(np.unique(pal, axis=0)) == k + 1  # all distinct, none black except row 0


def _min_pairwise(pal: np.ndarray) -> float:
    p = pal.astype(np.float64)
    d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1))
    d[np.diag_indices(len(p))] = np.inf
    return float(d.min())


def test_distinct_palette_is_bright_and_far_apart():
    assert distinct_palette(0).tolist() == [[0, 0, 0]]
    assert distinct_palette(1).tolist() == [[0, 0, 0], [255, 255, 255]]  # one label: white, as SegGPT's
    assert distinct_palette(3).tolist() == [[0, 0, 0], [255, 255, 0], [0, 255, 255], [255, 0, 255]]
    pal = distinct_palette(7).astype(float)
    d = np.sqrt(((pal[:, None] - pal[None]) ** 2).sum(-1))[np.triu_indices(8, 1)]
    assert d.min() == 255.0  # SegGPT's 2-label palette: white and (255, 255, 127), 128 apart
    assert np.sqrt(((build_palette(2)[1:].astype(float) - [255, 255, 255]) ** 2).sum(-1)).max() == 128.0
    assert np.array_equal(distinct_palette(8), build_palette(8))  # more labels: the grid
    assert np.array_equal(make_palette("seggpt", 4), build_palette(4))
    assert np.array_equal(make_palette("distinct", 4), distinct_palette(4))
    with pytest.raises(InputError, match=r"^palette='vivid': expected one of seggpt, distinct$"):
        make_palette("vivid", 2)


def test_random_palette_deterministic_and_distinct():
    a = random_palette(10, np.random.default_rng(3))
    b = random_palette(10, np.random.default_rng(3))
    c = random_palette(10, np.random.default_rng(4))
    assert a.dtype == np.uint8 and a.shape == (11, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a[0].tolist() == [0, 0, 0]
    assert _min_pairwise(a) >= 60.0  # includes the distance to black
    assert _min_pairwise(random_palette(40, np.random.default_rng(0))) >= 60.0
    # too many labels for 60: a random subset of a 7-level grid (7**3 = 343 >= 301), 42.5 apart
    big = random_palette(300, np.random.default_rng(0))
    assert big.shape == (301, 3) and big[0].tolist() == [0, 0, 0]
    assert len(np.unique(big, axis=0)) == 301 and _min_pairwise(big) >= 42.0
    assert np.array_equal(big, random_palette(300, np.random.default_rng(0)))


# ------------------------------------------------------------------------------------- label codes
@pytest.mark.parametrize("k", [1, 2, 7, 40, 255])
def test_labels_colors_round_trip(k):
    rng = np.random.default_rng(k)
    labels = rng.integers(0, k + 1, size=(37, 53))
    for pal in (build_palette(k), random_palette(k, rng)):
        colors = labels_to_colors(labels, pal)
        assert colors.dtype == np.uint8 and colors.shape == (37, 53, 3)
        back = colors_to_labels(colors, pal)
        assert back.dtype == np.int64 and np.array_equal(back, labels)


def test_label_code_errors():
    pal = build_palette(2)
    with pytest.raises(ValueError, match="palette has 3 colours"):
        labels_to_colors(np.array([[0, 3]]), pal)
    with pytest.raises(ValueError):
        labels_to_colors(np.array([[-1, 0]]), pal)
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 0] = (1, 2, 3)
    with pytest.raises(ValueError, match=r"\(1, 2, 3\)"):
        colors_to_labels(img, pal)


def test_compact_expand_exact():
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 3, 17, 200, 4096], size=(20, 30))
    compact, ids = compact_labels(labels)
    assert ids.tolist() == [3, 17, 200, 4096]
    assert compact.dtype == np.int64 and set(np.unique(compact)) == {0, 1, 2, 3, 4}
    assert np.array_equal(compact[labels == 17], np.full((labels == 17).sum(), 2))
    assert np.array_equal(expand_labels(compact, ids), labels)
    z, zids = compact_labels(np.zeros((3, 3), np.int64))
    assert zids.size == 0 and not z.any() and np.array_equal(expand_labels(z, zids), z)
    with pytest.raises(ValueError):
        expand_labels(np.array([[5]]), ids)


# ---------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("k", [1, 3, 40])
def test_decode_exact_colours(k):
    rng = np.random.default_rng(k)
    pal = build_palette(k)
    labels = rng.integers(0, k + 1, size=(31, 29))
    paint = labels_to_colors(labels, pal).astype(np.float32)
    out, scores = decode_paint(paint, pal)
    assert out.dtype == np.int64 and scores.dtype == np.float32
    assert np.array_equal(out, labels)
    assert scores.min() > 0.99  # 1 - (number of grid neighbours) * exp(-8)
    # also from a torch tensor
    out_t, _ = decode_paint(torch.from_numpy(paint), pal)
    assert np.array_equal(out_t, labels)


def test_decode_half_way_and_threshold():
    pal = build_palette(1)  # black, white
    paint = np.zeros((1, 4, 3), np.float32)
    paint[0, 1] = 127.5  # exactly half-way: tie -> background, score 0.5
    paint[0, 2] = 150.0  # closer to white, but not by much
    paint[0, 3] = 255.0
    labels, scores = decode_paint(paint, pal)
    assert labels.tolist() == [[0, 0, 1, 1]]
    assert scores[0, 1] == pytest.approx(0.5, abs=1e-6)
    assert 0.5 < scores[0, 2] < 0.999 and scores[0, 3] > 0.999
    # between two foreground colours: 0.5 too (third colour far away)
    pal3 = np.array([[0, 0, 0], [255, 0, 0], [255, 255, 0]], np.uint8)
    mid = np.array([[[255, 127.5, 0]]], np.float32)
    lab3, sc3 = decode_paint(mid, pal3)
    assert lab3[0, 0] in (1, 2) and sc3[0, 0] == pytest.approx(0.5, abs=1e-3)
    # bg_threshold: weak foreground becomes background, scored by the background probability
    thr_labels, thr_scores = decode_paint(paint, pal, bg_threshold=0.99)
    assert thr_labels.tolist() == [[0, 0, 0, 1]]
    assert thr_scores[0, 2] == pytest.approx(1.0 - scores[0, 2], abs=1e-5)


def test_decode_scores_map_and_sigma():
    pal = build_palette(8)
    assert palette_sigma(pal) == pytest.approx(85 / 4)
    rng = np.random.default_rng(0)
    paint = rng.uniform(0, 255, size=(16, 12, 3)).astype(np.float32)
    probs = decode_paint_scores(paint, pal)
    labels, scores = decode_paint(paint, pal)
    assert probs.shape == (9, 16, 12) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    assert np.array_equal(probs.argmax(0), labels)
    np.testing.assert_allclose(probs.max(0), scores, atol=1e-6)


def test_decode_large_image_equals_nearest_colour_over_all_chunks():
    # 1024 x 1024 pixels are decoded in several chunks; every pixel must get its nearest palette colour
    pal = build_palette(8)
    paint = np.random.default_rng(0).uniform(0, 255, size=(1024, 1024, 3)).astype(np.float32)
    labels, scores = decode_paint(paint, pal)
    d = ((paint[:, :, None, :] - pal[None, None].astype(np.float32)) ** 2).sum(-1)
    assert labels.shape == (1024, 1024) and np.array_equal(labels, d.argmin(-1))
    assert scores.shape == (1024, 1024) and 0.0 <= scores.min() and scores.max() <= 1.0


# ------------------------------------------------------------------------------------------ canvas
def test_stitch_split_numpy_and_torch():
    rng = np.random.default_rng(0)
    top, bottom = rng.random((4, 5, 3)), rng.random((4, 5, 3))
    canvas = stitch(top, bottom)
    assert canvas.shape == (8, 5, 3)
    t, b = split(canvas)
    assert np.array_equal(t, top) and np.array_equal(b, bottom)
    tensor = torch.from_numpy(canvas).permute(2, 0, 1)[None]  # [1, 3, 8, 5]
    tt, tb = split(tensor)
    assert tuple(tt.shape) == (1, 3, 4, 5)
    assert np.array_equal(tb[0].permute(1, 2, 0).numpy(), bottom)
    with pytest.raises(ValueError):
        split(np.zeros((5, 4, 3)))
    with pytest.raises(ValueError):
        stitch(top, bottom[:3])


def test_normalize_round_trip():
    x = np.random.default_rng(0).random((6, 7, 3)).astype(np.float32)
    n = normalize(x)
    assert n.dtype == np.float32
    np.testing.assert_allclose(
        n[..., 1], (x[..., 1] - IMAGENET_MEAN[1]) / IMAGENET_STD[1], atol=1e-6
    )
    assert np.abs(denormalize(n) - x).max() < 1e-6
    t = torch.from_numpy(x).permute(2, 0, 1)[None]
    nt = normalize_tensor(t)
    np.testing.assert_allclose(nt[0].permute(1, 2, 0).numpy(), n, atol=1e-6)
    assert (denormalize_tensor(nt) - t).abs().max() < 1e-6
    assert (denormalize_tensor(normalize_tensor(t[0])) - t[0]).abs().max() < 1e-6  # CHW too


def test_make_canvases_layout_and_model_tensor():
    rng = np.random.default_rng(0)
    p_img, p_mask, q_img = (rng.random((4, 6, 3)).astype(np.float32) for _ in range(3))
    img_c, tgt_c = make_canvases(p_img, p_mask, q_img)
    assert img_c.shape == tgt_c.shape == (8, 6, 3) and img_c.dtype == np.float32
    assert np.array_equal(img_c[:4], p_img) and np.array_equal(img_c[4:], q_img)
    assert np.array_equal(tgt_c[:4], p_mask) and np.array_equal(tgt_c[4:], p_mask)
    tgt_c[4:] = 0  # the bottom half is a copy, not a view of the caller's mask
    assert p_mask.any()
    t = to_model_tensor(img_c)
    assert t.dtype == torch.float32 and tuple(t.shape) == (3, 8, 6)
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy(), normalize(img_c), atol=1e-7)


def test_query_mask():
    m = query_mask((56, 28))
    assert m.dtype == torch.bool and tuple(m.shape) == (1, 1568)
    assert int(m.sum()) == 784 and not m[0, :784].any() and m[0, 784:].all()
    small = query_mask((4, 3))
    assert small[0].tolist() == [False] * 6 + [True] * 6
    with pytest.raises(ValueError):
        query_mask((5, 3))


def test_paint_from_output_known_tensor():
    h, w = 4, 3
    colour = np.array([10.0, 128.0, 250.0], np.float32)
    canvas01 = np.zeros((2 * h, w, 3), np.float32)
    canvas01[h:] = colour / 255.0
    canvas01[h:, 0] = [2.0, -1.0, 0.5]  # out of range -> clipped to 255 / 0 / 127.5
    pred = to_model_tensor(canvas01)[None].repeat(2, 1, 1, 1)
    paint = paint_from_output(pred)
    assert paint.shape == (2, h, w, 3) and paint.dtype == np.float32
    np.testing.assert_allclose(paint[1, :, 1:], np.broadcast_to(colour, (h, w - 1, 3)), atol=1e-3)
    np.testing.assert_allclose(paint[0, 0, 0], [255.0, 0.0, 127.5], atol=1e-3)


def test_resize_image_matches_pil_bicubic():
    img = np.random.default_rng(0).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    out = resize_image(img, (17, 23))
    ref = np.asarray(Image.fromarray(img).resize((23, 17), Image.BICUBIC)) / 255.0
    assert out.dtype == np.float32 and out.shape == (17, 23, 3)
    np.testing.assert_allclose(out, ref, atol=1e-7)


@pytest.mark.parametrize(
    "src,dst",
    [((30, 41), (17, 23)), ((7, 5), (448, 448)), ((2, 3), (7, 15)), ((480, 854), (448, 448))],
)
def test_resize_labels_is_pil_nearest(src, dst):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 300, src)
    out = resize_labels(labels, dst)
    ref = np.asarray(Image.fromarray(labels.astype(np.int32)).resize(dst[::-1], Image.NEAREST))
    assert out.dtype == labels.dtype and np.array_equal(out, ref)
    # the colour-mask path picks the same pixels
    small = labels % 9
    pal = build_palette(8)
    col = resize_color_mask(labels_to_colors(small, pal), dst)
    assert col.dtype == np.float32
    np.testing.assert_array_equal(
        col, labels_to_colors(resize_labels(small, dst), pal) / np.float32(255.0)
    )


@pytest.mark.parametrize(
    "src,dst",
    [((448, 448), (480, 854)), ((448, 448), (100, 37)), ((6, 34), (68, 51)), ((5, 5), (10, 10))],
)
def test_resize_paint(src, dst):
    paint = np.random.default_rng(0).uniform(0, 255, src + (3,)).astype(np.float32)
    near = resize_paint(paint, dst, mode="nearest")
    ref = F.interpolate(torch.from_numpy(paint).permute(2, 0, 1)[None], size=dst, mode="nearest")
    assert near.shape == dst + (3,) and near.dtype == np.float32
    np.testing.assert_array_equal(
        near, ref[0].permute(1, 2, 0).numpy()
    )  # the official resize, exactly
    lin = resize_paint(paint, dst)
    assert lin.shape == dst + (3,) and lin.dtype == np.float32
    flat = resize_paint(np.full(src + (3,), 77.0, np.float32), dst)
    np.testing.assert_allclose(flat, 77.0, atol=1e-4)
    with pytest.raises(ValueError):
        resize_paint(paint, dst, mode="cubic")


# ------------------------------------------------------------------------------------------ tiling
def test_tile_untile_masks_exact():
    rng = np.random.default_rng(0)
    pal = build_palette(5)
    cells = [labels_to_colors(rng.integers(0, 6, (8, 12)), pal) for _ in range(7)]
    grid = tile_grid(cells, 3, kind="mask", size=(24, 36))
    assert grid.shape == (24, 36, 3) and grid.dtype == np.uint8
    assert np.array_equal(grid[8:16, 12:24], cells[4])  # item 4 -> cell (1, 1)
    assert not grid[16:, 12:].any()  # cells 7 and 8 are empty -> black
    back = untile_grid(grid, 3, 7)
    assert all(np.array_equal(a, b) for a, b in zip(back, cells, strict=True))
    # full-size masks constant on 3x3 blocks survive tiling and untiling back to full size
    full = [np.kron(c, np.ones((3, 3, 1), np.uint8)) for c in cells]
    grid2 = tile_grid(full, 3, kind="mask")
    assert np.array_equal(grid2, grid)
    back2 = untile_grid(grid2, 3, 7, size=(24, 36), kind="mask")
    assert all(np.array_equal(a, b) for a, b in zip(back2, full, strict=True))


def test_tile_images_and_identity():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(tile_grid([img], 1, kind="image"), img)
    assert np.array_equal(tile_grid([img], 1, kind="mask"), img)
    f = img.astype(np.float32) / 255
    assert np.array_equal(tile_grid([f], 1), f)
    g = tile_grid([img, img[::-1]], 2, kind="image")
    assert g.dtype == np.uint8 and g.shape == img.shape
    ref = np.asarray(Image.fromarray(img).resize((15, 10), Image.BICUBIC))
    assert np.array_equal(g[:10, :15], ref) and not g[10:].any()
    gf = tile_grid([f, f], 2, kind="image")
    assert gf.dtype == np.float32 and np.abs(gf[:10, :15] - ref / 255.0).max() < 0.01
    # odd sizes: the last row / column absorbs the remainder
    odd = tile_grid([img[:21, :31]] * 4, 2, kind="mask", size=(21, 31))
    assert [c.shape[:2] for c in untile_grid(odd, 2, 4)] == [(10, 15), (10, 16), (11, 15), (11, 16)]
    with pytest.raises(ValueError):
        tile_grid([img] * 5, 2)
