"""Where the Hydra configs live and how to read one group entry without global Hydra state."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .errors import InputError


def conf_dir() -> Path:
    """The ``conf/`` folder: ``$PAINTER_SEG_CONF`` if set, else the one beside the package (repo root)."""
    env = os.environ.get("PAINTER_SEG_CONF")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "conf"
    if not path.is_dir():
        raise InputError(f"{path}: config folder not found (set PAINTER_SEG_CONF to the repo's conf/)")
    return path


def available(group: str) -> list[str]:
    """Names of the entries of a config group, e.g. ``available("model")``."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def load_group(group: str, name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Read ``conf/<group>/<name>.yaml`` and apply dot-list overrides (``["net.depth=4"]``).

    A ``defaults`` list naming other entries of the same group (``[painter_small, _self_]``) is composed
    as Hydra would: those entries first, then this file's own keys.
    """
    path = conf_dir() / group / f"{name}.yaml"
    if not path.is_file():
        raise InputError(f"unknown {group} {name!r}; available: {', '.join(available(group))}")
    own = OmegaConf.load(path)
    parts = []
    for entry in own.pop("defaults", None) or []:
        if entry != "_self_" and not isinstance(entry, str):
            raise InputError(f"{path}: defaults entries must be names in conf/{group}/, got {entry!r}")
        parts.append(own if entry == "_self_" else load_group(group, entry))
    if not any(p is own for p in parts):
        parts.append(own)
    cfg = OmegaConf.merge(*parts)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg
