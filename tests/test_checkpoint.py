"""Strict, safe checkpoint loading with readable errors; the converter tool."""
from __future__ import annotations

import os
import pickle
import re

import pytest
import torch

from painter_seg import build_model
from painter_seg.checkpoint import (
    CheckpointMismatchError,
    hf_to_original,
    load_checkpoint,
    original_to_hf,
    read_state_dict,
    save_checkpoint,
)
from painter_seg.errors import CheckpointError
from tests.conftest import run_cli


@pytest.fixture()
def tiny_sd(tiny_model):
    return {k: v.clone() for k, v in tiny_model.state_dict().items()}


def _fresh():
    return build_model("seggpt_tiny", pretrained=False)


def test_renamed_key_is_reported(tiny_sd, tmp_path):
    tiny_sd["blocks.0.attn.qkv.weightX"] = tiny_sd.pop("blocks.0.attn.qkv.weight")
    path = save_checkpoint(tiny_sd, tmp_path / "renamed.pth", layout="original")
    with pytest.raises(CheckpointMismatchError) as e:
        load_checkpoint(_fresh(), path, model_name="seggpt_tiny")
    msg = str(e.value)
    assert msg == (f"{path}: checkpoint does not fit seggpt_tiny: 1 missing (blocks.0.attn.qkv.weight); "
                   "1 unexpected (blocks.0.attn.qkv.weightX)")
    assert "\n" not in msg


def test_missing_key_is_reported(tiny_sd, tmp_path):
    del tiny_sd["decoder_pred.3.bias"]
    path = save_checkpoint(tiny_sd, tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"1 missing \(decoder_pred\.3\.bias\)$") as e:
        load_checkpoint(_fresh(), path)
    assert e.value.missing == ["decoder_pred.3.bias"] and not e.value.unexpected


def test_wrong_shape_is_reported(tiny_sd, tmp_path):
    tiny_sd["pos_embed"] = torch.zeros(1, 50, 192)
    path = save_checkpoint(tiny_sd, tmp_path / "shape.pth", layout="original")
    with pytest.raises(CheckpointMismatchError) as e:
        load_checkpoint(_fresh(), path)
    assert str(e.value).endswith("1 mis-shaped (pos_embed: checkpoint [1, 50, 192] vs model [1, 197, 192])")


def test_vit_large_checkpoint_into_tiny_model_lists_everything(tmp_path):
    big = {k: torch.zeros(1) for k in build_model("seggpt_vit_large", pretrained=False).state_dict()}
    path = tmp_path / "fake_large.pth"
    torch.save({"model": big}, path)
    with pytest.raises(CheckpointMismatchError) as e:
        load_checkpoint(_fresh(), path)
    assert len(e.value.unexpected) == 354 - 102 and len(e.value.mismatched) == 102


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/painter_seg_pwned",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = "/tmp/painter_seg_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "evil": _Evil()}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(_fresh(), path)
    assert str(e.value).startswith(f"{path}: refused to load: the file holds pickled objects other than tensors")
    assert not os.path.exists(marker)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        read_state_dict(raw)
    assert not os.path.exists(marker)


@pytest.mark.parametrize("content, msg", [(b"", "empty checkpoint file (0 bytes)"),
                                          (b"not a checkpoint at all", "not a readable")])
def test_unreadable_files(tmp_path, content, msg):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(msg)):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        read_state_dict(tmp_path / "nope.pth")


