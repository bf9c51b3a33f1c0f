"""The region matcher and region assignment of multi-class queries (docs/training "Region matcher")."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from painter_seg import build_model
from painter_seg.apps.few_shot import FewShotSegmenter
from painter_seg.checkpoint import weights_fingerprint
from painter_seg.codec.assign import (
    AssignSettings,
    RegionPrototypes,
    assign_regions,
    prompt_prototypes,
    prompt_purity,
)
from painter_seg.codec.palette import distinct_palette
from painter_seg.errors import InputError
from painter_seg.model import SegGPT
from painter_seg.model.matcher import RegionMatcher, region_windows

MATCHER = ["net.region_matcher.pool=2", "net.region_matcher.widths=[8,8,16,16]", "net.region_matcher.extra=[0,0,1,1]",
           "net.region_matcher.num_classes=16", "net.region_matcher.window=64"]


def _tiny(matcher: bool = True, seed: int = 0) -> SegGPT:
    torch.manual_seed(seed)
    return build_model("seggpt_tiny", overrides=MATCHER if matcher else [], pretrained=False)


def test_region_windows_cut_around_the_centroid_at_the_pooled_scale():
    img = np.zeros((96, 96, 3), np.uint8)
    img[40:62, 20:42] = 200
    m = np.zeros((96, 96), bool)
    m[40:62, 20:42] = True
    pix, cov = region_windows(img, [m], window=64, pool=2)
    assert pix.shape == (1, 32, 32, 3) and cov.shape == (1, 32, 32) and cov.dtype == np.uint8
    assert int(cov.sum()) == 121 * 255  # 22 x 22 pixels = 11 x 11 full cells
    ys, xs = np.nonzero(cov[0])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (11, 21, 11, 21)  # centroid (50, 30) at pixel 32 of 64
    assert pix[0][cov[0] == 255].min() == 200 and pix[0][cov[0] == 0].max() == 0
    with pytest.raises(ValueError, match="an empty region"):
        region_windows(img, [np.zeros_like(m)])


def test_the_matcher_sits_beside_the_network_and_gives_family_distributions():
    model, plain = _tiny(), _tiny(matcher=False)
    state = model.state_dict()
    assert {k for k in state if k.startswith("matcher.")} == {
        *(f"matcher.body.{i}.{w}" for i in (0, 2, 4, 6, 8, 10) for w in ("weight", "bias")),
        "matcher.head.weight", "matcher.head.bias"}
    plain.load_state_dict({k: v for k, v in state.items() if not k.startswith("matcher.")}, strict=True)
    g = torch.Generator().manual_seed(1)
    imgs, tgts = torch.randn(1, 3, 448, 224, generator=g), torch.randn(1, 3, 448, 224, generator=g)
    with torch.no_grad():
        assert torch.equal(plain(imgs, tgts, plain.query_mask()), model(imgs, tgts, model.query_mask()))
    img = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    m1, m2 = np.zeros((96, 96), bool), np.zeros((96, 96), bool)
    m1[10:30, 10:30], m2[50:90, 40:60] = True, True
    with torch.no_grad():
        model.matcher.head.weight.normal_(0, 1.0, generator=g)
    p = model.matcher.describe(img, [m1, m2])
    assert p.shape == (2, 16) and np.allclose(p.sum(1), 1.0) and np.abs(p[0] - p[1]).max() > 1e-6
    assert model.matcher.describe(img, []).shape == (0, 16)
    one = model.matcher.describe(img, [m1, m2], turns=1)  # one view against the mean of eight
    assert np.allclose(one.sum(1), 1.0) and np.abs(one - p).max() > 1e-7
    with pytest.raises(ValueError, match="turns=0: expected 1..8"):
        model.matcher.describe(img, [m1], turns=0)
    # the painting's fingerprint (tuned prompts) ignores the matcher
    before = weights_fingerprint(model)
    with torch.no_grad():
        model.matcher.head.bias.add_(1.0)
    assert weights_fingerprint(model) == before
    with torch.no_grad():
        model.blocks[0].norm1.bias.add_(1.0)
    assert weights_fingerprint(model) != before


@pytest.mark.parametrize(("kw", "msg"), [
    ({"num_classes": 1}, r"num_classes 1 \(>= 2\)"),
    ({"window": 63, "pool": 2}, "window 63"),
])
def test_bad_matchers_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        RegionMatcher(**kw)
    with pytest.raises(ValueError, match=r"region_matcher: unknown keys \['depth'\]"):
        SegGPT(img_size=(64, 32), embed_dim=16, depth=2, num_heads=2, merge_index=0, feature_layers=[1],
               pretrain_img_size=32, region_matcher={"widths": [8], "depth": 2})


class _LeftRight:
    """A stand-in matcher: family 0 for regions on the left half, family 1 on the right (confident)."""

    num_classes = 2

    def describe(self, image, masks, turns=8):
        w = image.shape[1]
        return np.array([[0.95, 0.05] if np.nonzero(m)[1].mean() < w / 2 else [0.05, 0.95] for m in masks])


def _scene(paint_label: int = 1):
    """Two separate blobs, both painted (and decoded) as compact class ``paint_label``; output 64 x 64, paint 32."""
    pal = distinct_palette(2).astype(np.float32)
    labels = np.zeros((64, 64), np.int64)
    labels[20:40, 4:24] = 7 if paint_label == 1 else 9
    labels[20:40, 40:60] = 7 if paint_label == 1 else 9
    paint = np.zeros((32, 32, 3), np.float32)
    paint[10:20, 2:12] = pal[paint_label]
    paint[10:20, 20:30] = pal[paint_label]
    return labels, paint, pal


def test_assignment_lets_the_outline_decide_and_keeps_confident_paint_or_impure_prompts():
    labels, paint, pal = _scene()
    image = np.zeros((64, 64, 3), np.uint8)
    # prompt class 1 (id 7) has family 1 (right), class 2 (id 9) family 0 (left)
    protos = RegionPrototypes(np.array([[0.1, 0.9], [0.9, 0.1]]), purity=1.0)
    out = assign_regions(labels, paint, pal, [7, 9], image, _LeftRight(), protos, AssignSettings(weight=1.0))
    assert set(np.unique(out[20:40, 4:24])) == {9} and set(np.unique(out[20:40, 40:60])) == {7}
    assert np.array_equal(out == 0, labels == 0)  # the foreground is the painting's
    # the paint alone: nothing moves; half and half: the confident painting (exact colour) still wins
    for w in (0.0, 0.5):
        assert np.array_equal(assign_regions(labels, paint, pal, [7, 9], image, _LeftRight(), protos,
                                             AssignSettings(weight=w)), labels)
    # prompts whose regions mix classes, one class, regions under min_pixels: the labels as decoded
    impure = RegionPrototypes(protos.families, purity=0.4)
    assert assign_regions(labels, paint, pal, [7, 9], image, _LeftRight(), impure, AssignSettings(weight=1.0)) is labels
    assert assign_regions(labels, paint, pal[:2], [7], image, _LeftRight(), protos, AssignSettings(weight=1.0)) is labels
    big = AssignSettings(weight=1.0, min_pixels=101)  # each blob is 10 x 10 at the paint's scale
    assert assign_regions(labels, paint, pal, [7, 9], image, _LeftRight(), protos, big) is labels
    with pytest.raises(ValueError, match=r"weight 1.5 and min_purity 0.5 must be in \[0, 1\]"):
        AssignSettings(weight=1.5)
    with pytest.raises(ValueError, match="turns 9 in 1..8"):
        AssignSettings(turns=9)


def test_prompt_purity_and_prototypes():
    sep = np.zeros((32, 32), np.int64)
    sep[2:12, 2:12], sep[20:30, 20:30] = 1, 2
    parts = np.zeros((32, 32), np.int64)  # three parts of one object: only the largest is its region's commonest
    parts[5:25, 5:15], parts[5:25, 15:21], parts[5:25, 21:25] = 1, 2, 3
    touching = sep.copy()
    touching[12:20, 8:12] = 2  # 32 pixels of class 2 touch class 1's square, where class 1 is the commonest
    assert prompt_purity([sep]) == 1.0
    assert prompt_purity([parts]) == pytest.approx(1 / 3)
    assert prompt_purity([touching]) == pytest.approx((1.0 + 100 / 132) / 2)
    assert prompt_purity([np.zeros((8, 8), np.int64)]) == 0.0
    assert prompt_purity([sep, parts]) == pytest.approx((1.0 + 100 / 220 + 0) / 3)  # pixels summed over prompts
    protos = prompt_prototypes(_LeftRight(), [np.zeros((32, 32, 3), np.uint8)], [sep], num_labels=3, min_pixels=10)
    assert np.allclose(protos.families, [[0.95, 0.05], [0.05, 0.95], [0.5, 0.5]]) and protos.purity == 1.0


def test_the_few_shot_predictor_assigns_semantic_classes_only_with_a_matcher():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.int64)
    mask[5:25, 5:25], mask[35:60, 30:60] = 3, 5
    seg = FewShotSegmenter(_tiny())
    assert seg.assign == AssignSettings() and seg.assign.weight == 0.7
    seg.set_prompts([img], [mask])
    assert seg.prototypes is not None and seg.prototypes.families.shape == (2, 16) and seg.prototypes.purity == 1.0
    out = seg.predict(img)
    assert out.labels.shape == (64, 64) and set(np.unique(out.labels)) <= {0, 3, 5}
    seg.set_prompts([img], [mask], seg_type="instance")
    assert seg.prototypes is None  # instances: the painting's call
    seg.set_prompts([img], [(mask > 0).astype(np.int64)], seg_type="semantic")
    assert seg.prototypes is None  # one class: nothing to choose
    assert FewShotSegmenter(_tiny(), assign="none").assign is None
    assert FewShotSegmenter(_tiny(matcher=False)).assign is None
    with pytest.raises(InputError, match="assign: the model 'seggpt_tiny' has no region matcher"):
        FewShotSegmenter(_tiny(matcher=False), assign=AssignSettings())
    with pytest.raises(InputError, match="assign=always: expected auto, none or AssignSettings"):
        FewShotSegmenter(_tiny(), assign="always")


def test_matcher_pretraining_keeps_its_head_and_a_spent_stem_run_becomes_a_matcher(tmp_path):
    from painter_seg.training.stem_pretrain import StemPretrainConfig, pretrain_stem

    cfg = StemPretrainConfig(episodes=12, window=64, shift=8, batch_size=8, max_epochs=1, max_minutes=None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = _tiny().state_dict()
        res = pretrain_stem(_tiny(), cfg, tmp_path / "m", progress=False, target="matcher")
        assert res["epoch"] == 1
        once = load_file(str(tmp_path / "m" / "model.safetensors"))
        moved = {k for k in once if not torch.equal(once[k], start[k])}
        assert "matcher.head.weight" in moved and all(k.startswith("matcher.") for k in moved)
        # a resumed run with nothing left to train writes the same weights again
        (tmp_path / "m" / "model.safetensors").unlink()
        res2 = pretrain_stem(_tiny(), cfg, tmp_path / "m", resume=True, progress=False, target="matcher")
        again = load_file(str(tmp_path / "m" / "model.safetensors"))
        assert all(torch.equal(once[k], again[k]) for k in once)
        assert res2["epoch"] == 1 and res2["heldout_acc"] == pytest.approx(res["heldout_acc"], abs=1e-4)  # from the log
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(InputError, match=r"the model has no region_matcher to pretrain \(set net.region_matcher"):
        pretrain_stem(_tiny(matcher=False), cfg, tmp_path / "x", progress=False, target="matcher")
    with pytest.raises(InputError, match="target='head': expected stem or matcher"):
        pretrain_stem(_tiny(), cfg, tmp_path / "x", progress=False, target="head")


def test_composites_tool_scores_both_rows_and_reports_bad_folders_in_one_line(tmp_path, capsys):
    import runpy

    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.jpg")
            m = np.zeros((40, 50), np.uint8)
            m[5:30, 10:40] = 255
            Image.fromarray(m).save(tmp_path / c / f"{i}.png")
    tool = runpy.run_path(str(Path(__file__).resolve().parents[1] / "tools" / "evaluate_composites.py"))
    assert tool["main"](["--root", str(tmp_path), "--classes", "a,b", "--episodes", "2", "--model", "seggpt_tiny"]) == 0
    out = capsys.readouterr().out
    assert "assign=auto: mIoU" in out and "assign=none: mIoU" in out and "over 2 two-class composites" in out
    assert tool["main"](["--root", str(tmp_path), "--classes", "a,zz", "--model", "seggpt_tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [(f"error: {tmp_path}: need two or more classes with two or more image + mask pairs each "
                    "(too few: ['zz'])")]


def test_a_tuned_prompt_alone_keeps_its_painted_classes_and_real_pairs_with_it_give_outlines():
    """A tuned prompt learned to paint its scene: alone it is decoded by its colours (on the generated 2-class scene
    outlines read off the learned pair cost 2.3 points, docs/prompt_tuning); real pairs given with it feed the matcher."""
    from painter_seg.codec.canvas import images_to_tensor, labels_to_tensor
    from painter_seg.codec.palette import make_palette
    from painter_seg.tuning.artifact import TunedPrompt

    model = _tiny()
    h, w = model.half_size
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    compact = np.zeros((h, w), np.int64)
    compact[10:60, 10:60], compact[120:200, 100:200] = 1, 2
    pal = make_palette(model.palette, 2)
    prompt = TunedPrompt(image=images_to_tensor([img], (h, w))[0], mask=labels_to_tensor([compact], pal, (h, w))[0],
                         palette=pal, class_ids=[3, 5], class_names=["a", "b"], seg_type="semantic",
                         model_name="seggpt_tiny", fingerprint="")
    seg = FewShotSegmenter(model, strategy="tuned")
    seg.set_tuned_prompt(prompt, check=False)
    assert seg.prototypes is None
    seg.set_tuned_prompt(prompt, [img], [np.where(compact == 1, 3, np.where(compact == 2, 5, 0))], check=False)
    assert seg.prototypes is not None and seg.prototypes.families.shape == (2, 16) and seg.prototypes.purity == 1.0
