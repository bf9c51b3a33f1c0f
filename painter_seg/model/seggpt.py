"""The SegGPT network: a ViT that paints the query half of a (image, mask) canvas.

Numerically this is the official ``models_seggpt.py`` (baaivision/Painter, SegGPT) at inference and training
time, with the hard-coded constants (merge block, decoder feature blocks) turned into validated arguments.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from timm.layers import LayerNorm2d, PatchEmbed, resample_abs_pos_embed, trunc_normal_
from torch import nn

from .layers import (
    ENSEMBLE_BATCH,
    ENSEMBLE_OFF,
    ENSEMBLE_PER_STREAM,
    BiasWorkspace,
    Block,
    ConvStem,
    validate_layer_indices,
)
from .matcher import RegionMatcher


def _frozen(sub_args: Mapping) -> dict:
    """A nested module's arguments as given in a config, lists as tuples (what ``init_args`` keeps)."""
    return {k: v if isinstance(v, int) or v is None else tuple(v) for k, v in dict(sub_args).items()}


class SegGPT(nn.Module):
    """In-context segmentation by masked image modelling on stitched canvases.

    The canvas is two images stacked vertically: the prompt on top, the query below. The image stream carries
    ``[prompt image; query image]``, the mask stream ``[prompt mask; anything]`` whose query half is replaced by
    the mask token (``bool_masked_pos``). The model returns the whole painted mask canvas.

    Args:
        img_size: canvas ``(H, W)`` in pixels, H = 2 * W (e.g. ``(896, 448)`` for the official ViT-L).
        patch_size: patch side in pixels.
        embed_dim / depth / num_heads / mlp_ratio: encoder geometry.
        merge_index: block after which the image and mask streams are averaged into one.
        feature_layers: blocks whose (normed) outputs feed the decoder; each must be >= merge_index.
        decoder_embed_dim: channels of the per-pixel decoder head.
        pretrain_img_size: the absolute position table is a ``(pretrain_img_size / patch)^2`` grid plus a
            (unused) class slot, resampled bicubically to the canvas grid at run time.
        drop_path_rate: stochastic depth, linear from 0 over the blocks (training only).
        fused_attn: use ``scaled_dot_product_attention`` (True) or the explicit softmax path (False).
        conv_stem: None (the reference) or ``{"widths": [...], "extra": [...], "pool": p}``: a
            :class:`~painter_seg.model.layers.ConvStem` whose output is added to the image stream's patch
            embedding (the mask stream keeps the linear embedding alone).
        region_matcher: None or the arguments of a :class:`~painter_seg.model.matcher.RegionMatcher` (``widths``,
            ``extra``, ``pool``, ``num_classes``, ``window``): a shape-family CNN kept beside the network, never
            part of its forward, that the few-shot decoder uses to give painted regions their class
            (:mod:`painter_seg.codec.assign`); its weights live in the same checkpoint (``matcher.*``).

    Attributes set by :func:`painter_seg.build.build_model` from the model config (not weights):
        config_name: the config's name.
        palette: the colours its prompt masks are painted in (a key of
            :data:`painter_seg.codec.palette.PALETTES`; ``seggpt``, the reference's, unless the config says).
    """

    palette: str = "seggpt"

    def __init__(
        self,
        img_size: Sequence[int] = (896, 448),
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        merge_index: int = 2,
        feature_layers: Sequence[int] = (5, 11, 17, 23),
        decoder_embed_dim: int = 64,
        pretrain_img_size: int = 224,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
        use_rel_pos: bool = True,
        fused_attn: bool = True,
        conv_stem: Mapping[str, Sequence[int]] | None = None,
        region_matcher: Mapping[str, Sequence[int] | int] | None = None,
    ) -> None:
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}  # the arguments, as given
        args["feature_layers"] = tuple(feature_layers)
        if conv_stem is not None:
            unknown = set(dict(conv_stem)) - {"widths", "extra", "pool"}
            if unknown or "widths" not in conv_stem:
                raise ValueError(f"conv_stem: unknown keys {sorted(unknown)} or no widths (expected widths, extra, pool)")
            args["conv_stem"] = _frozen(conv_stem)
        if region_matcher is not None:
            unknown = set(dict(region_matcher)) - {"widths", "extra", "pool", "num_classes", "window"}
            if unknown:
                raise ValueError(f"region_matcher: unknown keys {sorted(unknown)} (expected widths, extra, pool, "
                                 "num_classes, window)")
            args["region_matcher"] = _frozen(region_matcher)
        super().__init__()
        self.init_args = args  # what with_canvas rebuilds from
        img_size = tuple(int(s) for s in img_size)
        if len(img_size) != 2 or img_size[0] != 2 * img_size[1]:
            raise ValueError(f"img_size must be (2*W, W) (prompt over query), got {img_size}")
        if img_size[0] % patch_size or img_size[1] % patch_size or img_size[1] // patch_size < 1:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        if (img_size[0] // patch_size) % 2:
            raise ValueError(f"the canvas grid height {img_size[0] // patch_size} must be even (two halves)")
        (self.merge_index,) = validate_layer_indices("merge_index", [merge_index], depth)
        self.feature_layers = validate_layer_indices("feature_layers", list(feature_layers), depth)
        if self.feature_layers and self.feature_layers[0] < self.merge_index:
            raise ValueError(
                f"feature_layers {self.feature_layers} must not precede merge_index {self.merge_index}: "
                "the decoder reads the merged stream"
            )
        if not self.feature_layers:
            raise ValueError("feature_layers must name at least one block")
        if pretrain_img_size % patch_size:
            raise ValueError(f"pretrain_img_size {pretrain_img_size} is not a multiple of {patch_size}")

        self.img_size = img_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.pretrain_grid = pretrain_img_size // patch_size
        self.decoder_embed_dim = decoder_embed_dim
        # token rows per decoder band in CPU inference (see forward_decoder): 8 rows of ViT-L = 15 MB tensors
        self.decoder_band_rows = 8

        self.patch_embed = PatchEmbed(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            flatten=False,
            output_fmt="NHWC",
        )
        self.stem = None
        if conv_stem is not None:
            self.stem = ConvStem(in_chans, embed_dim, patch_size, conv_stem["widths"], conv_stem.get("extra"),
                                 conv_stem.get("pool", 1))
        self.matcher = None
        if region_matcher is not None:
            self.matcher = RegionMatcher(in_chans=in_chans, **args["region_matcher"])
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, embed_dim))
        self.segment_token_x = nn.Parameter(torch.zeros(1, 1, 1, embed_dim))  # image stream
        self.segment_token_y = nn.Parameter(torch.zeros(1, 1, 1, embed_dim))  # mask stream
        self.type_token_cls = nn.Parameter(torch.zeros(1, 1, 1, embed_dim))  # seg_type 0: semantic
        self.type_token_ins = nn.Parameter(torch.zeros(1, 1, 1, embed_dim))  # seg_type 1: instance
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pretrain_grid**2 + 1, embed_dim))

        # linear stochastic-depth rule; plain floats, as the model may be built on the meta device
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                self.grid_size,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=dpr[i],
                norm_eps=norm_eps,
                use_rel_pos=use_rel_pos,
                fused_attn=fused_attn,
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

        self.decoder_embed = nn.Linear(
            embed_dim * len(self.feature_layers), patch_size**2 * decoder_embed_dim, bias=True
        )
        self.decoder_pred = nn.Sequential(
            nn.Conv2d(decoder_embed_dim, decoder_embed_dim, kernel_size=3, padding=1),
            LayerNorm2d(decoder_embed_dim, eps=norm_eps),
            nn.GELU(),
            nn.Conv2d(decoder_embed_dim, in_chans, kernel_size=1, bias=True),
        )
        self._init_weights()

    # ------------------------------------------------------------------ init
    def _init_weights(self) -> None:
        """Official initialisation: tokens N(0, .02), pos trunc-normal .02, Linear trunc-normal .02 / bias 0."""
        for t in (self.mask_token, self.segment_token_x, self.segment_token_y):
            nn.init.normal_(t, std=0.02)
        for t in (self.type_token_cls, self.type_token_ins):
            nn.init.normal_(t, std=0.02)
        trunc_normal_(self.pos_embed, std=0.02)  # convolutions keep PyTorch's default init

        def _init(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

        self.apply(_init)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "mask_token", "segment_token_x", "segment_token_y", "type_token_cls",
                "type_token_ins"}

    def with_canvas(self, img_size: Sequence[int]) -> SegGPT:
        """The same network on another canvas ``(2 * W, W)``, sharing every weight with this one.

        Only the relative-position tables depend on the canvas: the twin holds them resampled
        (:func:`painter_seg.checkpoint.fit_rel_pos`); every other parameter is this model's own tensor, so the twin
        costs a few kilobytes and always sees this model's weights. Returns ``self`` when the canvas is already this one.
        """
        img_size = tuple(int(s) for s in img_size)
        if img_size == self.img_size:
            return self
        with torch.device("meta"):
            twin = type(self)(**{**self.init_args, "img_size": img_size})
        # the one home of the table fitting; imported here because painter_seg.checkpoint imports this package
        from ..checkpoint import fit_rel_pos
        with torch.no_grad():
            state, _, _ = fit_rel_pos(twin, self.state_dict(keep_vars=True))
        twin.load_state_dict(state, strict=True, assign=True)
        twin.config_name = getattr(self, "config_name", None)
        twin.palette = self.palette
        return twin.train(self.training)

    # ------------------------------------------------------------------ pieces
    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def abs_pos(self) -> torch.Tensor:
        """Absolute positions resampled to the canvas grid: ``[1, Hp, Wp, C]`` (class slot dropped)."""
        pos = resample_abs_pos_embed(
            self.pos_embed,
            new_size=list(self.grid_size),
            old_size=[self.pretrain_grid, self.pretrain_grid],
            num_prefix_tokens=1,
            interpolation="bicubic",
            antialias=False,  # official: plain bicubic, align_corners=False
        )
        return pos[:, 1:].reshape(1, *self.grid_size, self.embed_dim)

    def type_embedding(self, seg_type: torch.Tensor | None, n: int, ref: torch.Tensor) -> torch.Tensor:
        """Per-sample type token ``[N, 1, 1, C]``: 0 -> semantic, 1 -> instance (None: all instance)."""
        if seg_type is None:
            seg_type = torch.ones(n, device=ref.device)
        st = seg_type.reshape(-1).to(device=ref.device)
        if st.numel() == 1 and n > 1:
            st = st.expand(n)
        if st.numel() != n:
            raise ValueError(f"seg_type has {st.numel()} entries for a batch of {n}")
        st = st.to(ref.dtype).reshape(n, 1, 1, 1)
        return self.type_token_cls * (1 - st) + self.type_token_ins * st

    def forward_features(
        self,
        imgs: torch.Tensor,
        tgts: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        seg_type: torch.Tensor | None = None,
        feature_ensemble: bool = False,
    ) -> list[torch.Tensor]:
        """Encoder: returns the normed outputs of ``feature_layers``, each ``[N, Hp, Wp, C]``."""
        if imgs.shape != tgts.shape:
            raise ValueError(f"imgs {tuple(imgs.shape)} and tgts {tuple(tgts.shape)} must have the same shape")
        if tuple(imgs.shape[-2:]) != self.img_size:
            raise ValueError(f"canvas must be {self.img_size} (H, W), got {tuple(imgs.shape[-2:])}")
        n = imgs.shape[0]
        x = self.patch_embed(imgs)
        if self.stem is not None:
            x = x + self.stem(imgs)
        y = self.patch_embed(tgts)
        if bool_masked_pos is not None:
            if bool_masked_pos.shape[-1] != self.num_patches or bool_masked_pos.shape[0] not in (1, n):
                raise ValueError(
                    f"bool_masked_pos must be [1 or {n}, {self.num_patches}], got {tuple(bool_masked_pos.shape)}"
                )
            w = bool_masked_pos.reshape(-1, *self.grid_size, 1).to(y.dtype)
            y = y * (1 - w) + self.mask_token.to(y.dtype) * w
        type_emb = self.type_embedding(seg_type, n, x)
        pos = self.abs_pos()
        x = x + self.segment_token_x + pos + type_emb
        y = y + self.segment_token_y + pos + type_emb

        h = torch.cat([x, y], dim=0)
        # CPU inference: the blocks share one buffer for their attention bias (see BiasWorkspace). On CUDA the
        # caching allocator already reuses memory, and one batched attention call per block is faster.
        workspace = None if torch.is_grad_enabled() or h.device.type != "cpu" else BiasWorkspace()
        feats = []
        for i, blk in enumerate(self.blocks):
            mode = ENSEMBLE_OFF
            if feature_ensemble:
                mode = ENSEMBLE_PER_STREAM if i <= self.merge_index else ENSEMBLE_BATCH
            h = blk(h, mode, workspace)
            if i == self.merge_index:
                h = (h[:n] + h[n:]) * 0.5
            if i in self.feature_layers:
                feats.append(self.norm(h))
        return feats

    def forward_decoder(self, feats: list[torch.Tensor], band_rows: int | None = None,
                        first_row: int = 0) -> torch.Tensor:
        """Decoder: feature maps -> painted canvas ``[N, 3, H, W]`` (ImageNet-normalised space).

        The decoder head works at full pixel resolution with ``decoder_embed_dim`` channels: for ViT-L each of
        its intermediate tensors is 103 MB in fp32, and several are alive at once. CPU inference (no autograd)
        therefore runs it in bands: the linear embedding in two halves (or bands of ``band_rows`` token rows if
        larger) written into one pixel tensor, then the convolutional head on bands of ``band_rows`` token rows
        (default :attr:`decoder_band_rows`) with one extra pixel row on either side for its 3x3 convolution, of
        which only the band's own rows are kept. Every output pixel sees the same inputs as in one pass.
        ``band_rows=0`` decodes the canvas in one pass. Measured for ViT-L fp32 on the 2-core box: the
        decoder's in-flight memory drops from about 400 MiB to about 150 MiB, at about the same time.

        ``first_row`` > 0 decodes only the token rows from ``first_row`` on (the query half, for inference:
        ``hp // 2``): the token row above is embedded too, and its last pixel row is the 3x3 convolution's
        halo, so the rows returned are those of the whole canvas's decode.
        """
        x = torch.cat(feats, dim=-1)  # [N, Hp, Wp, C * len(feature_layers)]
        if band_rows is None:
            band_rows = 0 if torch.is_grad_enabled() or x.device.type != "cpu" else self.decoder_band_rows
        if first_row > 0:
            return self._decode_rows(x[:, first_row - 1 :], band_rows)[:, :, self.patch_size :]
        return self._decode_rows(x, band_rows)

    def _decode_rows(self, x: torch.Tensor, band_rows: int) -> torch.Tensor:
        """:meth:`forward_decoder` on concatenated features ``x`` ``[N, hp, Wp, C]`` (all its rows)."""
        n, hp, wp, _ = x.shape
        p, d = self.patch_size, self.decoder_embed_dim
        if band_rows <= 0 or band_rows >= hp:
            band_rows = hp  # one band: the whole canvas
        pix = None  # [N, D, H, W] in the embedding's dtype (bf16 under autocast)
        step = max(band_rows, hp // 2)  # the big matrix product in two halves: narrow bands run it slower
        for r0 in range(0, hp, step):
            r1 = min(r0 + step, hp)
            y = self.decoder_embed(x[:, r0:r1]).reshape(n, r1 - r0, wp, p, p, d)
            if pix is None:
                pix = y.new_empty(n, d, hp * p, wp * p)
            pix[:, :, r0 * p : r1 * p].view(n, d, r1 - r0, p, wp, p).copy_(y.permute(0, 5, 1, 3, 2, 4))
        rows, height = band_rows * p, hp * p
        if rows >= height:
            return self.decoder_pred(pix)
        out = None
        for y0 in range(0, height, rows):
            y1 = min(y0 + rows, height)
            lo, hi = max(y0 - 1, 0), min(y1 + 1, height)
            band = self.decoder_pred(pix[:, :, lo:hi])[:, :, y0 - lo : y1 - lo]
            if out is None:
                out = band.new_empty(n, band.shape[1], height, band.shape[3])
            out[:, :, y0:y1] = band
        return out

    def forward(
        self,
        imgs: torch.Tensor,
        tgts: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        seg_type: torch.Tensor | None = None,
        feature_ensemble: bool = False,
        query_only: bool = False,
        return_features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Paint the mask canvas.

        Args:
            imgs: ``[N, 3, H, W]`` image canvases (prompt image on top, query below), ImageNet-normalised.
            tgts: ``[N, 3, H, W]`` mask canvases (prompt mask on top; the bottom is masked out), same space.
            bool_masked_pos: ``[1 or N, Hp*Wp]`` bool, True = patch of the mask stream replaced by the mask
                token (row-major over the patch grid). None = nothing masked.
            seg_type: ``[N]`` or ``[N, 1]``, 0 = semantic, 1 = instance (None = instance for all).
            feature_ensemble: the N rows are N prompts for ONE query; the query half of the attention output
                is averaged over them in every block (official semantics).

            query_only: decode the query (bottom) half only, and with ``feature_ensemble`` of row 0 only
                (the official engine's answer; the rows' features there are equal): the decoder is most of
                a small model's cost, and inference keeps only that half.

        Returns:
            pred ``[N, 3, H, W]`` in ImageNet-normalised space. With ``feature_ensemble`` all rows carry the
            same query half (but for its first pixel row, which a 3x3 convolution mixes with the row's prompt). ``query_only``: ``[N, 3, H/2, W]`` (``[1, 3, H/2, W]`` with
            ``feature_ensemble``), equal to that half of the full output. Never wrapped in no_grad: prompt
            tuning backpropagates through it.
            return_features: also return the encoder's ``feature_layers`` outputs (``[N, Hp, Wp, C]``
                each, as the decoder reads them): ``(pred, feats)`` (training's auxiliary loss).
        """
        feats = self.forward_features(imgs, tgts, bool_masked_pos, seg_type, feature_ensemble)
        if not query_only:
            pred = self.forward_decoder(feats)
        else:
            dec = [f[:1] for f in feats] if feature_ensemble else feats
            pred = self.forward_decoder(dec, first_row=self.grid_size[0] // 2)
        return (pred, feats) if return_features else pred

    @property
    def half_size(self) -> tuple[int, int]:
        """(h, w) of one canvas half: the size prompts and queries are resized to."""
        return self.img_size[0] // 2, self.img_size[1]

    @property
    def half_grid(self) -> tuple[int, int]:
        """(rows, cols) of patches in one canvas half."""
        return self.grid_size[0] // 2, self.grid_size[1]

    def query_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``[1, L]`` bool: True on the query (bottom) half of the patch grid, as the official engine."""
        m = torch.zeros(1, self.num_patches, dtype=torch.bool, device=device)
        m[:, self.num_patches // 2 :] = True
        return m

    def extra_repr(self) -> str:
        return (f"img_size={self.img_size}, patch={self.patch_size}, merge_index={self.merge_index}, "
                f"feature_layers={self.feature_layers}")
