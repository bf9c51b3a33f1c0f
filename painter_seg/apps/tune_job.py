"""The prompt-tuning jobs behind ``tools/tune_prompt.py`` and ``tools/report_prompt_tuning.py``.

Scene data (``conf/tune_prompt.yaml``):

* ``images=<dir> masks=<dir>``: images and their masks, matched by file stem (``X.jpg`` with ``X.png``,
  ``X_mask.png``...). Mask ids are the classes (0 = background, ``ignore_index`` = no class): a
  multi-class scene has one id map per image, and the tuned prompt predicts the same ids.
* ``images=<dir>`` alone: a folder in a layout of :func:`painter_seg.data.folders.load_fewshot_folder`:
  an FSS-1000 class folder (``apple/1.jpg`` + ``apple/1.png``) or root of class folders, a PerSeg root
  (``Images/<obj>/`` + ``Annotations/<obj>/``), flat pairs (``cat_00.jpg`` + ``cat_00.png``) or
  ``images/`` + ``masks/``. Each class (object) becomes one class of the prompt, ids 1..C in the order
  of ``classes`` (masks are binarised); a folder with several classes needs ``classes=[...]``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ..build import build_model
from ..codec.canvas import denormalize, resize_labels
from ..data.folders import load_fewshot_folder, pair_folders
from ..errors import InputError
from ..io.files import atomic_path, ensure_output_dir
from ..io.images import load_image, save_image
from ..io.masks import load_mask
from ..io.plots import save_curves
from ..strategies import TunedPrompt
from ..tuning import PromptTuner, TuneConfig, score_pairs, split_pairs
from ..utils.runtime import resolve_device, resolve_precision
from .few_shot import SEG_TYPES, FewShotSegmenter

LabeledImage = tuple[np.ndarray, np.ndarray]
TUNE_KEYS = ("steps", "batch_size", "lr", "optimizer", "weight_decay", "warmup_steps", "min_lr_ratio", "beta",
             "init", "init_index", "train_image", "train_mask", "clamp", "augment", "val_fraction",
             "val_every", "patience", "precision", "ignore_index", "seed")


@dataclass
class Scene:
    """Labelled images of one scene: ``pairs`` (uint8 RGB, int64 ids), the image file of each, and the
    classes (``class_ids`` None = every id found in the masks)."""

    pairs: list[LabeledImage]
    files: list[str]
    source: str
    class_ids: list[int] | None = None
    class_names: list[str] | None = None
    seg_type: int = 0


def _read_pair(img_path: Path, mask_path: Path, cfg: DictConfig, binary_id: int | None) -> LabeledImage:
    img = load_image(img_path, max_side=cfg.max_side)
    lab = load_mask(mask_path).labels
    if lab.shape != img.shape[:2]:
        if not cfg.resize_masks:
            raise InputError(f"{mask_path}: mask is {lab.shape[1]}x{lab.shape[0]} but its image is "
                             f"{img.shape[1]}x{img.shape[0]} (set resize_masks=true to resize it)")
        lab = resize_labels(lab, img.shape[:2])
    if binary_id is not None:  # one class per folder: any id is the object, the ignore id stays
        ignore = cfg.get("ignore_index")
        fg = (lab > 0) & (lab != ignore)
        lab = np.where(lab == ignore, ignore, fg * binary_id) if fg.any() else (lab > 0) * binary_id
    return img, lab.astype(np.int64)


def load_scene(cfg: DictConfig) -> Scene:
    """The labelled images named by ``cfg.images`` / ``cfg.masks`` / ``cfg.classes`` (module docstring)."""
    if cfg.seg_type not in SEG_TYPES:
        raise InputError(f"seg_type={cfg.seg_type}: expected semantic or instance")
    seg_type = SEG_TYPES[cfg.seg_type]
    if not cfg.images:
        raise InputError("give images=<folder> (with masks=<folder>), or a FSS-1000 / PerSeg / flat-pairs "
                         "folder")
    root = Path(str(cfg.images))
    if cfg.masks and Path(str(cfg.masks)).resolve() != root.resolve():
        pairs = pair_folders(root, Path(str(cfg.masks)))
        scene = Scene([_read_pair(i, m, cfg, None) for i, m in pairs], [str(i) for i, _ in pairs], str(root),
                      seg_type=seg_type)
        if cfg.class_names:
            ignore = cfg.get("ignore_index")
            ids = sorted({int(i) for _, lab in scene.pairs for i in np.unique(lab) if i not in (0, ignore)})
            if len(cfg.class_names) != len(ids):
                raise InputError(f"class_names has {len(cfg.class_names)} names but the masks hold "
                                 f"{len(ids)} class ids {ids}")
            scene.class_ids, scene.class_names = ids, [str(n) for n in cfg.class_names]
        return scene
    data = load_fewshot_folder(root, str(cfg.layout))
    classes = [str(c) for c in cfg.classes] if cfg.classes else list(data)
    unknown = [c for c in classes if c not in data]
    if unknown:
        raise InputError(f"classes: {unknown} not found in {root} (it holds {', '.join(data)})")
    if len(classes) > 1 and not cfg.classes:
        raise InputError(f"{root} holds {len(classes)} classes ({', '.join(classes[:8])}"
                         f"{', ...' if len(classes) > 8 else ''}): pick the ones to tune for with "
                         "classes=[...]")
    pairs, files = [], []
    for k, name in enumerate(classes, 1):
        for img_path, mask_path in data[name]:
            pairs.append(_read_pair(img_path, mask_path, cfg, k))
            files.append(str(img_path))
    return Scene(pairs, files, str(root), list(range(1, len(classes) + 1)), classes, seg_type)


def _tune_config(cfg: DictConfig, **overrides) -> TuneConfig:
    vals = {k: cfg[k] for k in TUNE_KEYS if k in cfg}
    vals = OmegaConf.to_container(OmegaConf.create(vals), resolve=True)
    return TuneConfig.from_dict({**vals, **overrides})


def _output_path(cfg: DictConfig) -> Path:
    out = Path(str(cfg.output))
    if out.suffix != ".safetensors":
        raise InputError(f"output={out}: the tuned prompt is a .safetensors file")
    ensure_output_dir(out.parent)
    return out


def write_prompt_files(prompt: TunedPrompt, history: list[dict], out: Path) -> list[Path]:
    """Save ``prompt`` to ``out`` plus ``<stem>_image.png``, ``<stem>_mask.png`` (the learned prompt in
    pixel space) and ``<stem>_curve.png`` (training loss and validation mIoU per step)."""
    stem = out.with_suffix("")
    paths = [prompt.save(out), Path(f"{stem}_image.png"), Path(f"{stem}_mask.png"), Path(f"{stem}_curve.png")]
    for tensor, p in ((prompt.image, paths[1]), (prompt.mask, paths[2])):
        rgb = denormalize(tensor.detach().float().cpu().numpy().transpose(1, 2, 0))
        save_image(p, np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8))
    loss = [(r["step"], r["loss"]) for r in history if "loss" in r]
    val = [(r["step"], r["val_miou"]) for r in history if "val_miou" in r]
    save_curves(paths[3], tuple(zip(*loss)) if loss else ([], []), tuple(zip(*val)) if val else None,
                title=f"prompt tuning: {out.name}")
    return paths


def _tune(cfg: DictConfig, model, scene: Scene, progress: bool, init_pair: LabeledImage | None = None
          ) -> tuple[TunedPrompt, PromptTuner]:
    tuner = PromptTuner(model, _tune_config(cfg, **({"init": "pair"} if init_pair is not None else {})))
    prompt = tuner.fit(scene.pairs, seg_type=scene.seg_type, class_ids=scene.class_ids,
                       class_names=scene.class_names, progress=progress, init_pair=init_pair)
    prompt.summary["data"] = {"source": scene.source, "pairs": len(scene.pairs)}
    return prompt, tuner


def run(cfg: DictConfig) -> int:
    """Tune a prompt on the scene named by ``cfg`` (``conf/tune_prompt.yaml``) and write it with its PNGs."""
    out = _output_path(cfg)
    scene = load_scene(cfg)
    model = build_model(cfg.model, checkpoint=cfg.checkpoint, device=resolve_device(cfg.device))
    prompt, tuner = _tune(cfg, model, scene, bool(cfg.progress))
    paths = write_prompt_files(prompt, tuner.history, out)
    s = prompt.summary
    val = f", best val mIoU {s['best_val_miou']:.3f} at step {s['best_step']}" if s["val_pairs"] else ""
    print(f"tuned a prompt for {len(prompt.class_ids)} class(es) {prompt.class_names} on {s['train_pairs']} "
          f"image(s): {s['steps']} steps in {s['seconds']:.1f} s, final loss {s['final_loss']:.4g}{val}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


# ---------------------------------------------------------------------------------------------- report
def _synthetic_scene(cfg: DictConfig) -> Scene:
    from ..data.synthetic import generate_scene_views

    r = cfg.report
    size = tuple(int(s) for s in r.size)
    views = generate_scene_views(int(cfg.seed), int(r.views), size, int(r.num_classes))
    c = int(r.num_classes)
    return Scene(views, [f"view_{i:02d}" for i in range(len(views))],
                 f"generated fixed scene (seed {cfg.seed}, {len(views)} views, {c} classes)",
                 list(range(1, c + 1)), [f"class_{i}" for i in range(1, c + 1)], 0)


def run_report(cfg: DictConfig) -> dict:
    """Held-out mIoU of a tuned prompt vs the best single real pair vs the feature ensemble of all
    training pairs, on one scene (generated with ``report.scene=synthetic``, else ``images``/``masks``).

    The scene is split (seeded) into training pairs and ``report.holdout`` held-out pairs. The best single
    pair is chosen on the training pairs (each candidate prompts the other training pairs) and then scored
    on the held-out ones; the ensemble uses every training pair; the prompt is tuned on the training pairs
    only (its validation split, if any, comes out of them too). Also scored: the tuned prompt together with
    all training pairs (feature ensemble). Writes the tuned prompt (``output``) and ``<stem>_report.json``.
    """
    r = cfg.report
    if r.scene not in (None, "synthetic"):
        raise InputError(f"report.scene={r.scene}: expected synthetic or null (use images=/masks=)")
    scene = _synthetic_scene(cfg) if r.scene == "synthetic" else load_scene(cfg)
    if len(scene.pairs) < 2:
        raise InputError(f"{scene.source}: the report needs at least 2 labelled images, found "
                         f"{len(scene.pairs)}")
    out = _output_path(cfg)
    tr, ho = split_pairs(len(scene.pairs), float(r.holdout), int(cfg.seed))
    if not ho:
        raise InputError(f"report.holdout={r.holdout}: holds out no image")
    train, held = [scene.pairs[i] for i in tr], [scene.pairs[i] for i in ho]
    ignore = cfg.get("ignore_index")
    if scene.class_ids is None:  # every id of the training masks, so real pairs fit the tuned palette
        ids = np.unique(np.concatenate([np.unique(lab) for _, lab in train]))
        scene.class_ids = [int(i) for i in ids if i not in (0, ignore)]
    device = resolve_device(cfg.device)
    precision = resolve_precision(str(cfg.precision), device)
    model = build_model(cfg.model, checkpoint=cfg.checkpoint, device=device)
    seg_type = "instance" if scene.seg_type else "semantic"
    rows: dict[str, dict] = {}

    def score(name: str, seg: FewShotSegmenter, prepare_seconds: float, **extra) -> None:
        t0 = time.perf_counter()
        res = score_pairs(seg, held, ignore)
        rows[name] = {"mIoU": res["mIoU"], "per_class": res["per_class"],
                      "prepare_seconds": round(prepare_seconds, 2),
                      "predict_seconds": round(time.perf_counter() - t0, 2), **extra}

    def prompted(strategy: str, idx: list[int]) -> FewShotSegmenter:
        seg = FewShotSegmenter(model, strategy=strategy, precision=precision, seg_type=seg_type)
        seg.set_prompts([train[i][0] for i in idx], [train[i][1] for i in idx])
        return seg

    t0 = time.perf_counter()  # best single pair: each candidate prompts the other training pairs
    candidates = list(range(min(len(train), int(r.max_candidates))))
    train_scores = {}
    for i in candidates:
        others = [train[j] for j in range(len(train)) if j != i] or [train[i]]
        train_scores[i] = score_pairs(prompted("plain", [i]), others, ignore)["mIoU"]
    best = max(candidates, key=lambda i: (train_scores[i], -i))
    score("best_single_pair", prompted("plain", [best]), time.perf_counter() - t0,
          chosen=scene.files[tr[best]], train_mIoU=train_scores[best])
    score(f"feature_ensemble@{len(train)}", prompted("feature_ensemble", list(range(len(train)))), 0.0)

    sub = Scene(train, [scene.files[i] for i in tr], scene.source, scene.class_ids, scene.class_names,
                scene.seg_type)
    from_best = str(cfg.init) == "best"  # start from the best single pair found above
    prompt, tuner = _tune(cfg, model, sub, bool(cfg.progress), train[best] if from_best else None)
    paths = write_prompt_files(prompt, tuner.history, out)
    seg = FewShotSegmenter(model, strategy="tuned", precision=precision)
    seg.set_tuned_prompt(prompt)
    score("tuned", seg, prompt.summary["seconds"], steps=prompt.summary["steps"])
    seg.set_tuned_prompt(prompt, [p[0] for p in train], [p[1] for p in train])
    score(f"tuned+feature_ensemble@{len(train)}", seg, prompt.summary["seconds"])

    report = {
        "scene": scene.source, "model": str(cfg.model.name), "checkpoint": str(cfg.checkpoint or
                                                                                cfg.model.get("checkpoint")),
        "classes": dict(zip(map(str, prompt.class_ids), prompt.class_names)),
        "train": [scene.files[i] for i in tr], "held_out": [scene.files[i] for i in ho],
        "tuning": {**{k: prompt.summary[k] for k in ("steps", "seconds", "final_loss", "best_val_miou",
                                                      "best_step", "device", "precision")},
                   "init": f"best single pair ({scene.files[tr[best]]})" if from_best else str(cfg.init)},
        "rows": rows, "prompt": str(paths[0]),
    }
    report_path = Path(f"{out.with_suffix('')}_report.json")
    with atomic_path(report_path) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=1))
    print(f"{scene.source}: {len(train)} training / {len(held)} held-out image(s), model {report['model']}")
    print(f"{'row':32s} {'held-out mIoU':>13s} {'prepare s':>10s} {'predict s':>10s}")
    for name, row in rows.items():
        print(f"{name:32s} {row['mIoU']:13.4f} {row['prepare_seconds']:10.1f} {row['predict_seconds']:10.1f}")
    print(f"tuning: {prompt.summary['steps']} steps in {prompt.summary['seconds']:.1f} s "
          f"({prompt.summary['device']}, {prompt.summary['precision']}) -> {report_path}")
    return report
