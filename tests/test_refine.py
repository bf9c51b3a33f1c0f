"""Edge-aware refinement of the painted mask (painter_seg.codec.refine)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from painter_seg.codec import (
    GuidedRefine,
    build_palette,
    decode_paint,
    guided_filter,
    resolve_refine,
)
from painter_seg.codec.refine import refine_decode
from painter_seg.errors import InputError
from tests.conftest import run_cli


def _scene(h: int = 96, w: int = 96, edge: int = 41):
    """A dark object on the left up to column ``edge`` (a colour edge between two 12 px patches), bright
    background right of it; and a blocky paint whose object ends on the patch boundary at column 36."""
    rng = np.random.default_rng(0)
    image = np.full((h, w, 3), 200, np.uint8)
    image[:, :edge] = (40, 60, 30)
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    palette = build_palette(1)
    paint = np.empty((8, 8, 3), np.float32)
    paint[:] = palette[0]
    paint[:, :3] = palette[1]  # 3 of 8 patches: columns 0..35 at 96 px
    return image, paint, palette


def _boundary(labels: np.ndarray) -> float:
    """Mean column where the object (id 1) ends, over the rows."""
    return float(np.mean([np.flatnonzero(row == 1).max() + 1 for row in labels]))


def test_refinement_moves_the_mask_edge_onto_the_image_edge():
    image, paint, palette = _scene()
    plain, _ = decode_paint(cv2.resize(paint, (96, 96), interpolation=cv2.INTER_LINEAR), palette)
    labels, scores = refine_decode(paint, palette, image, (96, 96), (8, 8), GuidedRefine())
    assert abs(_boundary(plain) - 36) <= 1          # the blocky edge, on the patch boundary
    assert abs(_boundary(labels) - 41) <= 1         # refined: on the colour edge, 5 px away
    assert scores.dtype == np.float32 and 0.0 <= scores.min() and scores.max() <= 1.0
    assert labels.shape == (96, 96) and set(np.unique(labels)) == {0, 1}


def test_refinement_applies_at_full_size_from_a_smaller_working_size():
    image, paint, palette = _scene(384, 384, edge=164)
    labels, _ = refine_decode(paint, palette, image, (384, 384), (8, 8), GuidedRefine(max_side=96))
    assert labels.shape == (384, 384)
    assert abs(_boundary(labels) - 164) <= 4        # one working pixel is 4 full-size pixels


def test_refinement_decodes_at_another_size_than_the_image():
    image, paint, palette = _scene()
    labels, scores = refine_decode(paint, palette, image, (48, 64), (8, 8), GuidedRefine())
    assert labels.shape == (48, 64) and scores.shape == (48, 64)


def test_bg_threshold_turns_weak_foreground_into_background():
    image, paint, palette = _scene()
    paint[:, 3] = (np.asarray(palette[0], np.float32) + palette[1]) / 2  # an undecided patch column
    strict, s_scores = refine_decode(paint, palette, image, (96, 96), (8, 8), GuidedRefine(), bg_threshold=0.99)
    loose, _ = refine_decode(paint, palette, image, (96, 96), (8, 8), GuidedRefine())
    assert (strict == 1).sum() < (loose == 1).sum()
    assert np.all(s_scores[strict == 1] >= 0.99)


def test_guided_filter_keeps_a_constant_and_checks_shapes():
    guide = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    out = guided_filter(guide, np.full((2, 20, 30), 0.25, np.float32), radius=3, eps=1e-3)
    assert out.shape == (2, 20, 30)
    np.testing.assert_allclose(out, 0.25, atol=1e-4)
    with pytest.raises(ValueError, match="one size"):
        guided_filter(guide, np.zeros((2, 10, 30), np.float32), radius=3, eps=1e-3)


def test_auto_refines_coarse_grids_only():
    assert resolve_refine("auto", (8, 8)) == GuidedRefine()          # painter_small: 8 x 8 patches a half (seggpt_tiny: 14)
    assert resolve_refine("auto", (28, 28)) is None                 # ViT-L: the reference's decode
    assert resolve_refine("guided", (28, 28)) == GuidedRefine()
    assert resolve_refine("none", (8, 8)) is None
    settings = GuidedRefine(radius=0.5)
    assert resolve_refine(settings, (8, 8)) is settings
    with pytest.raises(InputError, match=r"^refine=sharp: expected one of auto, guided, none "):
        resolve_refine("sharp", (8, 8))
    assert resolve_refine({"radius": 1.5, "eps": 0.01}, (8, 8)) == GuidedRefine(radius=1.5, eps=0.01)
    with pytest.raises(InputError, match=r"^refine: unknown setting\(s\) \['rad'\]; known: \['eps', 'max_side', "
                                         r"'radius'\]$"):
        resolve_refine({"rad": 1}, (8, 8))
    with pytest.raises(InputError, match="radius and eps must be > 0"):
        resolve_refine({"eps": 0}, (8, 8))
    with pytest.raises(ValueError, match="radius and eps must be > 0"):
        GuidedRefine(eps=0)


def test_a_bad_refine_setting_is_one_error_line(tmp_path):
    r = run_cli("evaluate", "task=few_shot", "data=synthetic", "data.episodes=1", "model=seggpt_tiny",
                "refine=sharp", f"output_dir={tmp_path}")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "error: refine=sharp: expected one of auto, guided, none (or settings such as {radius: 1.0, eps: 0.003})")


def test_segmenter_refines_by_default_and_none_is_the_plain_decode(tiny_model):
    from painter_seg.apps.few_shot import FewShotSegmenter
    from painter_seg.codec import paint_to_labels

    image, _, _ = _scene()
    mask = np.zeros((96, 96), np.int64)
    mask[:, :41] = 1
    plain = FewShotSegmenter(tiny_model, refine="none")
    refined = FewShotSegmenter(tiny_model)
    assert plain.refine is None and refined.refine == GuidedRefine()
    for seg in (plain, refined):
        seg.set_prompts([image], [mask])
    paint = plain.strategy.paint([image], "fp32", 1)[0]
    want, _, _ = paint_to_labels(paint, plain.palette, plain.ids, (96, 96))
    np.testing.assert_array_equal(plain.predict(image).labels, want)
    want_r, _, _ = paint_to_labels(paint, refined.palette, refined.ids, (96, 96), image=image,
                                   refine=GuidedRefine(), grid=refined.grid)
    np.testing.assert_array_equal(refined.predict(image).labels, want_r)


def test_the_torch_guided_filter_is_the_numpy_one():
    import torch

    from painter_seg.codec.refine import guided_filter, guided_filter_torch

    rng = np.random.default_rng(0)
    guide = rng.random((40, 56, 3)).astype(np.float32)
    srcs = rng.random((3, 40, 56)).astype(np.float32)
    for r in (1, 5, 16):
        want = guided_filter(guide, srcs, r, 3e-3)
        got = guided_filter_torch(torch.from_numpy(guide).permute(2, 0, 1)[None], torch.from_numpy(srcs)[None],
                                  r, 3e-3)[0].numpy()
        assert np.abs(got - want).max() < 1e-4
    with pytest.raises(ValueError, match="radius < H, W"):
        guided_filter_torch(torch.zeros(1, 3, 8, 8), torch.zeros(1, 2, 8, 8), 8, 3e-3)


def test_decoded_cross_entropy_is_the_decode_s_own_score():
    import torch

    from painter_seg.codec import build_palette, decode_paint_scores
    from painter_seg.model.loss import decoded_cross_entropy

    palette = build_palette(2)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, (1, 12, 16))
    paint = palette[labels[0]].astype(np.float32) + rng.normal(0, 40, (12, 16, 3)).astype(np.float32)
    probs = decode_paint_scores(paint, palette)  # [3, 12, 16]
    want = -np.log(np.take_along_axis(probs, labels, 0).clip(1e-6)).mean()
    from painter_seg.codec.canvas import normalize_tensor

    x = normalize_tensor(torch.from_numpy(paint / 255.0).permute(2, 0, 1)[None].float()).requires_grad_()
    got = decoded_cross_entropy(x, torch.from_numpy(labels), palette)
    assert float(got.detach()) == pytest.approx(float(want), rel=1e-3)
    got.backward()
    assert float(x.grad.abs().sum()) > 0
    exact = normalize_tensor(torch.from_numpy(palette[labels[0]] / 255.0).permute(2, 0, 1)[None].float())
    assert float(decoded_cross_entropy(exact, torch.from_numpy(labels), palette)) < 1e-3  # painted right
    guide = torch.rand(1, 3, 12, 16)
    assert float(decoded_cross_entropy(exact, torch.from_numpy(labels), palette, guide, 2)) > 0  # refined: smoothed
