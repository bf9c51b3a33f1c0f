"""The training dataset described by a ``conf/data/*_train.yaml`` config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ...errors import InputError
from .datasets import MixedInContextDataset
from .recipe import InContextRecipe


def build_train_dataset(
    data_cfg: Mapping[str, Any], half_size: Sequence[int], seed: int
) -> Dataset:
    """The training dataset described by a ``conf/data/*_train.yaml`` config.

    The config holds ``length`` (items per epoch), an optional shared ``recipe`` and ``sets``: a
    mapping ``name -> {_target_, weight, [recipe], ...kwargs}``. Each set is built by calling
    ``_target_`` with its kwargs plus ``half_size``, ``seed`` (derived from ``seed`` and the set's
    position), ``recipe`` (shared recipe updated by the set's own) and ``length`` (unless given).
    Sets with weight 0 are skipped; several sets are mixed by :class:`MixedInContextDataset`.
    """
    from hydra.utils import get_method
    from omegaconf import DictConfig, OmegaConf

    if isinstance(data_cfg, DictConfig):
        data_cfg = OmegaConf.to_container(data_cfg, resolve=True)
    data_cfg = dict(data_cfg)
    length = int(data_cfg.get("length") or 0)
    if length <= 0:
        raise InputError(f"data.length must be a positive number of items, got {length}")
    recipe = InContextRecipe.from_dict(data_cfg.get("recipe"))
    sets = data_cfg.get("sets") or {}
    parts, weights = [], []
    for k, (name, set_cfg) in enumerate(sorted(sets.items())):
        set_cfg = dict(set_cfg or {})
        weight = float(set_cfg.pop("weight", 1.0))
        if weight <= 0:
            continue
        target = set_cfg.pop("_target_", None)
        if target is None:
            raise InputError(f"data.sets.{name}: missing _target_")
        set_recipe = InContextRecipe.from_dict(set_cfg.pop("recipe", None), base=recipe)
        set_cfg.setdefault("length", length)
        sub_seed = int(np.random.SeedSequence([int(seed), k]).generate_state(1)[0])
        parts.append(
            get_method(target)(
                half_size=tuple(half_size), seed=sub_seed, recipe=set_recipe, **set_cfg
            )
        )
        weights.append(weight)
    if not parts:
        raise InputError("data.sets: no dataset with a positive weight")
    if len(parts) == 1:
        return parts[0]
    return MixedInContextDataset(parts, weights, length, seed=int(seed))
