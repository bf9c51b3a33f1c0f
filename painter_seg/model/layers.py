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


def resample_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """A relative-position table ``[L, C]`` resampled linearly to ``[length, C]`` (a model on another canvas).

    The table spans offsets ``-(n-1) .. n-1`` of an ``n``-patch axis; stretching it keeps an offset that is the same
    fraction of the image on the same row, as the official model does for a query of another size.
    """
    if rel_pos.shape[0] == length:
        return rel_pos
    out = F.interpolate(rel_pos.float().T[None], size=length, mode="linear")[0].T
    return out.to(rel_pos.dtype).contiguous()


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
        rel_pos = resample_rel_pos(rel_pos, max_rel_dist)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


def rel_pos_terms(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, size: tuple[int, int]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's dot products with the row and column tables: ``q`` ``[..., H*W, C]`` (unscaled) ->
    ``([..., H, W, kH], [..., H, W, kW])``; the decomposed bias of query (i, j) to key (k, l) is
    ``rel_h[i, j, k] + rel_w[i, j, l]``."""
    h, w = size
    rh = get_rel_pos(h, h, rel_pos_h).to(q.dtype)
    rw = get_rel_pos(w, w, rel_pos_w).to(q.dtype)
    r_q = q.reshape(*q.shape[:-2], h, w, q.shape[-1])
    return torch.einsum("...hwc,hkc->...hwk", r_q, rh), torch.einsum("...hwc,wkc->...hwk", r_q, rw)


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
    b, nh = q.shape[:2]
    rel_h, rel_w = rel_pos_terms(q, rel_pos_h, rel_pos_w, size)  # [B, n, H, W, kH], [B, n, H, W, kW]
    if workspace is None:
        bias = rel_h[..., :, None] + rel_w[..., None, :]  # [B, n, H, W, kH, kW]
        return bias.reshape(b, nh, h * w, h * w)
    out = workspace.take((b, nh, h, w, h, w), q.dtype, q.device)
    torch.add(rel_h[..., :, None], rel_w[..., None, :], out=out)
    return out.view(b, nh, h * w, h * w)


class BiasWorkspace:
    """Scratch memory for CPU inference attention, reused by every block of ONE forward.

    Each (sample, head group) needs one ``heads x L x L`` scratch tensor: the rel-pos bias in fp32, the logits
    in bf16/fp16 (see :meth:`Attention._attend_in_groups`); 157 MB for ViT-L's 1,568 tokens and 16 heads in
    fp32. A fresh tensor of that size is a fresh mmap on the CPU, and filling it page-faults every page
    (measured on the 2-core box: a ViT-L block's attention core took 0.45 s with fresh bias tensors and 0.22 s
    with the buffer reused; a bf16 softmax of one head group 26 ms into a fresh tensor, 8.6 ms in place), so the
    buffer is allocated once per forward and reused. Only for forwards without autograd (the next block
    overwrites it); the encoder creates one per forward, so nothing outlives the call. Attention runs over
    groups of (sample, head) slices whose scratch fits ``max_bytes`` (160 MiB: all 16 heads of one ViT-L sample
    in fp32), so peak memory does not grow with the batch (2N streams before the merge, N prompts under feature
    ensemble); each slice's numbers are the same as in one call.
    """

    def __init__(self, max_bytes: int = 160 << 20) -> None:
        self.max_bytes = max_bytes
        self._buf: torch.Tensor | None = None
        self._keys: dict[tuple, torch.Tensor] = {}

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised contiguous tensor of ``shape`` backed by the shared buffer (grown when needed)."""
        numel = math.prod(shape)
        buf = self._buf
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != device:
            buf = self._buf = torch.empty(numel, dtype=dtype, device=device)
        return buf[:numel].view(shape)

    def key_positions(self, size: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``[H*W, H+W]`` one-hot rows and columns of every key on an ``(H, W)`` grid (cached per forward)."""
        key = (size, dtype, device)
        if key not in self._keys:
            h, w = size
            rows = torch.arange(h, device=device).repeat_interleave(w)
            cols = torch.arange(w, device=device).repeat(h)
            onehot = torch.zeros(h * w, h + w, dtype=dtype, device=device)
            onehot[torch.arange(h * w, device=device), rows] = 1
            onehot[torch.arange(h * w, device=device), h + cols] = 1
            self._keys[key] = onehot
        return self._keys[key]


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
        """CPU inference path: attention over groups of heads of one sample at a time, each group's ``L x L``
        scratch (bias or logits) in the workspace buffer. ``q, k, v``: ``[B, heads, L, C]`` ->
        ``[B, H, W, heads * C]``.

        fp32 builds the bias and calls the fused kernel (``scaled_dot_product_attention`` with the bias as its
        mask). Lower precisions fold the bias into the logits (:meth:`_folded_attention`): torch's CPU flash
        kernel runs bf16 no faster than fp32, while bf16 matrix products run 4.6 times faster on a CPU with
        AVX512-BF16. Measured per ViT-L block (B = 2, 1,568 tokens, 2-core AVX-512 box): bf16 0.111 s folded
        against 0.218 s fused; fp32 0.311 s fused against 0.379 s folded.
        """
        b, nh, length, c = q.shape
        group = max(1, min(nh, workspace.max_bytes // (length * length * q.element_size())))
        folded = q.dtype != torch.float32
        out = q.new_empty(b, length, nh, c)  # token-major, so the merge of the heads is free
        for i in range(b):
            for h0 in range(0, nh, group):
                sl = (slice(i, i + 1), slice(h0, h0 + group))
                if folded:
                    o = self._folded_attention(q[sl][0], k[sl][0], v[sl][0], size, workspace)
                else:
                    bias = decomposed_rel_pos_bias(q[sl], self.rel_pos_h, self.rel_pos_w, size, workspace)
                    o = F.scaled_dot_product_attention(q[sl], k[sl], v[sl], attn_mask=bias)[0]
                out[i, :, h0 : h0 + group] = o.transpose(0, 1)
        return out.view(b, *size, nh * c)

    def _folded_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: tuple[int, int],
                          workspace: BiasWorkspace) -> torch.Tensor:
        """Attention with the rel-pos bias folded into the logits' matrix product; ``[g, L, C]`` each -> same.

        The bias ``q . Rh[row_q - row_k] + q . Rw[col_q - col_k]`` is a dot product with the key's one-hot row
        and column: each query gets its ``H + W`` rel-pos terms appended (``[s * q, rel_h, rel_w]``) and each key
        its one-hots (``[k, e_row, e_col]``), so one product of depth ``C + H + W`` gives ``s * q . k + bias``
        and no ``L x L`` bias is built. The logits land in the workspace, the softmax runs over them in place,
        and a second product takes the values.
        """
        g, length, _ = q.shape
        h, w = size
        rel_h, rel_w = rel_pos_terms(q, self.rel_pos_h, self.rel_pos_w, size)
        q_aug = torch.cat([q * self.scale, rel_h.reshape(g, length, h), rel_w.reshape(g, length, w)], dim=-1)
        k_aug = torch.cat([k, workspace.key_positions(size, q.dtype, q.device).expand(g, length, h + w)], dim=-1)
        logits = workspace.take((g, length, length), q.dtype, q.device)
        torch.bmm(q_aug, k_aug.transpose(1, 2), out=logits)
        return torch.bmm(_softmax_(logits), v)


def _softmax_(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension written over ``x`` (no new ``L x L`` tensor)."""
    return torch.ops.aten._softmax.out(x, -1, False, out=x)


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


def conv_stages(in_chans: int, widths: Sequence[int], extra: Sequence[int] | None = None
                ) -> tuple[nn.Sequential, int]:
    """Stride-2 3 x 3 convolution stages with GELU (``extra[i]`` more stride-1 ones at stage ``i``): the body of
    :class:`ConvStem` and of :class:`painter_seg.model.matcher.RegionMatcher`. Returns ``(body, out channels)``."""
    widths = [int(w) for w in widths]
    extra = [0] * len(widths) if extra is None else [int(e) for e in extra]
    if not widths or len(extra) != len(widths) or min(widths) < 1 or min(extra) < 0:
        raise ValueError(f"conv stages: widths {widths} (>= 1 each) and extra {extra} (one count >= 0 per stage) "
                         "do not describe a stack")
    layers, c = [], int(in_chans)
    for w, e in zip(widths, extra, strict=True):
        layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.GELU()]
        for _ in range(e):
            layers += [nn.Conv2d(w, w, 3, padding=1), nn.GELU()]
        c = w
    return nn.Sequential(*layers), c


class ConvStem(nn.Module):
    """A convolutional path beside the patch embedding: per-patch features seen over several patches.

    A linear patch embedding sees each patch alone, and an object a few patches wide is told apart by its outline
    across them, which a plain ViT learns only from very many samples (docs/training "Stage 15"). The stem averages
    the image over ``pool`` x ``pool`` cells, halves the resolution once per entry of ``widths`` (3 x 3
    convolutions with GELU, ``extra`` more stride-1 ones at each scale), resizes its features bilinearly to the token
    grid and projects them to the token width with a zero-initialised 1 x 1 convolution: added to the patch
    embedding, a new stem leaves the network's output unchanged. No normalisation layers: a stem pretrained with
    BatchNorm (:mod:`painter_seg.training.stem_pretrain`) has it folded into the convolutions.

    Args:
        in_chans: input channels.
        embed_dim: token width.
        patch_size: the token grid is the input's size over ``patch_size``.
        widths: channels of each stage (one stride-2 convolution each).
        extra: additional stride-1 convolutions of each stage.
        pool: the average pooling before the first stage (1: none).
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, widths: Sequence[int],
                 extra: Sequence[int] | None = None, pool: int = 1) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        extra = [0] * len(widths) if extra is None else [int(e) for e in extra]
        if not widths or len(extra) != len(widths) or min(widths) < 1 or min(extra) < 0 or int(pool) < 1:
            raise ValueError(f"conv stem: widths {widths} (>= 1 each), extra {extra} (one count >= 0 per stage) "
                             f"and pool {pool} (>= 1) do not describe a stem")
        self.patch_size, self.pool = patch_size, int(pool)
        self.body, self.width = conv_stages(in_chans, widths, extra)
        self.proj = nn.Conv2d(self.width, embed_dim, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's features ``[N, width, h, w]`` (before resizing and projection)."""
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` -> ``[N, H / p, W / p, embed_dim]`` (NHWC, as the patch embedding)."""
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        f = self.features(x)
        if tuple(f.shape[-2:]) != grid:
            f = F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
        return self.proj(f).permute(0, 2, 3, 1)
