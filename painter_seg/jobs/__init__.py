"""The jobs behind the ``painter-seg`` command and ``tools/*.py``: one module per job, each with a
``run(cfg) -> int | None`` (Hydra jobs) or ``main(argv) -> int`` (argparse jobs).

Jobs are the only place that reads arguments, files and folders and writes outputs; the library below them
(predictors, strategies, tuner, trainer, metrics) takes arrays and plain objects. Nothing below ``jobs``
imports it.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import NoReturn

__all__ = ["JOBS", "ArgumentParser", "JobSpec"]


class ArgumentParser(argparse.ArgumentParser):
    """The parser of the argparse jobs (``convert``, ``benchmark``, ``gpu-check``): a bad argument is one line
    ``error: --flag: problem`` on stderr and exit code 2, as in the Hydra jobs (argparse's own prints the
    whole usage first; ``--help`` still shows it)."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        message = message.removeprefix("argument ")
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


@dataclass(frozen=True)
class JobSpec:
    """One subcommand of ``painter-seg``.

    Attributes:
        module: module holding the job (``run(cfg)`` for Hydra jobs, ``main(argv)`` for argparse ones).
        config: entry config in ``conf/`` for a Hydra job; None for an argparse job.
        help: one line for ``painter-seg --help``.
        entry: the function called in ``module``.
    """

    module: str
    config: str | None
    help: str
    entry: str = "run"


JOBS: dict[str, JobSpec] = {
    "segment": JobSpec("painter_seg.jobs.segment", "segment",
                       "few-shot segmentation of target images from example pairs (or a tuned prompt)"),
    "propagate": JobSpec("painter_seg.jobs.propagate", "propagate",
                         "video object propagation from a first-frame mask"),
    "tune": JobSpec("painter_seg.jobs.tune", "tune_prompt",
                    "learn a prompt for a fixed scene from labelled images (model frozen)"),
    "tune-report": JobSpec("painter_seg.jobs.tune_report", "tune_prompt",
                           "held-out mIoU of a tuned prompt vs the best single example pair"),
    "evaluate": JobSpec("painter_seg.jobs.evaluate", "evaluate",
                        "few-shot mIoU on folder sets or generated episodes; video J&F"),
    "train": JobSpec("painter_seg.jobs.train", "train", "train or fine-tune a model (resumable, DDP)"),
    "convert": JobSpec("painter_seg.jobs.convert", None,
                       "convert a checkpoint between layouts (original .pth, transformers, safetensors)",
                       entry="main"),
    "benchmark": JobSpec("painter_seg.jobs.benchmark", None,
                         "speed, memory and quality vs the transformers reference", entry="main"),
    "serve": JobSpec("painter_seg.jobs.serve", "serve",
                     "local web app and HTTP API over one shared model (needs the [app] extra)"),
    "gpu-check": JobSpec("painter_seg.jobs.gpu_check", None,
                         "one-command GPU check: parity, precisions, throughput, compile, tuning, video",
                         entry="main"),
}
