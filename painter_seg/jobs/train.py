"""The training job (``painter-seg train``, ``tools/train.py``): train or fine-tune a model as
``conf/train.yaml`` says, resumable, one process or torchrun's DDP.

Writes ``train_log.csv``, ``last.pt``, ``model.safetensors`` and ``summary.json`` to ``output_dir``
(rank 0). Examples::

    painter-seg train +experiment=ship_small_stage1            # stage 1 of the shipped model
    painter-seg train +experiment=ship_small_stage1 resume=true  # continue exactly
    torchrun --nproc_per_node=2 tools/train.py +experiment=smoke
"""
from __future__ import annotations

from omegaconf import DictConfig

from ..io.files import ensure_output_dir
from ..training import parse_config, train
from ..utils.dist import DistInfo

__all__ = ["run"]


def run(cfg: DictConfig) -> int:
    """Check ``cfg`` (the composed ``conf/train.yaml``), make the output folder and train.

    Returns:
        0 once training stopped (``max_steps``, ``stop_after_steps`` or ``max_minutes``) and saved.

    Raises:
        InputError: an unknown or bad config value, an unusable output folder, checkpoint or data
            set (one line).
    """
    job = parse_config(cfg)
    if DistInfo.from_env().is_main:
        ensure_output_dir(job.output_dir)
    train(job)
    return 0
