"""Transformer building blocks of the SegGPT encoder.

Attribute names follow the official checkpoint (``norm1``, ``attn.qkv``, ``attn.rel_pos_h``, ``mlp.fc1`` ...), so the
original ``seggpt_vit_large.pth`` loads strictly with no renaming.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

# Feature-ensemble modes of a block (see ``feature_ensemble`` below).
ENSEMBLE_OFF = 0
ENSEMBLE_PER_STREAM = 1  # blocks up to the stream merge: batch is [image streams; mask streams]
ENSEMBLE_BATCH = 2  # blocks after the merge: batch is N prompts of one query


def validate_layer_indices(name: str, indices: Sequence[int], depth: int) -> list[int]:
    """Check that ``indices`` is a flat, strictly increasing list of ints in ``[0, depth)``.

    Painter built its window-block list as a tuple of lists, so ``i in indices`` was always False; a flat,
    typed check at build time turns that kind of mistake into an error.
    """
    out = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int):
            msg = f"{name} must be a flat list of ints, got element {i!r} in {list(indices)!r}"
            raise ValueError(msg)  # noqa: TRY004 (one error type for config checks)
        if not 0 <= i < depth:
            raise ValueError(f"{name}: index {i} is outside [0, {depth}) for a {depth}-block encoder")
        out.append(i)
    if out != sorted(set(out)):
        raise ValueError(f"{name} must be strictly increasing without repeats, got {out}")
    return out


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative positional embeddings for every (query, key) pair along one axis.

    Args:
        q_size: number of query positions on this axis.
        k_size: number of key positions on this axis.
        rel_pos: table ``[2 * max(q_size, k_size) - 1, C]`` (resampled linearly if its length differs).

    Returns:
        ``[q_size, k_size, C]`` where entry ``[i, j]`` is the table row for offset ``i - j``.
    """
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist, mode="linear"
        ).reshape(-1, max_rel_dist).permute(1, 0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


def decomposed_rel_pos_bias(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    size: tuple[int, int],
    workspace: BiasWorkspace | None = None,
) -> torch.Tensor:
    """Additive attention bias of MViTv2-style decomposed relative positions.

    Args:
        q: the **unscaled** queries ``[B, heads, H*W, C]`` (official: the bias uses q before the 1/sqrt(C) scale).
        rel_pos_h / rel_pos_w: tables ``[2H-1, C]`` / ``[2W-1, C]``.
        size: token grid ``(H, W)``; keys live on the same grid.
        workspace: inference only; the bias is written into its reusable buffer instead of a fresh tensor.

    Returns:
        bias ``[B, heads, H*W, H*W]`` in q's dtype, to add to the attention logits.
    """
    h, w = size
    rh = get_rel_pos(h, h, rel_pos_h).to(q.dtype)
    rw = get_rel_pos(w, w, rel_pos_w).to(q.dtype)
    b, nh, _, c = q.shape
    r_q = q.reshape(b, nh, h, w, c)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh)  # [B, n, H, W, kH]
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw)  # [B, n, H, W, kW]
    if workspace is None:
        bias = rel_h[..., :, None] + rel_w[..., None, :]  # [B, n, H, W, kH, kW]
        return bias.reshape(b, nh, h * w, h * w)
    out = workspace.take((b, nh, h, w, h, w), q.dtype, q.device)
    torch.add(rel_h[..., :, None], rel_w[..., None, :], out=out)
    return out.view(b, nh, h * w, h * w)


