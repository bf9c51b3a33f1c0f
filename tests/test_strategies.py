"""Strategies over one shared model: equivalences between them, prompt preparation, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from painter_seg.strategies import build_strategy, tile_prompts


def _prompts(k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randn(k, 3, 224, 224, generator=g)
    masks = torch.randn(k, 3, 224, 224, generator=g)
    return imgs, masks


def test_spatial_ensemble_with_one_prompt_equals_plain(tiny_model):
    imgs, masks = _prompts(1)
    q = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    plain, spatial = build_strategy("plain", tiny_model), build_strategy("spatial_ensemble", tiny_model)
    plain.set_prompts(imgs, masks, 1)
    spatial.set_prompts(imgs, masks, 1)
    with torch.no_grad():
        assert torch.equal(plain.predict_torch(q), spatial.predict_torch(q))


def test_feature_ensemble_of_copies_equals_plain(tiny_model):
    imgs, masks = _prompts(1)
    q = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    plain, fe = build_strategy("plain", tiny_model), build_strategy("feature_ensemble", tiny_model)
    plain.set_prompts(imgs, masks, 0)
    fe.set_prompts(imgs.expand(3, -1, -1, -1), masks.expand(3, -1, -1, -1), 0)
    with torch.no_grad():
        assert (plain.predict_torch(q) - fe.predict_torch(q)).abs().max().item() <= 1e-5


def test_batched_queries_equal_one_by_one(tiny_model):
    imgs, masks = _prompts(1)
    q = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    s = build_strategy("plain", tiny_model)
    s.set_prompts(imgs, masks, 0)
    with torch.no_grad():
        batched = s.predict_torch(q)
        single = torch.stack([s.predict(x) for x in q])
    assert (batched - single).abs().max().item() <= 1e-5


def test_prompts_are_prepared_once(tiny_model, monkeypatch):
    s = build_strategy("spatial_ensemble", tiny_model)
    calls = []
    orig = s.arrangement.prepare
    monkeypatch.setattr(s.arrangement, "prepare", lambda i, m: calls.append(1) or orig(i, m))
    s.set_prompts(*_prompts(4), 0)
    with torch.no_grad():
        for _ in range(3):
            s.predict_torch(torch.zeros(1, 3, 224, 224))
    assert calls == [1]


def test_tiling_layout():
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 8, 8).contiguous()
    grid = tile_prompts(x, 2, "nearest")
    assert grid.shape == (1, 3, 8, 8)
    assert grid[0, 0, 0, 0] == 0 and grid[0, 0, 0, 7] == 1 and grid[0, 0, 7, 0] == 2 and grid[0, 0, 7, 7] == 3
    grid3 = tile_prompts(x[:3], 2, "nearest")  # empty cell = black in pixel space
    black = -0.485 / 0.229
    assert abs(grid3[0, 0, 7, 7].item() - black) < 1e-6


def test_tensor_and_array_tilers_cut_the_same_cells():
    """strategies.tile_prompts (tensors, inference) and codec.tile_grid (arrays) share cell_bounds."""
    from painter_seg.codec import tile_grid

    h, w, n, k = 100, 70, 3, 7  # neither side divisible by 3: the last row / column takes the remainder
    ids = torch.arange(1, k + 1, dtype=torch.float32)
    x = ids.view(k, 1, 1, 1).expand(k, 3, h, w).contiguous()  # the grid has the prompts' size
    grid = tile_prompts(x, n, "nearest")[0, 0]
    arrays = [np.full((h, w, 3), i, dtype=np.uint8) for i in range(1, k + 1)]
    ref = tile_grid(arrays, n, kind="mask", size=(h, w))[..., 0]
    black = -0.485 / 0.229
    ours = torch.where((grid - black).abs() < 1e-6, torch.zeros_like(grid), grid).round().numpy()
    assert ours.shape == ref.shape == (h, w)
    np.testing.assert_array_equal(ours, ref)
    assert (ref[:33, :23] == 1).all() and (ref[66:, 46:] == 0).all() and ref[66, 0] == 7


def test_errors(tiny_model):
    s = build_strategy("plain", tiny_model)
    with pytest.raises(RuntimeError, match="call set_prompts"):
        s.predict_torch(torch.zeros(1, 3, 224, 224))
    with pytest.raises(ValueError, match="exactly one prompt, got 2"):
        s.set_prompts(*_prompts(2), 0)
    with pytest.raises(ValueError, match=r"prompts must be \(224, 224\)"):
        build_strategy("feature_ensemble", tiny_model).set_prompts(torch.zeros(1, 3, 64, 64),
                                                                   torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        build_strategy("nope", tiny_model)


def test_every_strategy_takes_a_tuned_prompt_first(tiny_model):
    """The prompt source is separate from the arrangement: a tuned prompt is prompt 0 of any
    strategy, exactly as if it had been given as the first example pair."""
    from types import SimpleNamespace

    imgs, masks = _prompts(3, seed=7)
    tuned = SimpleNamespace(image=imgs[0], mask=masks[0], seg_type=1)
    q = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(8))
    for name, k in (("plain", 0), ("spatial_ensemble", 2), ("feature_ensemble", 2), ("tuned", 0),
                    ("tuned", 2)):
        with_tuned, as_pairs = build_strategy(name, tiny_model), build_strategy(name, tiny_model)
        extra = (imgs[1 : 1 + k], masks[1 : 1 + k]) if k else (None, None)
        with_tuned.set_prompts(*extra, tuned=tuned)
        as_pairs.set_prompts(imgs[: 1 + k], masks[: 1 + k], "instance")
        assert with_tuned.prompts.seg_type == 1 and with_tuned.tuned is tuned
        with torch.no_grad():
            assert torch.equal(with_tuned.predict_torch(q), as_pairs.predict_torch(q)), (name, k)
    s = build_strategy("tuned", tiny_model, prompt=tuned)  # ready without example pairs
    assert s.prompts.num_prompts == 1
    s.set_prompts(imgs[:2], masks[:2])  # the tuned strategy takes plain pairs too
    assert s.tuned is None and s.prompts.num_prompts == 2 and s.prompts.seg_type == 0
    with pytest.raises(ValueError, match="extra pairs have seg_type semantic, the tuned prompt "
                                         "instance"):
        s.set_prompts(imgs[:1], masks[:1], "semantic", tuned=tuned)
    with pytest.raises(ValueError, match="exactly one prompt, got 2"):
        build_strategy("plain", tiny_model).set_prompts(imgs[:1], masks[:1], tuned=tuned)
    with pytest.raises(ValueError, match="at least one prompt"):
        s.set_prompts()
