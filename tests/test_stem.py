"""The convolutional stem beside the patch embedding and its shape-family pretraining (docs/training "Stage 15")."""
from __future__ import annotations

import csv
import runpy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from painter_seg import build_model
from painter_seg.errors import InputError
from painter_seg.model import SegGPT
from painter_seg.model.layers import ConvStem

REPO = Path(__file__).resolve().parents[1]
STEM = ["net.conv_stem.pool=2", "net.conv_stem.widths=[8,8,16,16]", "net.conv_stem.extra=[0,0,1,1]"]


def _tiny(stem: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    return build_model("seggpt_tiny", overrides=STEM if stem else [], pretrained=False)


def test_a_new_stem_leaves_the_output_unchanged_and_then_adds_to_the_image_tokens():
    plain, stemmed = _tiny(stem=False), _tiny()
    state = stemmed.state_dict()
    assert {k for k in state if k.startswith("stem.")} == {
        *(f"stem.body.{i}.{w}" for i in (0, 2, 4, 6, 8, 10) for w in ("weight", "bias")),
        "stem.proj.weight", "stem.proj.bias"}
    plain.load_state_dict({k: v for k, v in state.items() if not k.startswith("stem.")}, strict=True)
    g = torch.Generator().manual_seed(1)
    imgs, tgts = torch.randn(2, 3, 448, 224, generator=g), torch.randn(2, 3, 448, 224, generator=g)
    mask = plain.query_mask()
    with torch.no_grad():
        assert torch.equal(plain(imgs, tgts, mask), stemmed(imgs, tgts, mask))  # zero projection: no change
        stemmed.stem.proj.weight.normal_(0, 0.05, generator=g)
        f = stemmed.stem(imgs)
        assert f.shape == (2, 28, 14, 192)  # NHWC on the token grid (28 x 14 patches of 16)
        assert stemmed.stem.features(imgs).shape == (2, 16, 14, 7)  # pooled 2, halved 4 times: resized to the grid
        assert not torch.equal(plain(imgs, tgts, mask), stemmed(imgs, tgts, mask))
        twin = stemmed.with_canvas((256, 128))
        assert twin.stem is not None and twin.stem.proj.weight.data_ptr() == stemmed.stem.proj.weight.data_ptr()
        assert twin(imgs[:, :, :256, :128], tgts[:, :, :256, :128], twin.query_mask()).shape == (2, 3, 256, 128)


@pytest.mark.parametrize(("kw", "msg"), [
    ({"widths": [8], "extra": [0, 1]}, r"widths \[8\] \(>= 1 each\), extra \[0, 1\]"),
    ({"widths": [], "extra": []}, "do not describe a stem"),
    ({"widths": [8], "pool": 0}, "pool 0"),
])
def test_bad_stems_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ConvStem(3, 16, 16, **kw)
    with pytest.raises(ValueError, match=r"conv_stem: unknown keys \['depth'\] or no widths"):
        SegGPT(img_size=(64, 32), embed_dim=16, depth=2, num_heads=2, merge_index=0, feature_layers=[1],
               pretrain_img_size=32, conv_stem={"widths": [8], "depth": 2})


def test_folding_the_batchnorm_gives_the_stem_the_trained_features():
    from painter_seg.training.stem_pretrain import _TrainStem

    model = _tiny()
    net = _TrainStem(model.stem, 16)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 32, 32, generator=g)
    net.train()
    for _ in range(3):  # running statistics away from their start
        net.body(x * 2 + 1)
    for m in net.body:
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.1, generator=g)
    net.eval()
    with torch.no_grad():
        want = net.body(x)
        net.fold_into(model.stem)
        got = model.stem.body(x)
    assert want.shape == (6, 16, 2, 2) and torch.allclose(got, want, atol=1e-5)


def test_shifted_windows_move_image_and_coverage_together():
    from painter_seg.training.stem_pretrain import StemPretrainConfig, _shifted

    x = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    cover = x[..., 0].copy()
    xs, cs = _shifted(x, cover, 3, np.random.default_rng(0))
    assert xs.shape == (2, 5, 5, 3) and cs.shape == (2, 5, 5)
    assert np.array_equal(xs[..., 0], cs)  # the same cut for both
    offsets = {(int(np.argwhere(x[i, ..., 0] == xs[i, 0, 0, 0])[0][0]),) for i in range(2)}
    assert all(0 <= o[0] <= 3 for o in offsets)
    assert _shifted(x, cover, 0, np.random.default_rng(0))[0] is x
    with pytest.raises(InputError, match=r"shift \(32, pooled pixels\) in \[0, window / 4\)"):
        StemPretrainConfig(window=128, shift=32)


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_stem_pretraining_trains_the_stem_alone_caches_objects_and_resumes_exactly(tmp_path):
    from painter_seg.training.stem_pretrain import (
        StemPretrainConfig,
        episode_objects,
        pretrain_stem,
    )

    objs = episode_objects(40_000_000, size=224, window=64, pool=2)
    assert objs and all(x.shape == (32, 32, 3) and x.dtype == np.uint8 and m.shape == (32, 32) for x, m, _ in objs)
    assert all(0 <= y < 16 and m.max() > 0 for _, m, y in objs)

    cfg = StemPretrainConfig(episodes=12, window=64, shift=8, batch_size=8, max_epochs=2, max_minutes=None)
    start = _tiny().state_dict()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = pretrain_stem(_tiny(), cfg, tmp_path / "a", progress=False)
        assert res["epoch"] == 2 and res["objects"] > 12 and 0 <= res["heldout_acc"] <= 1
        rows = _read(tmp_path / "a" / "stem_log.csv")
        assert [r["epoch"] for r in rows] == ["1", "2"] and all(float(r["loss"]) > 0 for r in rows)
        once = load_file(str(tmp_path / "a" / "model.safetensors"))
        moved = {k for k in once if not torch.equal(once[k], start[k])}
        assert moved and all(k.startswith("stem.body.") for k in moved)  # the projection stays zero
        cache = (tmp_path / "a" / "objects.npz").stat().st_mtime_ns
        pretrain_stem(_tiny(), replace(cfg, max_epochs=1), tmp_path / "a", progress=False)
        assert (tmp_path / "a" / "objects.npz").stat().st_mtime_ns == cache  # read back, not made again

        pretrain_stem(_tiny(), replace(cfg, max_epochs=1), tmp_path / "b", progress=False)
        pretrain_stem(_tiny(), cfg, tmp_path / "b", resume=True, progress=False)
        twice = load_file(str(tmp_path / "b" / "model.safetensors"))
        assert all(torch.equal(once[k], twice[k]) for k in once)  # stopped and resumed = one run
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(InputError, match="the model has no conv_stem to pretrain"):
        pretrain_stem(_tiny(stem=False), cfg, tmp_path / "c", progress=False)
    with pytest.raises(InputError, match="no checkpoint to resume from"):
        pretrain_stem(_tiny(), cfg, tmp_path / "d", resume=True, progress=False)


def test_pretrain_stem_tool_reports_a_bad_stem_in_one_line(tmp_path, capsys):
    tool = runpy.run_path(str(REPO / "tools" / "pretrain_stem.py"))
    assert tool["main"](["--output-dir", str(tmp_path / "o"), "--stem", "2:32,64"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --stem '2:32,64': expected POOL:WIDTHS:EXTRA, "
                                               "e.g. 2:32,64,96,128:0,0,1,2")
    assert not (tmp_path / "o").exists()
