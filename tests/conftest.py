"""Shared fixtures: a seeded tiny model, the shared data folder, CPU-only settings."""
from __future__ import annotations

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
