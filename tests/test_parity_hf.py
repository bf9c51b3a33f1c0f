"""Parity with transformers' SegGptForImageSegmentation on random weights, through our converter."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from painter_seg import build_model
from painter_seg.checkpoint import save_checkpoint

transformers = pytest.importorskip("transformers")


def _hf_model(hidden, layers, heads, image_size, features, seed=0):
    cfg = transformers.SegGptConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, image_size=list(image_size),
        intermediate_hidden_state_indices=list(features), mlp_dim=4 * hidden, merge_index=2,
    )
    torch.manual_seed(seed)
    model = transformers.SegGptForImageSegmentation(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every tensor random, so that a wrong mapping cannot hide
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def _real_looking(n, size, seed):
    """Smooth images and a binary mask in ImageNet-normalised space."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    imgs, masks = [], []
    for _ in range(n):
        img = np.stack([np.sin(6 * xx + rng.uniform(0, 6)), np.cos(5 * yy + rng.uniform(0, 6)), xx * yy], -1)
        img = (img - img.min()) / (img.max() - img.min())
        cx, cy, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.1, 0.3)]
        m = (((xx - cx) ** 2 + (yy - cy) ** 2) < r**2).astype(np.float64)[..., None].repeat(3, -1)
        imgs.append(img)
        masks.append(m)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    to_t = lambda a: torch.from_numpy(((np.stack(a) - mean) / std).transpose(0, 3, 1, 2)).float()
    return to_t(imgs), to_t(masks)


def _compare(hf, ours, query, prompt, mask, embedding_type):
    with torch.no_grad():
        ref = hf(pixel_values=query, prompt_pixel_values=prompt, prompt_masks=mask,
                 embedding_type=embedding_type).pred_masks
        imgs = torch.cat([prompt, query], dim=2)
        tgts = torch.cat([mask, mask], dim=2)
        seg_type = torch.full((query.shape[0],), 1 if embedding_type == "instance" else 0)
        out = ours(imgs, tgts, ours.query_mask(), seg_type)
    return (out - ref).abs().max().item()


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    hf = _hf_model(192, 6, 3, (448, 224), (2, 3, 4, 5))
    path = tmp_path_factory.mktemp("hf") / "snapshot"
    hf.save_pretrained(path)  # a real transformers snapshot folder (model.safetensors + config.json)
    ours = build_model("seggpt_tiny", checkpoint=path)
    return hf, ours


@pytest.mark.parametrize("embedding_type", ["instance", "semantic"])
def test_single_prompt_random_inputs(tiny_pair, embedding_type):
    hf, ours = tiny_pair
    g = torch.Generator().manual_seed(1)
    q, p, m = (torch.randn(1, 3, 224, 224, generator=g) for _ in range(3))
    assert _compare(hf, ours, q, p, m, embedding_type) <= 1e-4


@pytest.mark.parametrize("embedding_type", ["instance", "semantic"])
def test_single_prompt_real_looking_inputs(tiny_pair, embedding_type):
    hf, ours = tiny_pair
    imgs, masks = _real_looking(2, 224, seed=3)
    assert _compare(hf, ours, imgs[:1], imgs[1:], masks[1:], embedding_type) <= 1e-4


def test_three_prompts_without_ensemble(tiny_pair):
    hf, ours = tiny_pair
    imgs, masks = _real_looking(4, 224, seed=4)
    query = imgs[:1].expand(3, -1, -1, -1).contiguous()
    assert _compare(hf, ours, query, imgs[1:], masks[1:], "instance") <= 1e-4


def test_round_trip_original_safetensors_hf_original_is_exact(tiny_pair, tmp_path):
    _, ours = tiny_pair
    sd = ours.state_dict()
    a = save_checkpoint(sd, tmp_path / "a.pth", layout="original")
    model = build_model("seggpt_tiny", checkpoint=a)
    b = save_checkpoint(model.state_dict(), tmp_path / "b.safetensors", layout="safetensors")
    model = build_model("seggpt_tiny", checkpoint=b)
    c = save_checkpoint(model.state_dict(), tmp_path / "hf_dir", layout="hf")
    model = build_model("seggpt_tiny", checkpoint=c.parent)
    d = save_checkpoint(model.state_dict(), tmp_path / "d.pth", layout="original")
    final = torch.load(d, weights_only=True)["model"]
    assert set(final) == set(sd)
    assert all(torch.equal(final[k], sd[k]) for k in sd)
    # the hf file really carries transformers names and loads into transformers
    hf2 = _hf_model(192, 6, 3, (448, 224), (2, 3, 4, 5), seed=9)
    from safetensors.torch import load_file

    missing, unexpected = hf2.load_state_dict(load_file(str(c)), strict=True)
    assert not missing and not unexpected


@pytest.mark.slow
def test_vit_large_parity(tmp_path):
    """ViT-L size (370,723,203 params): ~1 min and ~6 GB RAM on 2 CPU cores."""
    hf = _hf_model(1024, 24, 16, (896, 448), (5, 11, 17, 23))
    hf.save_pretrained(tmp_path / "snap")
    ours = build_model("seggpt_vit_large", checkpoint=tmp_path / "snap")
    assert sum(p.numel() for p in ours.parameters()) == 370_723_203
    imgs, masks = _real_looking(2, 448, seed=7)
    diff = _compare(hf, ours, imgs[:1], imgs[1:], masks[1:], "instance")
    print(f"ViT-L max |ours - transformers| = {diff:.3e}")
    assert diff <= 1e-4