class BiasWorkspace:
    """Scratch memory for the attention bias, reused by every block of ONE inference forward.

    The bias is ``B * heads * L * L`` values in every block (157 MB for ViT-L's 1,568 tokens in fp32 at B = 1).
    A fresh tensor of that size is a fresh mmap on CPU, and filling it page-faults every page: measured on the
    2-core box, that doubled the attention time of a ViT-L block (0.45 s -> 0.22 s with the buffer reused).
    Only for CPU forwards without autograd (the buffer is overwritten by the next block); the encoder creates
    one per forward, so nothing outlives the call. Attention then runs over groups of (sample, head) slices whose
    bias fits ``max_bytes`` (160 MiB: all 16 heads of one ViT-L sample in fp32), so peak memory does not grow
    with the batch (2N streams before the merge, N prompts under feature ensemble); each slice's numbers are
    the same as in one call. Measured per ViT-L block on the 2-core box: 0.364 s with one group per sample,
    0.382 s with 64 MiB groups (6 heads), 0.427 s without the workspace.
    """

    def __init__(self, max_bytes: int = 160 << 20) -> None:
        self.max_bytes = max_bytes
        self._buf: torch.Tensor | None = None

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised contiguous tensor of ``shape`` backed by the shared buffer (grown when needed)."""
        numel = math.prod(shape)
        buf = self._buf
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != device:
            buf = self._buf = torch.empty(numel, dtype=dtype, device=device)
        return buf[:numel].view(shape)


class Attention(nn.Module):
    """Global multi-head self-attention over a 2-D token grid with decomposed relative positions.

    Two numerically equivalent paths: ``fused_attn=True`` calls
    ``torch.nn.functional.scaled_dot_product_attention`` with the relative-position term as an additive bias;
    ``fused_attn=False`` writes the softmax out (the official formulation).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        input_size: tuple[int, int],
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        fused_attn: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            # Zero init as the official model (rel_pos_zero_init=True).
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, self.head_dim))

    def forward(self, x: torch.Tensor, workspace: BiasWorkspace | None = None) -> torch.Tensor:
        """x: ``[B, H, W, C]`` channel-last tokens -> same shape (``workspace``: see :class:`BiasWorkspace`)."""
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, heads, L, C]
        if workspace is not None and self.use_rel_pos and self.fused_attn:
            return self.proj(self._attend_in_groups(q, k, v, (h, w), workspace))
        bias = None
        if self.use_rel_pos:
            bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w))
        if self.fused_attn:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if bias is not None:
                attn = attn + bias
            out = attn.softmax(dim=-1) @ v
        out = out.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(out)

    def _attend_in_groups(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: tuple[int, int],
                          workspace: BiasWorkspace) -> torch.Tensor:
        """Inference path: fused attention over groups of heads of one sample at a time, each group's bias in
        the workspace buffer. ``q, k, v``: ``[B, heads, L, C]`` -> ``[B, H, W, heads * C]``."""
        b, nh, length, c = q.shape
        per_head = length * length * q.element_size()
        group = max(1, min(nh, workspace.max_bytes // per_head))
        out = q.new_empty(b, length, nh, c)  # token-major, so the merge of the heads is free
        for i in range(b):
            for h0 in range(0, nh, group):
                sl = (slice(i, i + 1), slice(h0, h0 + group))
                bias = decomposed_rel_pos_bias(q[sl], self.rel_pos_h, self.rel_pos_w, size, workspace)
                out[i, :, h0 : h0 + group] = F.scaled_dot_product_attention(
                    q[sl], k[sl], v[sl], attn_mask=bias)[0].transpose(0, 1)
        return out.view(b, *size, nh * c)


def feature_ensemble(a: torch.Tensor, mode: int) -> torch.Tensor:
    """Average the query (bottom) half of an attention output across prompts, as the official SegGPT does.

    Args:
        a: attention-branch output ``[B, H, W, C]``; rows ``H//2:`` are the query half of the canvas.
        mode: ``ENSEMBLE_PER_STREAM`` when B = 2N (image streams then mask streams; mean over the N prompts of
            each stream separately) or ``ENSEMBLE_BATCH`` when B = N (mean over all N).

    Returns:
        Tensor like ``a`` whose query half is identical across prompts (within each stream); the prompt half
        is untouched.
    """
    top, bottom = a.split(a.shape[1] // 2, dim=1)
    if mode == ENSEMBLE_PER_STREAM:
        streams = bottom.reshape(2, bottom.shape[0] // 2, *bottom.shape[1:])
        bottom = streams.mean(dim=1, keepdim=True).expand_as(streams).reshape(bottom.shape)
    elif mode == ENSEMBLE_BATCH:
        bottom = bottom.mean(dim=0, keepdim=True).expand_as(bottom)
    else:
        raise ValueError(f"unknown feature-ensemble mode {mode}")
    return torch.cat([top, bottom], dim=1)


class Block(nn.Module):
    """Pre-norm transformer block on ``[B, H, W, C]`` tokens (global attention, rel-pos, MLP)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        input_size: tuple[int, int],
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        use_rel_pos: bool = True,
        fused_attn: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, input_size, qkv_bias, use_rel_pos, fused_attn)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(
        self, x: torch.Tensor, ensemble: int = ENSEMBLE_OFF, workspace: BiasWorkspace | None = None
    ) -> torch.Tensor:
        a = self.attn(self.norm1(x), workspace)
        if ensemble != ENSEMBLE_OFF:
            # official: the ensemble acts on the attention branch only, before the residual add
            a = feature_ensemble(a, ensemble)
        x = x + self.drop_path(a)
        return x + self.drop_path(self.mlp(self.norm2(x)))
