"""The SegGPT network: shapes, key names, index validation, fused = manual attention, the ensemble, the loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from painter_seg import build_model
from painter_seg.model import SegGPT, masked_smooth_l1
from painter_seg.model.layers import Attention, validate_layer_indices
from tests.conftest import _randomise


def _inputs(model: SegGPT, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h, w = model.img_size
    imgs = torch.randn(n, 3, h, w, generator=g)
    tgts = torch.randn(n, 3, h, w, generator=g)
    return imgs, tgts, model.query_mask()


def test_vit_large_geometry_matches_official_checkpoint():
    model = SegGPT()  # defaults = official ViT-L; building it takes ~2 s, no forward
    sd = model.state_dict()
    assert len(sd) == 354
    assert sum(v.numel() for v in sd.values()) == 370_723_203
    expected = {
        "mask_token": (1, 1, 1, 1024), "pos_embed": (1, 197, 1024), "patch_embed.proj.weight": (1024, 3, 16, 16),
        "blocks.0.attn.rel_pos_h": (111, 64), "blocks.23.attn.rel_pos_w": (55, 64),
        "blocks.5.attn.qkv.weight": (3072, 1024), "blocks.5.mlp.fc1.weight": (4096, 1024),
        "decoder_embed.weight": (16384, 4096), "decoder_pred.0.weight": (64, 64, 3, 3),
        "decoder_pred.1.weight": (64,), "decoder_pred.3.weight": (3, 64, 1, 1),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    per_block = {k.split(".", 2)[2] for k in sd if k.startswith("blocks.0.")}
    assert len(per_block) == 14


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"merge_index": 6}, "merge_index: index 6 is outside [0, 6)"),
        ({"feature_layers": [[2, 3], [4, 5]]}, "feature_layers must be a flat list of ints"),
        ({"feature_layers": [1, 3, 4, 5]}, "must not precede merge_index"),
        ({"feature_layers": [3, 3, 5]}, "strictly increasing"),
        ({"img_size": (224, 224)}, "img_size must be (2*W, W)"),
    ],
)
def test_index_lists_are_validated(kw, msg):
    base = {"img_size": (448, 224), "embed_dim": 48, "depth": 6, "num_heads": 3, "feature_layers": [2, 3, 4, 5]}
    base.update(kw)
    with pytest.raises(ValueError) as e:
        SegGPT(**base)
    assert msg in str(e.value)


def test_validate_layer_indices_rejects_painter_tuple_of_lists():
    # Painter's window_block_indexes construct: a tuple of lists, for which `i in ...` is always False.
    with pytest.raises(ValueError, match="flat list of ints"):
        validate_layer_indices("window_block_indexes", ([0, 1, 3], [15, 16]), 24)


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_fused_attention_equals_manual(dtype, atol):
    torch.manual_seed(0)
    attn = Attention(64, 4, input_size=(8, 4)).to(dtype)
    with torch.no_grad():
        attn.rel_pos_h.normal_(std=0.5)
        attn.rel_pos_w.normal_(std=0.5)
    x = torch.randn(2, 8, 4, 64, dtype=dtype)
    attn.fused_attn = True
    fused = attn(x)
    attn.fused_attn = False
    manual = attn(x)
    assert (fused - manual).abs().max().item() <= atol


def test_fused_and_manual_paths_agree_on_the_whole_model(tiny_model):
    imgs, tgts, bm = _inputs(tiny_model, 2)
    st = torch.tensor([0, 1])
    with torch.no_grad():
        a = tiny_model(imgs, tgts, bm, st)
        for blk in tiny_model.blocks:
            blk.attn.fused_attn = False
        try:
            b = tiny_model(imgs, tgts, bm, st)
        finally:
            for blk in tiny_model.blocks:
                blk.attn.fused_attn = True
    assert (a - b).abs().max().item() < 1e-4


def test_forward_shapes_and_masking(tiny_model):
    imgs, tgts, bm = _inputs(tiny_model, 3)
    with torch.no_grad():
        out = tiny_model(imgs, tgts, bm, torch.tensor([[1], [0], [1]]))
        # the masked query half of tgts must not influence the output
        tgts2 = tgts.clone()
        tgts2[:, :, tgts.shape[2] // 2 :] = torch.randn_like(tgts2[:, :, tgts.shape[2] // 2 :])
        out2 = tiny_model(imgs, tgts2, bm, torch.tensor([1, 0, 1]))
    assert out.shape == imgs.shape
    assert torch.isfinite(out).all()
    assert torch.equal(out, out2)


def test_seg_type_changes_output(tiny_model):
    imgs, tgts, bm = _inputs(tiny_model, 1)
    with torch.no_grad():
        sem = tiny_model(imgs, tgts, bm, torch.tensor([0]))
        ins = tiny_model(imgs, tgts, bm, torch.tensor([1]))
    assert (sem - ins).abs().max().item() > 1e-3


def test_bad_shapes_raise(tiny_model):
    imgs, tgts, bm = _inputs(tiny_model, 1)
    with pytest.raises(ValueError, match="canvas must be"):
        tiny_model(imgs[:, :, :224], tgts[:, :, :224], None, None)
    with pytest.raises(ValueError, match="bool_masked_pos must be"):
        tiny_model(imgs, tgts, bm[:, :10], None)


def test_feature_ensemble_of_identical_prompts_equals_single_prompt(tiny_model):
    imgs, tgts, bm = _inputs(tiny_model, 1)
    with torch.no_grad():
        single = tiny_model(imgs, tgts, bm, torch.tensor([1]))
        k = 4
        ens = tiny_model(imgs.expand(k, -1, -1, -1), tgts.expand(k, -1, -1, -1), bm,
                         torch.ones(k), feature_ensemble=True)
    assert (ens - single).abs().max().item() <= 1e-5


def _reference_ensemble_forward(model: SegGPT, imgs, tgts, bm, seg_type):
    """Independent re-statement of the official multi-prompt forward (models_seggpt.py, merge_between_batch=0):
    loops over prompts explicitly instead of reshaping."""
    n = imgs.shape[0]
    x = model.patch_embed(imgs)
    y = model.patch_embed(tgts)
    w = bm.reshape(1, *model.grid_size, 1).float()
    y = y * (1 - w) + model.mask_token * w
    pos = model.abs_pos()
    type_emb = torch.stack([model.type_token_ins[0] if int(s) == 1 else model.type_token_cls[0] for s in seg_type])
    x = x + model.segment_token_x + pos + type_emb
    y = y + model.segment_token_y + pos + type_emb
    h = torch.cat([x, y])
    half = model.grid_size[0] // 2
    feats = []
    for i, blk in enumerate(model.blocks):
        a = blk.attn(blk.norm1(h))
        a = a.clone()
        if i <= model.merge_index:  # per stream: mean over the n prompts of each stream separately
            for s in range(2):
                rows = slice(s * n, (s + 1) * n)
                mean = sum(a[j, half:] for j in range(s * n, (s + 1) * n)) / n
                a[rows, half:] = mean
        else:  # after the merge: mean over all prompts
            a[:, half:] = sum(a[j, half:] for j in range(a.shape[0])) / a.shape[0]
        h = h + a
        h = h + blk.mlp(blk.norm2(h))
        if i == model.merge_index:
            h = (h[:n] + h[n:]) / 2
        if i in model.feature_layers:
            feats.append(model.norm(h))
    return model.forward_decoder(feats)


def test_feature_ensemble_matches_independent_reference(tiny_model):
    imgs, tgts, bm = _inputs(tiny_model, 3, seed=5)
    half = imgs.shape[2] // 2
    imgs[:, :, half:] = imgs[:1, :, half:]  # three prompts for ONE query image
    st = torch.tensor([0, 0, 0])
    with torch.no_grad():
        ours = tiny_model(imgs, tgts, bm, st, feature_ensemble=True)
        ref = _reference_ensemble_forward(tiny_model, imgs, tgts, bm, st)
        plain = tiny_model(imgs, tgts, bm, st)
    assert (ours - ref).abs().max().item() <= 1e-5
    # the query half is shared across prompts (but for the first pixel row, which the decoder's 3x3 conv
    # mixes with the prompt half); without the ensemble it is not
    q = ours.shape[2] // 2 + 1
    assert (ours[0, :, q:] - ours[2, :, q:]).abs().max().item() < 1e-5
    assert (plain[0, :, q:] - plain[2, :, q:]).abs().max().item() > 1e-3


def test_banded_decoder_equals_one_pass(tiny_model):
    imgs, tgts, bm = _inputs(tiny_model, 1, seed=7)
    with torch.no_grad():
        feats = tiny_model.forward_features(imgs, tgts, bm)
        whole = tiny_model.forward_decoder(feats, band_rows=0)
        hp = tiny_model.grid_size[0]
        for rows in (1, 3, hp - 1):  # one row per band, a band that does not divide the grid, two bands
            banded = tiny_model.forward_decoder(feats, band_rows=rows)
            assert banded.shape == whole.shape
            assert (banded - whole).abs().max().item() <= 1e-5, rows
        # CPU inference bands by default; under autograd the decoder runs in one pass
        assert tiny_model.decoder_band_rows < hp
        assert torch.equal(tiny_model.forward_decoder(feats), tiny_model.forward_decoder(feats, band_rows=tiny_model.decoder_band_rows))
    part = [f[:, :7, :5] for f in feats]  # bf16 is emulated (slow) on CPUs without avx512_bf16: a corner
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        one = tiny_model.forward_decoder(part, band_rows=0)
        banded = tiny_model.forward_decoder(part, band_rows=3)
        # native bf16 kernels (avx512_bf16) may block a band's matmul differently from the whole: one bf16 step apart
        diff = (banded.float() - one.float()).abs().max().item()
        assert banded.dtype == one.dtype == torch.bfloat16 and diff <= 2**-7 * one.float().abs().max().item(), diff
    with torch.enable_grad():
        feats = [f.detach().requires_grad_() for f in feats]
        out = tiny_model.forward_decoder(feats)
        assert out.grad_fn is not None and (out.detach() - whole).abs().max().item() <= 1e-5


@pytest.mark.parametrize("ensemble", [False, True], ids=["batch", "feature_ensemble"])
def test_query_only_decode_equals_the_query_half_of_the_canvas(tiny_model, ensemble):
    """Inference decodes the query half only (one row under the feature ensemble): the same pixels as the
    bottom half of the whole canvas's decode, banded (CPU inference) or in one pass (autograd)."""
    imgs, tgts, bm = _inputs(tiny_model, 2, seed=3)
    h = tiny_model.img_size[0] // 2
    if ensemble:  # K prompts for ONE query
        imgs[1, :, h:] = imgs[0, :, h:]
        tgts[1, :, h:] = tgts[0, :, h:]
    with torch.no_grad():
        whole = tiny_model(imgs, tgts, bm, feature_ensemble=ensemble)
        half = tiny_model(imgs, tgts, bm, feature_ensemble=ensemble, query_only=True)
        assert half.shape == (1 if ensemble else 2, 3, h, tiny_model.img_size[1])
        assert (half - whole[: half.shape[0], :, h:]).abs().max().item() <= 1e-5
        if ensemble:  # the rows agree below the first pixel row (whose 3x3 halo is each row's own prompt)
            assert (whole[1, :, h + 1 :] - whole[0, :, h + 1 :]).abs().max().item() <= 1e-5
    with torch.enable_grad():
        feats = [f.detach().requires_grad_() for f in tiny_model.forward_features(imgs, tgts, bm)]
        out = tiny_model.forward_decoder(feats, first_row=tiny_model.grid_size[0] // 2)
        out.sum().backward()
        assert (out.detach() - whole[:, :, h:]).abs().max().item() <= 1e-5 or ensemble
        assert feats[0].grad[:, : tiny_model.grid_size[0] // 2 - 1].abs().sum().item() == 0  # no halo above


def test_masked_smooth_l1_matches_hand_computation():
    torch.manual_seed(0)
    p = 4
    pred = torch.randn(2, 3, 16, 8)
    tgt = torch.randn(2, 3, 16, 8)
    bm = torch.zeros(1, 8, dtype=torch.bool)
    bm[0, 4:] = True  # bottom half of a 4x2 grid
    loss = masked_smooth_l1(pred, tgt, bm, p)
    d = (pred - tgt)[:, :, 8:].abs()
    ref = torch.where(d < 0.01, 0.5 * d**2 / 0.01, d - 0.005).mean()
    assert abs(loss.item() - ref.item()) < 1e-6
    valid = torch.ones(2, 1, 16, 8)
    valid[1] = 0
    loss_v = masked_smooth_l1(pred, tgt, bm, p, valid=valid)
    ref_v = torch.where(d[0] < 0.01, 0.5 * d[0] ** 2 / 0.01, d[0] - 0.005).mean()
    assert abs(loss_v.item() - ref_v.item()) < 1e-6



def test_masked_smooth_l1_weights_foreground_pixels():
    from painter_seg.codec.canvas import normalize

    p = 4
    black = torch.from_numpy(normalize(np.zeros(3))).view(1, 3, 1, 1)
    tgt = black.expand(1, 3, 16, 8).clone()
    tgt[:, :, 12:, 4:] = torch.from_numpy(normalize(np.array([1.0, 0.0, 0.0]))).view(1, 3, 1, 1)
    pred = torch.zeros(1, 3, 16, 8)
    bm = torch.zeros(1, 8, dtype=torch.bool)
    bm[0, 4:] = True  # the bottom half: 48 background and 16 foreground pixels
    per_px = F.smooth_l1_loss(pred, tgt, reduction="none", beta=1.0).mean(1)[0, 8:]
    fg = torch.zeros(8, 8, dtype=torch.bool)
    fg[4:, 4:] = True
    for w in (1.0, 2.5):
        ref = (per_px[~fg].sum() + w * per_px[fg].sum()) / (48 + w * 16)
        loss = masked_smooth_l1(pred, tgt, bm, p, beta=1.0, fg_weight=w)
        assert abs(loss.item() - ref.item()) < 1e-6
    assert masked_smooth_l1(pred, tgt, bm, p, beta=1.0, fg_weight=2.5).item() > \
        masked_smooth_l1(pred, tgt, bm, p, beta=1.0).item()
    with pytest.raises(ValueError, match="fg_weight must be > 0, got 0"):
        masked_smooth_l1(pred, tgt, bm, p, fg_weight=0)

def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = build_model("seggpt_tiny", pretrained=False).train()
    _randomise(model)
    imgs, tgts, bm = _inputs(model, 2)
    pred = model(imgs, tgts, bm, torch.tensor([0, 1]))
    masked_smooth_l1(pred, tgts, bm, model.patch_size).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_build_model_contract():
    model = build_model("seggpt_tiny", device="cpu")
    assert not model.training
    assert model.config_name == "seggpt_tiny"
    assert model.img_size == (448, 224)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope")
