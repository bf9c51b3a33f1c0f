"""Shared fixtures: a seeded tiny model, the shared data folder, CPU-only settings."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from painter_seg import build_model

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def tiny_model():
    """seggpt_tiny with random (seeded) weights, eval mode; tests must not modify it."""
    torch.manual_seed(0)
    model = build_model("seggpt_tiny", pretrained=False)
    _randomise(model)
    return model


def _randomise(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> None:
    """Give every tensor (zero-initialised rel-pos tables and biases included) random values, so that
    parity tests exercise every parameter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def run_cli(*argv: object, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``painter-seg <argv>`` run in this process (the same ``painter_seg.cli.main`` the console script
    calls), as a ``CompletedProcess``: exit code, stdout, stderr. An uncaught exception is a traceback on
    stderr and exit code 1, as in a real process. Saves the ~8 s interpreter + torch start of a subprocess;
    tests of the real entry points (console script, wheel, server) keep a subprocess."""
    import contextlib
    import io
    import logging
    import os
    import traceback
    import warnings

    from painter_seg.cli import main

    args = [str(a) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    here = os.getcwd()
    threads = torch.get_num_threads()
    root_handlers = list(logging.getLogger().handlers)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("default")  # show each warning as a fresh process would
        warnings.showwarning = lambda m, c, f, n, file=None, line=None: err.write(
            warnings.formatwarning(m, c, f, n, line))
        os.chdir(cwd)
        try:
            main(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                err.write(e.code + "\n")
        except Exception:  # noqa: BLE001 - a real process would print it and exit 1
            traceback.print_exc(file=err)
            code = 1
        finally:
            os.chdir(here)
            torch.set_num_threads(threads)
            logging.getLogger().handlers[:] = root_handlers
    return subprocess.CompletedProcess(["painter-seg", *args], code, out.getvalue(), err.getvalue())
