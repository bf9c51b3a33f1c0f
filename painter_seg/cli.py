"""The ``painter-seg`` command (also ``python -m painter_seg`` and ``tools/*.py``): one subcommand per job.

    painter-seg --help
    painter-seg segment prompt.images=[a.jpg] prompt.masks=[a.png] targets=[photos/] output_dir=out
    painter-seg propagate video=clip.mp4 first_mask=first.png output_dir=out
    painter-seg convert seggpt_vit_large.pth vit_l.safetensors

Hydra jobs take the same ``key=value`` overrides as their entry config in ``conf/`` (``painter-seg segment --help``
lists them); argparse jobs (``convert``, ``benchmark``) take ``--flags``. User errors end as one ``error:`` line on
stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from omegaconf import DictConfig

from .errors import InputError
from .jobs import JOBS, JobSpec

__all__ = ["check_group_choices", "check_overrides", "check_types", "main", "run_job"]

PROG = "painter-seg"


def run_job(job: Callable[[DictConfig], int | None], cfg: DictConfig) -> None:
    """Run ``job(cfg)`` and exit with its code (None = 0); an :class:`InputError` prints
    ``error: <message>`` (one line) on stderr and exits 2, without a traceback."""
    try:
        code = job(cfg) or 0
    except InputError as e:
        _fail(e)
    sys.exit(code)


def _fail(e: InputError) -> None:
    """Print ``error: <message>`` (one line) on stderr and exit 2."""
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)


def usage() -> str:
    """The text of ``painter-seg --help``: every subcommand with its one line."""
    width = max(len(n) for n in JOBS)
    lines = [f"usage: {PROG} <command> [key=value ...]   ({PROG} <command> --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {spec.help}" for name, spec in JOBS.items()]
    return "\n".join(lines)


def check_group_choices(args: Sequence[str]) -> None:
    """``group=option`` overrides name an existing option of a config group (``model=vit_l`` -> one line
    listing the options, instead of Hydra's multi-line error)."""
    from .config import available

    for arg in args:
        key, eq, value = arg.partition("=")
        key = key.lstrip("+~")
        if not eq or not _is_group_choice(arg):
            continue
        if value not in ("null", "") and value not in available(key):
            raise InputError(f"{key}={value}: unknown {key}; expected one of {', '.join(available(key))}")


def _is_group_choice(override: str) -> bool:
    from .config import conf_dir

    key = override.partition("=")[0].lstrip("+~")
    return key != "hydra" and "." not in key and (conf_dir() / key).is_dir()


def check_types(cfg: DictConfig, reference: DictConfig) -> None:
    """Every value ``reference`` (the same config composed without the user's value overrides) holds as a
    number or a boolean is still one in ``cfg`` (``max_side=abc`` -> one line, not an error deep in a job)."""
    from omegaconf import OmegaConf

    expected = {bool: "true or false", int: "an integer", float: "a number"}

    def walk(node: DictConfig, prefix: str) -> None:
        for key in node:
            path = f"{prefix}{key}"
            default = OmegaConf.select(node, str(key), throw_on_missing=False)
            if isinstance(default, DictConfig):
                walk(default, f"{path}.")
                continue
            kind = type(default)
            if kind not in expected:
                continue
            value = OmegaConf.select(cfg, path, default=None, throw_on_missing=False)
            same = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
            widened = kind is float and isinstance(value, int) and not isinstance(value, bool)
            if not (value is None or same or widened):
                raise InputError(f"{path}={value!r}: expected {expected[kind]}")

    walk(reference, "")


def check_overrides(config_name: str, args: Sequence[str]) -> None:
    """The overrides compose with the entry config (``stepz=3`` -> one line naming the key, instead of
    Hydra's multi-line error and exit code 1). Hydra's own flags (``--help``, ``--cfg``...) are left to it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .config import conf_dir

    if any(a.startswith("-") for a in args) or GlobalHydra.instance().is_initialized():
        return
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            compose(config_name=config_name, overrides=list(args))
    except (HydraException, OmegaConfBaseException) as e:
        text = " ".join(str(e).split())
        key = getattr(e, "full_key", None) or _quoted_key(text)
        if key and ("not in struct" in text or "Could not override" in text or "Could not append" in text):
            arg = next((a for a in args if a.lstrip("+~").partition("=")[0] == key), key)
            if "Could not append" in text:  # '+key=...' for a key the config already has
                raise InputError(f"{arg}: {key!r} is already in {config_name}.yaml; set it without '+' "
                                 f"({key}=...)") from None
            raise InputError(f"{arg}: unknown key {key!r} in {config_name}.yaml "
                             f"({PROG} {config_name} --help lists the keys)") from None
        raise InputError(f"bad override: {text}") from None


def _quoted_key(text: str) -> str | None:
    import re

    m = re.search(r"override '([^']+)'", text) or re.search(r"Key '([^']+)'", text)
    return m.group(1) if m else None


def _run_hydra(name: str, spec: JobSpec, entry: Callable[[DictConfig], int | None],
               args: Sequence[str]) -> None:
    import hydra

    from .config import conf_dir

    def checked(cfg: DictConfig) -> int | None:
        from hydra import compose

        choices = [o for o in args if _is_group_choice(o)]
        check_types(cfg, compose(config_name=str(spec.config), overrides=choices))
        return entry(cfg)

    try:
        check_group_choices(args)
        check_overrides(str(spec.config), args)
    except InputError as e:
        _fail(e)

    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=spec.config)
    def _main(cfg: DictConfig) -> None:
        run_job(checked, cfg)

    saved = sys.argv
    sys.argv = [f"{PROG}-{name}", *args]  # Hydra parses sys.argv; argv[0] names the job
    try:
        _main()
    finally:
        sys.argv = saved


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: ``argv`` = ``[command, *args]`` (default ``sys.argv[1:]``); exits with the job's code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if argv else 2)
    name, args = argv[0], argv[1:]
    spec = JOBS.get(name)
    if spec is None:
        print(f"error: unknown command {name!r}; expected one of: {', '.join(JOBS)} "
              f"({PROG} --help)", file=sys.stderr)
        sys.exit(2)
    entry = getattr(importlib.import_module(spec.module), spec.entry)
    if spec.config is None:
        sys.exit(entry(list(args)) or 0)
    _run_hydra(name, spec, entry, args)
