"""The ``tune`` job (``painter-seg tune``, ``tools/tune_prompt.py``; ``conf/tune_prompt.yaml``):
learn a prompt for one scene with the model frozen, and write it with pictures of it.

The scene is read by :func:`painter_seg.tuning.load_scene` (``images=<dir>`` with ``masks=<dir>``,
or a data set folder); the tuning keys at the top level of the config are the fields of
:class:`painter_seg.tuning.TuneConfig`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ..build import build_model
from ..codec.canvas import denormalize
from ..errors import InputError
from ..io.files import ensure_output_dir, is_inside, same_file
from ..io.images import save_image
from ..io.plots import save_curves
from ..model import SegGPT
from ..tuning import PromptTuner, Scene, TuneConfig, TunedPrompt, load_scene
from ..tuning.scene import LabeledImage
from ..utils.runtime import resolve_device


def tune_config(cfg: DictConfig, **overrides) -> TuneConfig:
    """The :class:`TuneConfig` of a job config: its keys that are ``TuneConfig`` fields, then
    ``overrides``."""
    picked = OmegaConf.create({k: cfg[k] for k in TuneConfig.field_names() if k in cfg})
    tc = TuneConfig.from_dict({**OmegaConf.to_container(picked, resolve=True), **overrides})
    _check_ranges(tc)
    return tc


def _check_ranges(tc: TuneConfig) -> None:
    """The ranges :class:`TuneConfig` itself leaves to the optimiser (whose errors are tracebacks)."""
    if not tc.weight_decay >= 0:
        raise InputError(f"weight_decay={tc.weight_decay}: expected >= 0")
    if not 0 <= tc.min_lr_ratio <= 1:
        raise InputError(f"min_lr_ratio={tc.min_lr_ratio}: expected 0 <= min_lr_ratio <= 1")
    if tc.max_pairs_init < 1:
        raise InputError(f"max_pairs_init={tc.max_pairs_init}: expected >= 1")
    if tc.init_index < 0:
        raise InputError(f"init_index={tc.init_index}: expected >= 0")


def scene_of(cfg: DictConfig) -> Scene:
    """The labelled images named by ``cfg.images`` / ``masks`` / ``classes`` ...
    (:func:`painter_seg.tuning.load_scene`)."""
    return load_scene(cfg.images, cfg.masks, layout=str(cfg.layout), classes=cfg.classes,
                      class_names=cfg.class_names, seg_type=cfg.seg_type,
                      ignore_index=cfg.get("ignore_index"), max_side=cfg.max_side,
                      resize_masks=bool(cfg.resize_masks))


def output_path(cfg: DictConfig) -> Path:
    """``cfg.output`` (a ``.safetensors`` file), its folder created: not the checkpoint, not a folder, and
    not inside the image or mask folders (its PNGs would join the scene's images).

    Raises:
        InputError: one line naming ``output``.
    """
    out = Path(str(cfg.output))
    if out.suffix != ".safetensors":
        raise InputError(f"output={out}: the tuned prompt is a .safetensors file")
    if out.is_dir():
        raise InputError(f"output={out}: is a folder, not a file")
    ckpt = cfg.get("checkpoint") or cfg.model.get("checkpoint")
    if ckpt and same_file(out, str(ckpt)):
        raise InputError(f"output={out}: would overwrite the checkpoint")
    for key in ("images", "masks"):
        folder = cfg.get(key)
        if folder and Path(str(folder)).is_dir() and is_inside(out.parent, str(folder)):
            raise InputError(f"output={out}: lies inside the input folder {key}={folder}")
    ensure_output_dir(out.parent)
    return out


def write_prompt_files(prompt: TunedPrompt, history: list[dict], out: Path) -> list[Path]:
    """Save ``prompt`` to ``out`` plus ``<stem>_image.png``, ``<stem>_mask.png`` (the learned
    prompt in pixel space) and ``<stem>_curve.png`` (training loss and validation mIoU per step)."""
    stem = out.with_suffix("")
    paths = [prompt.save(out), Path(f"{stem}_image.png"), Path(f"{stem}_mask.png"),
             Path(f"{stem}_curve.png")]
    for tensor, p in ((prompt.image, paths[1]), (prompt.mask, paths[2])):
        rgb = denormalize(tensor.detach().float().cpu().numpy().transpose(1, 2, 0))
        save_image(p, np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8))
    loss = [(r["step"], r["loss"]) for r in history if "loss" in r]
    val = [(r["step"], r["val_miou"]) for r in history if "val_miou" in r]
    save_curves(paths[3], tuple(zip(*loss)) if loss else ([], []),
                tuple(zip(*val)) if val else None, title=f"prompt tuning: {out.name}")
    return paths


def tune(cfg: DictConfig, model: SegGPT, scene: Scene, init_pair: LabeledImage | None = None
         ) -> tuple[TunedPrompt, PromptTuner]:
    """Tune a prompt on ``scene`` with the config's tuning keys (``init="pair"`` from
    ``init_pair`` when given); the prompt's summary names the data."""
    overrides = {"init": "pair"} if init_pair is not None else {}
    tuner = PromptTuner(model, tune_config(cfg, **overrides))
    prompt = tuner.fit(scene.pairs, seg_type=scene.seg_type, class_ids=scene.class_ids,
                       class_names=scene.class_names, progress=bool(cfg.progress),
                       init_pair=init_pair)
    prompt.summary["data"] = {"source": scene.source, "pairs": len(scene.pairs)}
    return prompt, tuner


def run(cfg: DictConfig) -> int:
    """Tune a prompt on the scene named by ``cfg`` and write it with its PNGs."""
    out = output_path(cfg)
    tune_config(cfg)  # bad tuning values fail before the images are read and the model is built
    scene = scene_of(cfg)
    model = build_model(cfg.model, checkpoint=cfg.checkpoint, device=resolve_device(cfg.device))
    prompt, tuner = tune(cfg, model, scene)
    paths = write_prompt_files(prompt, tuner.history, out)
    s = prompt.summary
    val = (f", best val mIoU {s['best_val_miou']:.3f} at step {s['best_step']}"
           if s["val_pairs"] else "")
    print(f"tuned a prompt for {len(prompt.class_ids)} class(es) {prompt.class_names} on "
          f"{s['train_pairs']} image(s): {s['steps']} steps in {s['seconds']:.1f} s, final loss "
          f"{s['final_loss']:.4g}{val}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
