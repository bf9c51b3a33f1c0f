"""Fast-path switches at the edges: compile (with eager fallback), precision, inference mode."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from painter_seg.apps.few_shot import FewShotSegmenter
from painter_seg.data.synthetic import generate_episode
from painter_seg.errors import InputError
from painter_seg.strategies import build_strategy
from painter_seg.utils.runtime import CompiledModel


def _episode():
    ep = generate_episode(3, kind="multiclass", size=(64, 96))
    return ep.prompts[0], ep.query[0]


def test_strategies_predict_under_inference_mode(tiny_model):
    h, w = tiny_model.img_size[0] // 2, tiny_model.img_size[1]
    g = torch.Generator().manual_seed(0)
    imgs, masks = (torch.randn(2, 3, h, w, generator=g) for _ in range(2))
    q = torch.randn(1, 3, h, w, generator=g)
    for name in ("plain", "spatial_ensemble", "feature_ensemble"):
        s = build_strategy(name, tiny_model)
        s.set_prompts(imgs[:1] if name == "plain" else imgs, masks[:1] if name == "plain" else masks)
        out = s.predict_torch(q)
        assert out.is_inference() and not out.requires_grad, name


def test_compile_off_keeps_the_model_itself(tiny_model):
    seg = FewShotSegmenter(tiny_model)
    assert seg.strategy.model is tiny_model and seg.compile is False


def test_compile_failure_falls_back_to_eager_with_one_warning(tiny_model, monkeypatch, caplog):
    (img, lab), q = _episode()
    ref = FewShotSegmenter(tiny_model)
    ref.set_prompts([img], [lab])
    expected = ref.predict(q)

    def broken_compile(model, **kwargs):
        def call(*a, **k):
            raise torch._dynamo.exc.BackendCompilerFailed(lambda *x: None, RuntimeError("no C++ compiler"))
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    seg = FewShotSegmenter(tiny_model, compile=True)
    assert isinstance(seg.strategy.model, CompiledModel)
    seg.set_prompts([img], [lab])
    with caplog.at_level(logging.WARNING, logger="painter_seg.utils.runtime"):
        out = seg.predict(q)
        again = seg.predict(q)
    warnings = [r.getMessage() for r in caplog.records if "compile" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "running eager" in warnings[0]
    assert np.array_equal(out.labels, expected.labels) and np.array_equal(again.paint, expected.paint)


def test_compiled_model_passes_model_errors_through(tiny_model, monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", lambda model, **kw: model)  # "compiles" to the eager model
    cm = CompiledModel(tiny_model)
    x = torch.zeros(1, 3, 32, 32)
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match="canvas must be"):
        cm(x, x)
    assert not caplog.records and cm.compiled is not None  # not a compile problem: no warning, still compiled
    assert cm.img_size == tiny_model.img_size  # attributes are the model's


def test_unknown_precision_fails_at_construction(tiny_model):
    with pytest.raises(InputError, match="precision=fp8"):
        FewShotSegmenter(tiny_model, precision="fp8")


def test_inference_forward_reuses_one_bias_buffer_and_is_bit_identical(tiny_model, monkeypatch):
    """Without autograd the blocks write their rel-pos bias into one shared buffer; the result is bit-identical
    to fresh bias tensors, and within float rounding of the autograd forward (SDPA picks another kernel there)."""
    from painter_seg.model import layers, seggpt

    n = 2
    h, w = tiny_model.img_size
    g = torch.Generator().manual_seed(1)
    imgs, tgts = (torch.randn(n, 3, h, w, generator=g) for _ in range(2))
    mask = tiny_model.query_mask()
    with torch.enable_grad():
        grad_ref = tiny_model(imgs, tgts, mask, feature_ensemble=True).detach()
    with monkeypatch.context() as m, torch.inference_mode():
        m.setattr(seggpt, "BiasWorkspace", lambda: None)  # every block allocates its own bias
        ref = tiny_model(imgs, tgts, mask, feature_ensemble=True)

    allocations = []
    real_take = layers.BiasWorkspace.take

    def take(self, shape, dtype, device):
        before = self._buf
        out = real_take(self, shape, dtype, device)
        allocations.append(self._buf is not before)
        return out

    monkeypatch.setattr(layers.BiasWorkspace, "take", take)
    with torch.inference_mode():
        out = tiny_model(imgs, tgts, mask, feature_ensemble=True)
    assert torch.equal(out, ref)
    assert torch.allclose(out, grad_ref, atol=1e-5, rtol=0)
    # one allocation; every later (sample, head group) of every block, before and after the merge, reuses it
    assert allocations[0] and not any(allocations[1:])
    depth, merged = len(tiny_model.blocks), tiny_model.merge_index + 1
    assert len(allocations) == merged * 2 * n + (depth - merged) * n  # 2N streams, then N (all heads per group)


def test_attention_head_groups_give_the_same_numbers(tiny_model):
    """A small workspace budget splits attention into groups of heads: same result as one group."""
    from painter_seg.model.layers import BiasWorkspace

    attn = tiny_model.blocks[0].attn
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, *tiny_model.grid_size, tiny_model.embed_dim, generator=g)
    per_head = (x.shape[1] * x.shape[2]) ** 2 * 4
    with torch.inference_mode():
        whole = attn(x, BiasWorkspace())
        one_head = attn(x, BiasWorkspace(max_bytes=per_head))
        two_heads = attn(x, BiasWorkspace(max_bytes=2 * per_head))
        plain = attn(x)
    assert attn.num_heads > 2
    assert torch.allclose(one_head, whole, atol=1e-6, rtol=0) and torch.allclose(two_heads, whole, atol=1e-6, rtol=0)
    assert torch.allclose(plain, whole, atol=1e-6, rtol=0)


def test_folded_rel_pos_attention_matches_the_bias_mask(tiny_model):
    """Reduced precision on the CPU folds the rel-pos bias into the logits' product (query gets its rel-pos
    terms appended, key its one-hot row and column): same attention as the bias given to SDPA as a mask."""
    import copy

    import torch.nn.functional as F

    from painter_seg.model.layers import BiasWorkspace, decomposed_rel_pos_bias

    attn = copy.deepcopy(tiny_model.blocks[0].attn)  # the fixture is shared: change a copy
    size = tiny_model.grid_size
    length, nh, c = size[0] * size[1], attn.num_heads, attn.head_dim
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(nh, length, c, generator=g) for _ in range(3))
    with torch.no_grad():
        attn.rel_pos_h.copy_(torch.randn(attn.rel_pos_h.shape, generator=g))
        attn.rel_pos_w.copy_(torch.randn(attn.rel_pos_w.shape, generator=g))
        bias = decomposed_rel_pos_bias(q[None], attn.rel_pos_h, attn.rel_pos_w, size)
        ref = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=bias)[0]
        folded = attn._folded_attention(q, k, v, size, BiasWorkspace())
        onehot = BiasWorkspace().key_positions(size, torch.float32, q.device)
    assert bias.abs().max() > 1  # the bias matters
    assert torch.allclose(folded, ref, atol=1e-5, rtol=0)
    assert onehot.shape == (length, sum(size)) and torch.equal(onehot.sum(1), torch.full((length,), 2.0))


def test_bf16_inference_path_is_as_close_to_fp32_as_the_fused_kernel(tiny_model, monkeypatch):
    """Under bf16 autocast the CPU inference forward (folded attention, in-place softmax) stays as close to the
    fp32 forward as bf16 with the fused kernel does."""
    from painter_seg.model import seggpt

    h, w = tiny_model.img_size
    g = torch.Generator().manual_seed(4)
    imgs, tgts = (torch.randn(2, 3, h, w, generator=g) for _ in range(2))
    mask = tiny_model.query_mask()
    with torch.inference_mode():
        ref = tiny_model(imgs, tgts, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours = tiny_model(imgs, tgts, mask).float()
            monkeypatch.setattr(seggpt, "BiasWorkspace", lambda: None)  # no workspace: SDPA with the bias as mask
            fused = tiny_model(imgs, tgts, mask).float()
    err, err_fused = (ref - ours).abs().mean().item(), (ref - fused).abs().mean().item()
    assert 0 < err < 1.5 * err_fused + 1e-4, (err, err_fused)
