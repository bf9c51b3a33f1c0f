"""Optimiser for SegGPT training (the schedule is :mod:`painter_seg.utils.schedule`).

* Parameter groups: no weight decay for biases, norm weights (every tensor with ``ndim <= 1``) and
  the names in ``model.no_weight_decay()`` (tokens, ``pos_embed``).
* Optional layer-wise lr decay (ViTDet ``get_vit_lr_decay_rate``, which Painter/SegGPT use): with
  ``depth`` blocks, block ``i`` gets ``decay ** (depth - i)``, the embeddings (patch embedding,
  tokens, ``pos_embed``) ``decay ** (depth + 1)``, everything after the blocks (shared norm,
  decoder) ``1.0``.
* AdamW over those groups; each group's ``lr`` is ``base_lr * lr_scale``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

__all__ = ["build_optimizer", "layer_id", "param_groups", "prefix_scale"]

# Names (first component) that belong to the embedding "layer 0" of layer-wise decay.
_EMBED_PREFIXES = (
    "patch_embed",
    "pos_embed",
    "mask_token",
    "segment_token_x",
    "segment_token_y",
    "type_token_cls",
    "type_token_ins",
    "cls_token",
)


def layer_id(name: str, depth: int) -> int:
    """Layer index of a parameter for layer-wise lr decay.

    Returns:
        0 for embeddings, ``i + 1`` for ``blocks.i.*``, ``depth + 1`` for the rest (norm, decoder).
    """
    name = name.removeprefix("module.")  # DDP-wrapped names
    head = name.split(".", 1)[0]
    if head in _EMBED_PREFIXES:
        return 0
    if head == "blocks":
        return int(name.split(".")[1]) + 1
    return depth + 1


def prefix_scale(name: str, lr_scales: Mapping[str, float] | None) -> float:
    """The lr multiplier of parameter ``name``: the value of the longest key of ``lr_scales`` that is ``name`` or
    a dotted prefix of it (``"stem"`` matches ``stem.proj.weight``, not ``stems.x``); 1 when none is."""
    best, scale = -1, 1.0
    for prefix, s in (lr_scales or {}).items():
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
            best, scale = len(prefix), float(s)
    return scale


def param_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float | None = None,
    no_weight_decay: Iterable[str] | None = None,
    lr_scales: Mapping[str, float] | None = None,
) -> list[dict]:
    """Split the trainable parameters into AdamW groups.

    Args:
        model: the (unwrapped) network; ``model.no_weight_decay()`` and ``model.depth`` are used
            when present.
        weight_decay: decay of the decayed group.
        layer_decay: layer-wise lr decay factor in (0, 1], or None for none.
        no_weight_decay: names exempt from decay; None = ``model.no_weight_decay()``.
        lr_scales: parameter-name prefix -> lr multiplier (:func:`prefix_scale`; 0 leaves the parameter out).

    Returns:
        Groups ``{"params", "weight_decay", "lr_scale", "group_name"}``; frozen parameters are
        left out.
    """
    if no_weight_decay is None:
        no_weight_decay = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    skip = set(no_weight_decay)
    depth = int(getattr(model, "depth", len(getattr(model, "blocks", ()))))
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        extra = prefix_scale(name, lr_scales)
        if extra == 0:
            continue
        no_decay = p.ndim <= 1 or name.endswith(".bias") or name in skip
        lid = layer_id(name, depth) if layer_decay is not None else depth + 1
        scale = (1.0 if layer_decay is None else layer_decay ** (depth + 1 - lid)) * extra
        key = f"layer{lid}_{'no_decay' if no_decay else 'decay'}" + ("" if extra == 1 else f"_x{extra:g}")
        if key not in groups:
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": scale,
                "group_name": key,
            }
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups, key=lambda k: (int(k[5:].split("_")[0]), k))]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.999),
    layer_decay: float | None = None,
    eps: float = 1e-8,
    extra: nn.Module | None = None,
    extra_lr_scale: float = 1.0,
    lr_scales: Mapping[str, float] | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; each group's lr is ``lr * lr_scale``. ``extra``: a training-only
    module (an auxiliary head) whose groups follow the model's, named ``aux_...``, at ``extra_lr_scale`` x lr.
    ``lr_scales``: per parameter-name prefix multipliers of the model's groups (:func:`prefix_scale`)."""
    groups = param_groups(model, weight_decay, layer_decay, lr_scales=lr_scales)
    if extra is not None:
        for g in param_groups(extra, weight_decay, None, no_weight_decay=()):
            groups.append({**g, "lr_scale": float(extra_lr_scale), "group_name": f"aux_{g['group_name']}"})
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
