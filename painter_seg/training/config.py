"""Typed training settings: the one home of their defaults and checks.

``conf/train.yaml`` composes into a tree whose scalar keys and ``train`` node are read through
:func:`parse_config` into :class:`TrainJobConfig` / :class:`TrainConfig` (OmegaConf structured
configs). ``conf/train/default.yaml`` lists the same keys with the same values, so that Hydra
overrides such as ``train.lr=3e-4`` need no ``+``; a test keeps the two equal. ``model`` and
``data`` stay config trees: they are checked by :func:`painter_seg.build.build_model` and
:func:`painter_seg.data.in_context.build_train_dataset`.

An unknown key, a value of the wrong type or one out of range raises :class:`InputError` with one
line naming the key, e.g. ``unknown config key train.lrr (did you mean train.lr?)``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from ..errors import InputError
from ..utils.runtime import PRECISIONS

__all__ = ["PRECISIONS", "TrainConfig", "TrainJobConfig", "parse_config"]



@dataclass
class TrainConfig:
    """The ``train`` group: optimisation, schedule, masking and loop (batch sizes are per process).

    SegGPT paper: AdamW, cosine, base lr 1e-4, weight decay 0.05, warm-up; Painter: grad clip 3,
    block-wise masking of 50% of the patches with 10% bottom-half masks.
    """

    batch_size: int = 8  # samples per process per micro-batch
    accum_steps: int = 1  # micro-batches per step (global batch = batch x accum x ranks)
    lr: float = 1.0e-4  # peak lr (absolute, unless lr_ref_batch is set)
    lr_ref_batch: int | None = None  # if set: lr *= global_batch / lr_ref_batch (Painter: 256)
    min_lr_ratio: float = 0.01  # cosine ends at lr * min_lr_ratio
    weight_decay: float = 0.05  # not applied to biases, norms, tokens, pos_embed
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    layer_decay: float | None = None  # layer-wise lr decay in (0, 1], e.g. 0.8 to fine-tune
    lr_scales: dict[str, float] | None = None  # parameter-name prefix -> lr x (0: frozen)
    warmup_steps: int = 200  # linear warm-up (paper: 1.8K of 9K)
    max_steps: int | None = 2000  # schedule length and end of training
    epochs: int | None = None  # used when max_steps is null/0: epochs x steps per epoch
    stop_after_steps: int | None = None  # stop + save after N steps of THIS run
    max_minutes: float | None = None  # wall-clock budget of this run; stops cleanly and saves
    grad_clip: float | None = 3.0  # max global grad norm; 0/null = no clipping
    loss_beta: float = 0.01  # smooth-L1 beta (official 0.01)
    loss_fg_weight: float = 1.0  # loss weight of foreground (non-black) target pixels
    aux_family_weight: float = 0.0  # weight of the auxiliary shape-family loss (0 = off; needs family targets)
    aux_family_layer: int | None = None  # block whose features it reads (one of feature_layers; null = the 2nd)
    aux_family_lr_scale: float = 20.0  # the head's lr / lr: a fresh linear head must move faster than the network
    aux_family_pool: str = "patch"  # "patch": a target per patch; "object": logits pooled over each family region
    p_half_mask: float = 0.1  # share of samples masked exactly on the query half
    mask_ratio: float = 0.5  # share of patches hidden by the block-wise mask
    min_mask_patches: int = 16  # smallest masked block (patches)
    max_mask_patches: int | None = None  # largest masked block; null = a quarter of the grid
    log_every: int = 10  # CSV row / progress-bar update every N steps
    save_every: int | None = 500  # last.pt + model.safetensors every N steps; 0/null = end only
    num_workers: int = 4  # data-loader worker processes per rank
    progress: bool = True  # tqdm bar on rank 0
    val_every: int | None = None  # score data.val every N steps (and at start / end); null = off
    val_batch_size: int = 16  # samples per validation forward
    ddp_find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1 and self.accum_steps >= 1,
               "train.batch_size and train.accum_steps must be >= 1")
        _check(bool(self.max_steps and self.max_steps > 0) or bool(self.epochs and self.epochs > 0),
               "set train.max_steps (or train.epochs) to a positive number")
        _check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _check(not self.lr_ref_batch or self.lr_ref_batch > 0, "train.lr_ref_batch must be > 0")
        _check(0 <= self.min_lr_ratio <= 1, f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        _check(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(len(self.betas) == 2, f"train.betas must be two numbers, got {list(self.betas)}")
        _check(all(isinstance(v, int | float) and v >= 0 for v in (self.lr_scales or {}).values()),
               f"train.lr_scales values must be numbers >= 0, got {dict(self.lr_scales or {})}")
        _check(self.layer_decay is None or 0 < self.layer_decay <= 1,
               f"train.layer_decay must be in (0, 1] or null, got {self.layer_decay}")
        _check(0 <= self.p_half_mask <= 1, f"train.p_half_mask must be in [0, 1], got {self.p_half_mask}")
        _check(0 < self.mask_ratio <= 1, f"train.mask_ratio must be in (0, 1], got {self.mask_ratio}")
        _check(self.loss_beta > 0 and self.loss_fg_weight > 0,
               "train.loss_beta and train.loss_fg_weight must be > 0")
        _check(self.aux_family_lr_scale > 0, f"train.aux_family_lr_scale must be > 0, got {self.aux_family_lr_scale}")
        _check(self.aux_family_pool in ("patch", "object"),
               f"train.aux_family_pool must be 'patch' or 'object', got {self.aux_family_pool!r}")
        _check(self.aux_family_weight >= 0, f"train.aux_family_weight must be >= 0, got {self.aux_family_weight}")
        _check(self.num_workers >= 0, "train.num_workers must be >= 0")
        _check(self.val_every is None or self.val_every >= 0, "train.val_every must be >= 0")
        _check(self.val_batch_size >= 1, "train.val_batch_size must be >= 1")
        _check(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        _check(all(0 <= b < 1 for b in self.betas), f"train.betas must be in [0, 1), got {list(self.betas)}")
        _check(self.grad_clip is None or self.grad_clip >= 0,
               f"train.grad_clip must be >= 0 (0/null = no clipping), got {self.grad_clip}")
        _check(self.log_every >= 1, f"train.log_every must be >= 1, got {self.log_every}")
        _check(self.save_every is None or self.save_every >= 0,
               f"train.save_every must be >= 0 (0/null = at the end only), got {self.save_every}")
        _check(self.max_minutes is None or self.max_minutes > 0,
               f"train.max_minutes must be > 0 or null, got {self.max_minutes}")
        _check(self.stop_after_steps is None or self.stop_after_steps >= 1,
               f"train.stop_after_steps must be >= 1 or null, got {self.stop_after_steps}")
        _check(self.min_mask_patches >= 1, f"train.min_mask_patches must be >= 1, got {self.min_mask_patches}")
        _check(self.max_mask_patches is None or self.max_mask_patches >= self.min_mask_patches,
               f"train.max_mask_patches must be >= train.min_mask_patches or null, got {self.max_mask_patches}")


@dataclass
class TrainJobConfig:
    """The whole ``conf/train.yaml``: where to write, what to start from, and the groups.

    Attributes:
        output_dir: created if missing; rank 0 writes ``train_log.csv``, ``last.pt``,
            ``model.safetensors`` and ``summary.json`` here.
        init_checkpoint: starting weights (.pth, HF snapshot, .safetensors); None = random.
        init_strict: exact key/shape match of ``init_checkpoint`` (False: copy what fits).
        resume: None or False | True (``output_dir/last.pt`` if present) | path to a ``last.pt`` or its folder.
        seed: model init, data order, samples and masks all derive from it.
        device: ``auto`` | ``cpu`` | ``cuda[:N]``; under torchrun each rank uses ``cuda:LOCAL_RANK``.
        precision: ``auto`` | ``fp32`` | ``bf16`` | ``fp16`` autocast (``auto``:
            :func:`painter_seg.utils.runtime.resolve_precision`); fp16 adds a GradScaler on CUDA.
        debug_fingerprints: put every rank's weights fingerprint in the summary (DDP checks).
        model / data: the ``model`` and ``data`` config trees, unchecked here.
        train: the ``train`` group.
    """

    output_dir: str = "outputs/train"
    init_checkpoint: str | None = None
    init_strict: bool = True
    resume: bool | str | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    debug_fingerprints: bool = False
    model: Any = None
    data: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check(self.precision in PRECISIONS,
               f"precision={self.precision}: expected one of {', '.join(PRECISIONS)}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)


def _known_keys(schema: type, prefix: str) -> list[str]:
    keys = []
    for f in fields(schema):
        keys.append(prefix + f.name)
        if f.name == "train":
            keys += _known_keys(TrainConfig, f"{prefix}train.")
    return keys


def _one_line(e: OmegaConfBaseException) -> str:
    key = e.full_key or getattr(e, "key", None) or "?"
    if isinstance(e, ConfigKeyError):
        close = difflib.get_close_matches(str(key), _known_keys(TrainJobConfig, ""), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"unknown config key {key}{hint}"
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"{key}: {first}"


def parse_config(cfg: DictConfig | dict) -> TrainJobConfig:
    """Check a composed ``conf/train.yaml`` and return it typed.

    Args:
        cfg: the composed config (``model``, ``data``, ``train`` and the top-level keys).

    Returns:
        A :class:`TrainJobConfig` whose ``model`` and ``data`` are the original config nodes.

    Raises:
        InputError: an unknown key, a mistyped or out-of-range value (one line naming the key).
    """
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    own = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("model", "data", "hydra")])
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainJobConfig), own)
        job = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise InputError(_one_line(e)) from None
    job.model, job.data = cfg.get("model"), cfg.get("data")
    return job
