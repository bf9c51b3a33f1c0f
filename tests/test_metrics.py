"""Metrics: mIoU / FB-IoU / few-shot meter, DAVIS J&F (values computed by hand), evaluate_vos."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from painter_seg.errors import InputError
from painter_seg.evaluation import (
    SUMMARY_KEYS,
    ConfusionMatrix,
    FewShotMeter,
    binary_iou,
    bound_pixels,
    boundary_f_measure,
    db_statistics,
    disk,
    evaluate_sequence,
    evaluate_vos,
    read_index_mask,
    region_similarity,
    seg2bmap,
    summarize,
)
from painter_seg.io.masks import davis_palette

DAVIS2016 = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis2016"


# ------------------------------------------------------------------------------------- helpers


def square(shape, r0, r1, c0, c1, value=1):
    """uint8 map with ``value`` on rows r0..r1 and columns c0..c1 (inclusive)."""
    m = np.zeros(shape, np.uint8)
    m[r0:r1 + 1, c0:c1 + 1] = value
    return m


def save_palette_png(path: Path, index_map: np.ndarray) -> None:
    img = Image.fromarray(index_map.astype(np.uint8), mode="P")
    img.putpalette(davis_palette().ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


# ------------------------------------------------------------------------------ building blocks


def test_disk_is_x2_plus_y2_le_r2():
    assert disk(0).tolist() == [[1]]
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    d2 = disk(2)
    # rows y=0: |x|<=2 -> 5; y=+-1: x^2<=3 -> 3 each; y=+-2: x=0 -> 1 each => 13
    assert d2.shape == (5, 5) and d2.sum() == 13
    assert d2[0].tolist() == [0, 0, 1, 0, 0]


def test_bound_pixels():
    # 100x100: diagonal 141.42 * 0.008 = 1.131 -> ceil = 2
    assert bound_pixels((100, 100)) == 2
    # DAVIS 480p: sqrt(480^2 + 854^2) = 979.6 * 0.008 = 7.84 -> 8
    assert bound_pixels((480, 854)) == 8
    assert bound_pixels((100, 100), bound_th=3) == 3  # >= 1 means pixels


def test_seg2bmap_rectangle_outline():
    # rectangle rows 3..5 (h=3), cols 2..6 (w=5): boundary = outline of rows 2..5 x cols 1..6,
    # half a pixel towards the origin; 2h + 2w = 16 pixels
    seg = square((10, 10), 3, 5, 2, 6)
    expected = np.zeros((10, 10), bool)
    expected[2:6, 1:7] = True
    expected[3:5, 2:6] = False
    b = seg2bmap(seg)
    assert np.array_equal(b, expected)
    assert b.sum() == 16


# ------------------------------------------------------------------------------------------- J


def test_region_similarity_shifted_square():
    # gt: 20x20 square rows/cols 20..39 (400 px); pred shifted right by 5 -> cols 25..44
    # intersection 20 x 15 = 300, union 400 + 400 - 300 = 500 -> J = 0.6
    gt = square((100, 100), 20, 39, 20, 39)
    pred = square((100, 100), 20, 39, 25, 44)
    assert region_similarity(gt, pred) == pytest.approx(0.6)
    assert region_similarity(gt, np.zeros_like(gt)) == 0.0
    assert region_similarity(np.zeros_like(gt), np.zeros_like(gt)) == 1.0  # both empty -> 1


# ------------------------------------------------------------------------------------------- F


def test_boundary_tolerance_is_bound_pix():
    # 100x100 => bound_pix = 2. gt = columns 0..49 of every row; its seg2bmap boundary is column 49
    # (100 px). pred = columns 0..51 -> boundary column 51, 2 px away: every boundary pixel matches,
    # P = R = 1 -> F = 1. pred = columns 0..52 -> boundary column 52, 3 px away: P = R = 0 -> F = 0.
    gt = square((100, 100), 0, 99, 0, 49)
    assert np.flatnonzero(seg2bmap(gt).any(0)).tolist() == [49]
    shift2 = square((100, 100), 0, 99, 0, 51)
    shift3 = square((100, 100), 0, 99, 0, 52)
    assert boundary_f_measure(gt, shift2) == pytest.approx(1.0)
    assert boundary_f_measure(gt, shift3) == 0.0
    # J of the same pair: 50 / 52 and 50 / 53
    assert region_similarity(gt, shift2) == pytest.approx(50 / 52)
    assert region_similarity(gt, shift3) == pytest.approx(50 / 53)


def test_boundary_partial_match():
    # gt boundary: column 49, rows 0..99 (100 px).
    # pred: columns 0..52 on rows 0..49, columns 0..49 on rows 50..99. Its boundary:
    #   column 52 rows 0..49 (50 px), row 49 columns 49..51 (3 px), column 49 rows 50..99 (50 px)
    #   => 103 px
    # precision: column 52 is 3 px from column 49 -> unmatched; the 3 + 50 others match -> 53 / 103
    # recall: gt rows 50..99 lie on pred pixels (50); rows 47..49 are within 2 px of (49, 49) (3);
    #   rows 0..46 are >= 3 px from every pred pixel -> 53 / 100
    # F = 2PR / (P + R) = 2 * 53 / (103 + 100) = 106 / 203
    gt = square((100, 100), 0, 99, 0, 49)
    pred = square((100, 100), 0, 49, 0, 52) | square((100, 100), 50, 99, 0, 49)
    assert seg2bmap(pred).sum() == 103
    assert boundary_f_measure(gt, pred) == pytest.approx(106 / 203)


def test_boundary_tolerance_is_a_disk_not_a_square():
    # 100x100 => bound_pix = 2. A one-pixel object at (r, c) has the 2x2 boundary rows r-1..r x cols c-1..c.
    # gt at (50, 50): boundary {49, 50} x {49, 50}. pred 2 px straight down, at (52, 50): boundary
    # {51, 52} x {49, 50}; each gt boundary pixel has a pred one exactly 2 px below -> P = R = 1, F = 1.
    # pred 2 px down and 2 px right, at (52, 52): boundary {51, 52} x {51, 52}. Only gt (50, 50) and pred
    # (51, 51) are within 2 px (sqrt 2); every other pair is >= sqrt 5 apart (a 5x5 square would still match
    # all of them at Chebyshev distance <= 2) -> P = R = 1/4, F = 1/4.
    gt = square((100, 100), 50, 50, 50, 50)
    assert np.argwhere(seg2bmap(gt)).tolist() == [[49, 49], [49, 50], [50, 49], [50, 50]]
    assert boundary_f_measure(gt, square((100, 100), 52, 52, 50, 50)) == pytest.approx(1.0)
    assert boundary_f_measure(gt, square((100, 100), 52, 52, 52, 52)) == pytest.approx(0.25)


def test_boundary_empty_cases():
    z = np.zeros((50, 50), np.uint8)
    m = square((50, 50), 10, 20, 10, 20)
    assert boundary_f_measure(z, z) == 1.0  # both empty
    assert boundary_f_measure(m, z) == 0.0  # no predicted boundary
    assert boundary_f_measure(z, m) == 0.0  # no gt boundary
    assert boundary_f_measure(m, m) == 1.0


def test_void_pixels_are_excluded():
    # gt: 10x10 square (100 px); pred: the same square plus a 4x5 block (20 px) lying in void
    gt = square((60, 60), 10, 19, 10, 19)
    extra = square((60, 60), 40, 43, 40, 44)
    pred = gt | extra
    void = extra.astype(bool)
    assert region_similarity(gt, pred) == pytest.approx(100 / 120)  # without void: 100 / 120
    assert region_similarity(gt, pred, void) == 1.0  # the extra block is void
    assert boundary_f_measure(gt, pred) < 1.0
    assert boundary_f_measure(gt, pred, void) == 1.0


# -------------------------------------------------------------------------------- statistics


def test_db_statistics_nine_frames():
    x = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    mean, recall, decay = db_statistics(x)
    assert mean == pytest.approx(5.4 / 9)  # sum = 5.4
    assert recall == pytest.approx(5 / 9)  # 1.0 .. 0.6 are > 0.5; 0.5 is not
    # linspace(1, 9, 5) = [1, 3, 5, 7, 9] -> ids [0, 2, 4, 6, 8]; bin 0 = x[0:3], bin 3 = x[6:9]
    assert decay == pytest.approx(0.9 - 0.3)


def test_db_statistics_binning_rounds_half_up():
    # n = 7: linspace(1, 7, 5) = [1, 2.5, 4, 5.5, 7]; +1e-10 makes 2.5 -> 3 and 5.5 -> 6 (plain
    # np.round would give 2 and 6) -> ids [0, 2, 3, 5, 6]: bin 0 = x[0:3], bin 3 = x[5:7]
    x = [1.0, 0.8, 0.6, 0.5, 0.4, 0.2, 0.0]
    mean, recall, decay = db_statistics(x)
    assert mean == pytest.approx(3.5 / 7)
    assert recall == pytest.approx(3 / 7)
    assert decay == pytest.approx((1.0 + 0.8 + 0.6) / 3 - (0.2 + 0.0) / 2)  # 0.8 - 0.1 = 0.7


def test_sequence_excludes_first_and_last_frames_and_bins():
    # 9 frames, one object. Frame 0 defines the object; frames 1..3 predicted perfectly, frames 4..7
    # predicted empty; frame 8 (last) garbage but not scored. Scored J = [1, 1, 1, 0, 0, 0, 0]:
    # mean = recall = 3/7; ids [0, 2, 3, 5, 6] -> bin 0 = [1, 1, 1], bin 3 = [0, 0] -> decay = 1.
    obj = square((40, 40), 10, 29, 10, 29)
    gt = [obj] * 9
    pred = [np.zeros_like(obj)] + [obj] * 3 + [np.zeros_like(obj)] * 4 + [np.ones_like(obj)]
    (res,) = evaluate_sequence(gt, pred, sequence="s")
    assert res.J.tolist() == [1, 1, 1, 0, 0, 0, 0]
    s = res.stats()
    assert s["J-Mean"] == pytest.approx(3 / 7)
    assert s["J-Recall"] == pytest.approx(3 / 7)
    assert s["J-Decay"] == pytest.approx(1.0)
    assert s["F-Mean"] == pytest.approx(3 / 7)  # empty prediction -> F = 0, exact one -> F = 1
    # the first and last predictions are never read
    pred2 = [None] + pred[1:-1] + [None]
    assert evaluate_sequence(gt, pred2)[0].J.tolist() == res.J.tolist()


def test_sequence_objects_from_first_frame_missing_object_and_void():
    a = square((40, 40), 2, 11, 2, 11, 1)
    b = square((40, 40), 20, 29, 20, 29, 2)
    c = square((40, 40), 30, 35, 2, 8, 3)
    first = a + b
    later = a + b + c  # object 3 appears later: not scored
    gt = [first, later, later, later, first]
    pred = [first, a, a, a, first]  # object 2 never predicted -> J = 0, F = 0 on frames 1..3
    res = evaluate_sequence(gt, pred, sequence="s")
    assert [r.object_id for r in res] == [1, 2]
    assert res[0].stats()["J-Mean"] == 1.0 and res[0].stats()["F-Mean"] == 1.0
    assert res[1].stats()["J-Mean"] == 0.0 and res[1].stats()["F-Mean"] == 0.0
    summary = summarize(res)
    assert summary["J-Mean"] == pytest.approx(0.5)
    assert summary["J&F-Mean"] == pytest.approx(0.5)
    assert list(summary) == list(SUMMARY_KEYS)
    # a predicted id above the first frame's object count is an error (the official tool aborts)
    bad = [first, later, later, later, first]
    with pytest.raises(InputError, match="predicted object id 3"):
        evaluate_sequence(gt, bad, sequence="s")
    ok = evaluate_sequence(gt, bad, sequence="s", ignore_extra_ids=True)
    assert ok[1].stats()["J-Mean"] == 1.0
    # void (255) in the ground truth: prediction inside void is not penalised
    gt_void = [f.copy() for f in gt]
    for f in gt_void[1:4]:
        f[30:36, 30:36] = 255
    pred_void = [f.copy() for f in [first, first, first, first, first]]
    for f in pred_void:
        f[30:36, 30:36] = 1  # object 1 spills into the void area only
    res_v = evaluate_sequence(gt_void, pred_void)
    assert res_v[0].stats()["J-Mean"] == 1.0 and res_v[0].stats()["F-Mean"] == 1.0


def test_sequence_too_short_and_size_mismatch():
    m = square((20, 20), 5, 10, 5, 10)
    with pytest.raises(InputError, match="at least 3"):
        evaluate_sequence([m, m], [m, m], sequence="short")
    with pytest.raises(InputError, match="differs"):
        evaluate_sequence([m, m, m], [m, m[:, :19], m], sequence="s")


# ---------------------------------------------------------------------------------- evaluate_vos


def _make_vos(root: Path, seqs: dict) -> None:
    for name, frames in seqs.items():
        for t, f in enumerate(frames):
            save_palette_png(root / name / f"{t:05d}.png", f)


def _toy_sequences():
    a = square((48, 64), 5, 20, 5, 25, 1)
    b = square((48, 64), 25, 40, 30, 55, 2)
    seq_a = [a + b, a + np.roll(b, 2, axis=1), np.roll(a, 1, axis=0) + b, a + b, a + b]
    seq_b = [a, np.roll(a, 3, axis=1), np.roll(a, 6, axis=1), a]
    return {"alpha": seq_a, "beta": seq_b}


def test_evaluate_vos_perfect_prediction(tmp_path):
    gt, pred, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    seqs = _toy_sequences()
    _make_vos(gt, seqs)
    _make_vos(pred, seqs)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    summary = evaluate_vos(pred, gt, out)
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if out not in p.parents)
    assert [p for p in after if p != Path("out")] == before  # nothing written into pred or gt
    data = json.loads((out / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        assert key in data
    for key in ("J&F-Mean", "J-Mean", "J-Recall", "F-Mean", "F-Recall"):
        assert data[key] == pytest.approx(1.0)
    assert data["J-Decay"] == pytest.approx(0.0) and data["F-Decay"] == pytest.approx(0.0)
    assert data["num_sequences"] == 2 and data["num_objects"] == 3
    assert summary["J&F-Mean"] == pytest.approx(1.0)
    rows = list(csv.DictReader((out / "per_sequence.csv").open()))
    assert [(r["sequence"], r["object"]) for r in rows] == [
        ("alpha", "1"), ("alpha", "2"), ("alpha", "mean"), ("beta", "1"), ("beta", "mean")]
    assert all(float(r["J-Mean"]) == 1.0 and float(r["F-Mean"]) == 1.0 for r in rows)
    assert not list(out.glob("*.tmp"))


def test_evaluate_vos_imperfect_and_single_sequence(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    seqs = _toy_sequences()
    _make_vos(gt, seqs)
    bad = {k: [f.copy() for f in v] for k, v in seqs.items()}
    bad["beta"][1] = np.zeros_like(bad["beta"][1])  # object 1 lost on frame 1 of beta
    _make_vos(pred, bad)
    summary = evaluate_vos(pred, gt, tmp_path / "out")
    # objects: alpha 1, alpha 2 (J-Mean 1), beta 1 (J = [0, 1] -> 0.5): J-Mean = 2.5 / 3
    assert summary["J-Mean"] == pytest.approx(2.5 / 3)
    # one sequence folder on both sides
    single = evaluate_vos(pred / "beta", gt / "beta", tmp_path / "out_single")
    assert single["J-Mean"] == pytest.approx(0.5) and single["num_sequences"] == 1
    # DAVIS-2016 style 'L' 0/255 ground truth against palette predictions
    l_gt = tmp_path / "gt_l" / "beta"
    l_gt.mkdir(parents=True)
    for t, f in enumerate(seqs["beta"]):
        Image.fromarray((f > 0).astype(np.uint8) * 255, mode="L").save(l_gt / f"{t:05d}.png")
    assert evaluate_vos(pred / "beta", l_gt, tmp_path / "out_l")["J-Mean"] == pytest.approx(0.5)


def test_evaluate_vos_errors(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    seqs = _toy_sequences()
    _make_vos(gt, seqs)
    _make_vos(pred, seqs)
    (pred / "alpha" / "00002.png").unlink()
    with pytest.raises(InputError) as err:
        evaluate_vos(pred, gt, tmp_path / "out")
    msg = str(err.value)
    assert msg.startswith(str(pred / "alpha" / "00002.png")) and "\n" not in msg
    save_palette_png(pred / "alpha" / "00002.png", np.zeros((40, 64), np.uint8))
    with pytest.raises(InputError, match="differs from the ground truth"):
        evaluate_vos(pred, gt, tmp_path / "out")
    with pytest.raises(InputError, match="inside the ground-truth folder"):
        evaluate_vos(pred, gt, gt / "report")
    with pytest.raises(InputError, match="predicted sequence missing"):
        evaluate_vos(_partial(tmp_path, seqs), gt, tmp_path / "out")
    with pytest.raises(InputError, match="not found"):
        evaluate_vos(tmp_path / "nope", gt, tmp_path / "out")
    assert not (tmp_path / "out" / "summary.json").exists()


def _partial(tmp_path: Path, seqs: dict) -> Path:
    root = tmp_path / "pred_partial"
    _make_vos(root, {"alpha": seqs["alpha"]})
    return root


def test_read_index_mask_modes(tmp_path):
    idx = np.array([[0, 1, 2], [3, 255, 0]], np.uint8)
    save_palette_png(tmp_path / "p.png", idx)
    assert np.array_equal(read_index_mask(tmp_path / "p.png"), idx)
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8), mode="L").save(tmp_path / "l.png")
    assert read_index_mask(tmp_path / "l.png").tolist() == [[0, 1], [1, 0]]
    rgb = davis_palette()[idx]  # colour-coded DAVIS mask
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.png")
    assert np.array_equal(read_index_mask(tmp_path / "rgb.png"), idx)
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "odd.png")
    with pytest.raises(InputError, match="not a DAVIS palette colour"):
        read_index_mask(tmp_path / "odd.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read mask"):
        read_index_mask(tmp_path / "broken.png")


@pytest.mark.skipif(not DAVIS2016.is_dir(), reason="shared/data/davis2016 not present")
def test_evaluate_vos_real_davis2016_gt_vs_gt(tmp_path):
    gt = DAVIS2016 / "Annotations" / "480p" / "car-shadow"
    summary = evaluate_vos(gt, gt, tmp_path / "out")
    assert summary["J&F-Mean"] == pytest.approx(1.0) and summary["num_objects"] == 1


# ------------------------------------------------------------------------------ mIoU / few-shot


def test_confusion_matrix_miou_fbiou():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 2]])
    # valid (gt, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0); the two 255 pixels are skipped
    # class 0: TP 1, gt 2, pred 2 -> 1 / 3;  class 1: TP 2, gt 2, pred 3 -> 2 / 3
    # class 2: TP 1, gt 2, pred 1 -> 1 / 2;  mIoU = (1/3 + 2/3 + 1/2) / 3 = 0.5
    # binary: bg TP 1, gt 2, pred 2 -> 1/3; fg TP 3, gt 4, pred 4 -> 3/5; FB-IoU = (1/3 + 3/5) / 2
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    assert np.allclose(cm.iou(), [1 / 3, 2 / 3, 1 / 2])
    assert cm.miou() == pytest.approx(0.5)
    assert cm.fb_iou() == pytest.approx(7 / 15)
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)
    cm.update(pred, gt)  # accumulating the same pair twice leaves the ratios unchanged
    assert cm.miou() == pytest.approx(0.5)
    with pytest.raises(InputError):
        cm.update(np.array([[5]]), np.array([[0]]))
    with pytest.raises(InputError):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))


def test_few_shot_meter_sums_per_class():
    m = FewShotMeter()
    # ep1 (a): gt fg 0..3, pred fg 0..1 -> fg I 2 U 4; bg: gt {4..7}, pred {2..7} -> I 4 U 6
    e1 = m.update("a", np.array([1, 1, 0, 0, 0, 0, 0, 0]), np.array([1, 1, 1, 1, 0, 0, 0, 0]))
    # ep2 (a): gt fg 0..5, pred fg 0..1 -> fg I 2 U 6; bg: gt {6, 7}, pred {2..7} -> I 2 U 6
    m.update("a", np.array([1, 1, 0, 0, 0, 0, 0, 0]), np.array([1, 1, 1, 1, 1, 1, 0, 0]))
    # ep3 (b): gt fg 0..5, index 7 ignored, pred all fg -> fg I 6 U 7;
    #          bg: gt {6}, pred {} -> I 0 U 1
    m.update("b", np.ones(8, int), np.array([1, 1, 1, 1, 1, 1, 0, 255]))
    assert e1 == pytest.approx(0.5)
    ious = m.class_iou()
    assert ious["a"] == pytest.approx((2 + 2) / (4 + 6))  # 0.4, not the mean of 1/2 and 1/3
    assert ious["b"] == pytest.approx(6 / 7)
    assert m.miou() == pytest.approx((0.4 + 6 / 7) / 2)
    assert m.fb_iou() == pytest.approx((10 / 17 + 6 / 13) / 2)  # fg 10/17, bg 6/13
    s = m.summary()
    assert s["episodes"] == 3 and s["per_class_episodes"] == {"a": 2, "b": 1}


def test_binary_iou():
    assert binary_iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    gt = np.array([[1, 1, 0], [0, 255, 255]])
    pred = np.array([[1, 0, 0], [1, 1, 1]])
    # valid pixels: first row + (1, 0); fg I = 1, U = |{(0,0), (0,1), (1,0)}| = 3
    assert binary_iou(pred, gt) == pytest.approx(1 / 3)
    # without an ignore index 255 is foreground: gt fg 4 px, pred fg 4 px, I = 3 -> 3 / 5
    assert binary_iou(pred.astype(bool), gt, ignore_index=None) == pytest.approx(3 / 5)


def test_linear_probe_reads_what_features_hold():
    from painter_seg.evaluation.probe import fit_linear_probe

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    train = np.arange(400) < 300
    informative = np.eye(4)[y] * 3 + rng.normal(0, 0.3, (400, 4))
    noise = rng.normal(0, 1, (400, 8))
    assert fit_linear_probe(informative, y, train, 4)[1] == 1.0
    assert fit_linear_probe(noise, y, train, 4)[1] < 0.4  # chance 0.25


def test_family_probe_reports_every_feature_layer(tiny_model):
    from painter_seg.evaluation.probe import family_probe, format_probe

    out = family_probe(tiny_model, episodes=8)
    assert out["objects"] > 8 and 0 < out["majority"] <= 1
    assert sorted(out["layers"]) == sorted(tiny_model.feature_layers)
    assert all(0 <= v["heldout"] <= 1 and 0 <= v["train"] <= 1 for v in out["layers"].values())
    assert "commonest family" in format_probe(out)


def test_probe_tool_rejects_too_few_episodes(capsys):
    import runpy

    tool = runpy.run_path(str(Path(__file__).resolve().parents[1] / "tools" / "probe_families.py"))
    assert tool["main"](["--episodes", "2"]) == 2
    assert capsys.readouterr().err.strip() == "error: --episodes=2: expected at least 4"
