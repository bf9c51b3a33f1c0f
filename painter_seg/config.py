"""Where the Hydra configs and the bundled examples live, and how to read one group entry without global
Hydra state.

``conf/`` and ``examples/`` sit at the repository's top level and are installed inside the package as
``painter_seg.conf`` and ``painter_seg.examples`` (``pyproject.toml``), so an editable install, a wheel installed
anywhere and a plain checkout on ``PYTHONPATH`` all find them the same way. Configs name bundled files as
``${example:few_shot/prompt_0.jpg}`` (the ``example`` resolver below).
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .errors import InputError

__all__ = ["available", "conf_dir", "example_path", "load_group"]


def _package_folder(name: str, fallback: str) -> Path:
    """The folder of the installed (sub)package ``name``; ``fallback`` beside the package in a bare checkout."""
    try:
        spec = importlib.util.find_spec(name)
    except ImportError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            if Path(loc).is_dir():
                return Path(loc)
    return Path(__file__).resolve().parent.parent / fallback


def conf_dir() -> Path:
    """The config folder: ``$PAINTER_SEG_CONF`` if set, else the installed ``painter_seg.conf``."""
    env = os.environ.get("PAINTER_SEG_CONF")
    path = Path(env) if env else _package_folder("painter_seg.conf", "conf")
    if not path.is_dir():
        raise InputError(f"{path}: config folder not found (reinstall painter_seg, or set PAINTER_SEG_CONF "
                         f"to a conf/ folder)")
    return path


def example_path(relative: str) -> str:
    """Absolute path of a bundled example file (``examples/`` of the repository, ``painter_seg/examples`` of an
    installed wheel), e.g. ``example_path("few_shot/prompt_0.jpg")``."""
    return str(_package_folder("painter_seg.examples", "examples") / relative)


if not OmegaConf.has_resolver("example"):
    OmegaConf.register_new_resolver("example", example_path)


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
