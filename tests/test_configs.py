"""Every entry config composes with every option of every group it uses, and the pieces are valid."""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from painter_seg.config import available, conf_dir
from painter_seg.jobs import JOBS

ENTRIES = sorted({spec.config for spec in JOBS.values() if spec.config})


def _groups(entry: str) -> list[str]:
    """The config groups named in ``entry``'s defaults list (hydra's own group excluded)."""
    defaults = OmegaConf.load(conf_dir() / f"{entry}.yaml").get("defaults", [])
    names = [next(iter(d)) for d in defaults if not isinstance(d, str)]
    return [g for g in names if g != "hydra" and not g.startswith("override")]


def _cases() -> list[tuple[str, str, str]]:
    cases = [(entry, group, option) for entry in ENTRIES for group in _groups(entry)
             for option in available(group)]
    cases += [("train", "+experiment", option) for option in available("experiment")]
    return cases


def _compose(entry: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name=entry, overrides=overrides)


def test_every_entry_config_uses_the_shared_runtime():
    for entry in ENTRIES:
        cfg = _compose(entry, [])
        assert "hydra" not in OmegaConf.load(conf_dir() / f"{entry}.yaml"), entry
        assert "hydra" in _groups(entry) or any(
            d == {"hydra": "default"} for d in OmegaConf.load(conf_dir() / f"{entry}.yaml").defaults), entry
        assert cfg is not None


@pytest.mark.parametrize(("entry", "group", "option"), _cases())
def test_entry_composes_with_every_group_option(entry, group, option):
    cfg = _compose(entry, [f"{group}={option}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert resolved
    if group == "+experiment" or (entry == "train" and group == "data" and option.endswith("train")):
        from painter_seg.training import parse_config

        parse_config(cfg)  # typed training config: unknown keys or bad values raise
    if group == "strategy":
        from painter_seg.strategies import STRATEGIES

        assert cfg.strategy.name in STRATEGIES


@pytest.mark.parametrize("option", available("model"))
def test_every_model_config_instantiates(option):
    cfg = _compose("segment", [f"model={option}"])
    with torch.device("meta"):
        net = instantiate(cfg.model.net)
    assert sum(p.numel() for p in net.parameters()) > 0
    if "video" in cfg.model:
        assert OmegaConf.to_container(cfg.model.video, resolve=True)
