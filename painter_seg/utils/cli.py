"""What every tool does around its job: user errors become one line on stderr and exit code 2."""
from __future__ import annotations

import sys
from collections.abc import Callable

from omegaconf import DictConfig

from ..errors import InputError


def run_job(job: Callable[[DictConfig], int | None], cfg: DictConfig) -> None:
    """Run ``job(cfg)`` and exit with its code (None = 0); an :class:`InputError` prints
    ``error: <message>`` on stderr and exits 2, without a traceback."""
    try:
        code = job(cfg) or 0
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    sys.exit(code)
