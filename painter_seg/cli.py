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

__all__ = ["main", "run_job"]

PROG = "painter-seg"


def run_job(job: Callable[[DictConfig], int | None], cfg: DictConfig) -> None:
    """Run ``job(cfg)`` and exit with its code (None = 0); an :class:`InputError` prints
    ``error: <message>`` (one line) on stderr and exits 2, without a traceback."""
    try:
        code = job(cfg) or 0
    except InputError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        code = 2
    sys.exit(code)


def usage() -> str:
    """The text of ``painter-seg --help``: every subcommand with its one line."""
    width = max(len(n) for n in JOBS)
    lines = [f"usage: {PROG} <command> [key=value ...]   ({PROG} <command> --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {spec.help}" for name, spec in JOBS.items()]
    return "\n".join(lines)


def _run_hydra(name: str, spec: JobSpec, entry: Callable[[DictConfig], int | None],
               args: Sequence[str]) -> None:
    import hydra

    from .config import conf_dir

    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=spec.config)
    def _main(cfg: DictConfig) -> None:
        run_job(entry, cfg)

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
