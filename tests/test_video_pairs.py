"""Video-like training pairs (painter_seg.data.in_context.video): shared crop, motion warp, clip pairs."""

from pathlib import Path

import numpy as np
import pytest
import torch

from painter_seg.data.in_context import (
    InContextRecipe,
    SyntheticClipPairsDataset,
    motion_warp,
    shared_crop,
)
from painter_seg.errors import InputError

DATA_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data_train"
MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def _halves(sample, key):
    x = sample[key] * STD + MEAN
    h = x.shape[1] // 2
    return x[:, :h], x[:, h:]


def test_shared_crop_is_one_box_one_flip_one_jitter():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    lab = np.zeros((60, 80), np.int64)
    lab[10:30, 20:50] = 3
    recipe = InContextRecipe(jitter_p=1.0, hflip_p=0.5)
    for seed in range(6):  # the same frame twice: both views must be identical, jitter included
        a, b = shared_crop(np.random.default_rng(seed), [(img, lab), (img.copy(), lab.copy())],
                           (32, 32), recipe)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        assert a[0].shape == (3, 32, 32) and a[0].dtype == np.float32 and set(np.unique(a[1])) <= {0, 3}
    with pytest.raises(InputError, match="differ in size"):
        shared_crop(np.random.default_rng(0), [(img, lab), (img[:50], lab[:50])], (32, 32), recipe)


def test_motion_warp_identity_and_shift():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    lab = np.zeros((40, 50), np.int64)
    lab[10:20, 10:30] = 2
    out, out_lab = motion_warp(rng, img, lab, rotate=0, zoom=0, shift=0, elastic=0)
    assert np.array_equal(out, img) and np.array_equal(out_lab, lab) and out_lab.dtype == lab.dtype
    out, out_lab = motion_warp(np.random.default_rng(1), img, lab, rotate=8, zoom=0.1, shift=0.1,
                               elastic=0.03)
    assert set(np.unique(out_lab)) <= {0, 2}  # nearest neighbour: no new ids
    moved = (out_lab == 2).sum()
    assert 0.6 * 200 < moved < 1.5 * 200 and not np.array_equal(out_lab, lab)  # moved, not lost


def test_clip_pairs_are_frames_of_one_clip():
    ds = SyntheticClipPairsDataset(8, seed=3, half_size=(64, 64), max_gap=3, num_objects=(2, 2))
    assert len(ds) == 8
    for i in range(8):
        s = ds[i]
        assert s["imgs"].shape == (3, 128, 64) and int(s["seg_type"]) == 1
        assert all(torch.equal(s[k], ds[i][k]) for k in s)  # a pure function of (seed, index)
        p, q = _halves(s, "tgts")
        colors_p = {tuple(c) for c in (p * 255).round().reshape(3, -1).T.tolist()}
        colors_q = {tuple(c) for c in (q * 255).round().reshape(3, -1).T.tolist()}
        # one colouring for both frames: the query's colours are the prompt's (objects may hide)
        assert len(colors_p | colors_q) <= 3 + 1 and len(colors_p & colors_q) >= 2
    with pytest.raises(InputError, match="max_gap"):
        SyntheticClipPairsDataset(4, max_gap=0)
    with pytest.raises(InputError, match="num_objects"):
        SyntheticClipPairsDataset(4, num_objects=(0, 2))


def test_pascal_motion_pairs():
    if not (DATA_TRAIN / "pascal_voc_coseg").is_dir():
        pytest.skip("../shared/data_train is not present")
    from painter_seg.data.in_context import PASCAL_HOLDOUT, pascal_motion_pairs_dataset

    ds = pascal_motion_pairs_dataset(DATA_TRAIN / "pascal_voc_coseg", length=6, half_size=(48, 48))
    assert ds.seg_type == 1 and ds.recipe.ignore_index == 255
    assert not set(ds.names) & set(PASCAL_HOLDOUT)
    for i in range(6):
        s = ds[i]
        assert s["imgs"].shape == (3, 96, 48)
        assert all(torch.equal(s[k], ds[i][k]) for k in s)
        p, q = _halves(s, "imgs")
        # two views of one photo a small motion apart: far closer than two unrelated photos
        other = _halves(ds[(i + 1) % 6], "imgs")[1]
        assert (p - q).abs().mean() < (p - other).abs().mean()
    with pytest.raises(InputError, match="unknown PASCAL classes"):
        pascal_motion_pairs_dataset(DATA_TRAIN / "pascal_voc_coseg", holdout=["Cow"])