def test_prefixes_and_wrappers_are_unwrapped(tiny_sd, tmp_path):
    wrapped = {"state_dict": {f"module._orig_mod.{k}": v for k, v in tiny_sd.items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "ddp.pt")
    model = _fresh()
    report = load_checkpoint(model, tmp_path / "ddp.pt")
    assert report.num_tensors == 102
    assert all(torch.equal(model.state_dict()[k], v) for k, v in tiny_sd.items())


def test_key_maps_are_inverse_and_cover_every_key(tiny_sd):
    hf = original_to_hf(tiny_sd)
    assert len(hf) == len(tiny_sd)
    assert all(k.startswith(("model.", "decoder.")) for k in hf)
    assert hf_to_original(hf).keys() == tiny_sd.keys()
    bare = {k[len("model."):]: v for k, v in hf.items() if k.startswith("model.")}  # SegGptModel layout
    assert set(hf_to_original(bare)) == {k for k in tiny_sd if not k.startswith("decoder")}


def test_fp16_checkpoint_loads_into_fp32_model(tiny_sd, tmp_path):
    path = save_checkpoint(tiny_sd, tmp_path / "half.safetensors", dtype=torch.float16, metadata={"a": "b"})
    sd, meta = read_state_dict(path)
    assert meta["a"] == "b" and meta["layout"] == "safetensors" and sd["pos_embed"].dtype == torch.float16
    model = build_model("seggpt_tiny", checkpoint=path)
    assert model.pos_embed.dtype == torch.float32
    assert torch.allclose(model.pos_embed, tiny_sd["pos_embed"], atol=1e-3)


def test_convert_tool(tiny_sd, tmp_path):
    src = save_checkpoint(tiny_sd, tmp_path / "orig.pth", layout="original")
    run = lambda *a: run_cli("convert", *a)
    r = run(src, tmp_path / "hf", "--model", "seggpt_tiny")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("102 tensors, 15,524,035 parameters")
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    r = run(tmp_path / "hf", tmp_path / "back.pth")
    assert r.returncode == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    assert all(torch.equal(back[k], tiny_sd[k]) for k in tiny_sd)
    r = run(src, src)
    assert r.returncode == 2 and r.stderr.strip() == f"error: {src}: output would overwrite the input checkpoint"
    r = run(tmp_path / "missing.pth", tmp_path / "x.pth")
    assert r.returncode == 2 and "checkpoint file not found" in r.stderr and "Traceback" not in r.stderr


def test_build_with_checkpoint_takes_the_loaded_tensors_cast_to_the_model_dtype(tmp_path):
    """A strict load builds on the meta device and assigns the file's tensors (weights held once)."""
    from painter_seg import build_model
    from painter_seg.checkpoint import save_checkpoint

    ref = build_model("seggpt_tiny", pretrained=False)
    path = save_checkpoint(ref.state_dict(), tmp_path / "w.safetensors", dtype=torch.float16)
    model = build_model("seggpt_tiny", checkpoint=path)
    params = dict(model.named_parameters())
    assert not any(p.is_meta for p in params.values())
    assert {p.dtype for p in params.values()} == {torch.float32}
    assert all(p.requires_grad for p in params.values())
    for k, v in ref.state_dict().items():
        assert torch.equal(params[k], v.half().float()), k
    # a mismatched file still fails with the one-line report, before anything is assigned
    sd = ref.state_dict()
    sd.pop("mask_token")
    save_checkpoint(sd, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointMismatchError, match="missing"):
        build_model("seggpt_tiny", checkpoint=tmp_path / "bad.safetensors")


def test_a_model_on_another_canvas_loads_the_checkpoint_with_its_rel_pos_tables_resampled(tiny_sd, tmp_path):
    """Only the relative-position tables depend on the canvas: they are stretched linearly and reported."""
    for k in [k for k in tiny_sd if k.endswith(("rel_pos_h", "rel_pos_w"))]:
        n = tiny_sd[k].shape[0]                                         # h: 55 rows (28 patches), w: 27
        tiny_sd[k] = (torch.arange(n, dtype=torch.float32) / (n - 1))[:, None].expand(-1, 64).clone()
    path = save_checkpoint(tiny_sd, tmp_path / "w224.safetensors")
    model = build_model("seggpt_tiny", pretrained=False, overrides=["net.img_size=[320,160]"])  # 10 patches
    report = load_checkpoint(model, path)
    assert str(report).endswith("; 12 relative-position tables resampled from 27/55 rows "
                                "(the model's canvas differs from the checkpoint's)")
    assert sorted(set(report.resampled_rows)) == [27, 55] and len(report.resampled) == 12  # 6 blocks
    h, w = model.blocks[0].attn.rel_pos_h, model.blocks[0].attn.rel_pos_w
    assert h.shape == (39, 64) and w.shape == (19, 64)
    # a ramp over the offsets stays the same ramp, sampled at the new rows' centres (linear, align_corners=False
    # as the official get_rel_pos): each offset keeps its fraction of the image
    def centres(n_in, n_out):
        return (((torch.arange(n_out) + 0.5) * n_in / n_out - 0.5) / (n_in - 1)).clamp(0, 1)
    assert torch.allclose(w[:, 0], centres(27, 19), atol=1e-6)
    assert torch.allclose(h[:, 5], centres(55, 39), atol=1e-6)
    # the same canvas resamples nothing; any other shape difference is still a mis-shaped key
    assert load_checkpoint(_fresh(), path).resampled == []
    tiny_sd["blocks.0.attn.rel_pos_w"] = torch.zeros(27, 32)
    save_checkpoint(tiny_sd, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"1 mis-shaped \(blocks\.0\.attn\.rel_pos_w: checkpoint "
                                                      r"\[27, 32\] vs model \[27, 64\]\)$"):
        load_checkpoint(_fresh(), tmp_path / "bad.safetensors")
