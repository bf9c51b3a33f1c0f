"""Shape-family pretraining of the convolutional stem (docs/training "Stage 15").

A multi-class episode of the generator is decided by the shape family alone, and neither the painting loss nor a
family loss on the ViT's tokens puts families into this model in CPU time (stages 11-14). A small convolutional
net learns them from object crops in minutes, so the model gets one beside its patch embedding
(:class:`painter_seg.model.layers.ConvStem`) and that stem is trained first, alone, on generated objects:

* windows of ``window`` pixels centred on each non-clutter object of generated multi-class / semantic query
  images, at the scale the model sees them (no resizing: the stem is convolutional, so a window is the canvas
  around the object), with the object's visible mask;
* each window is cut at a random offset (``shift``), so that objects are seen at every phase of the stem's output
  grid, as in a canvas (a stem trained on centred windows only names the families of 13% of a canvas's objects
  against 53% of centred windows);
* the stem (with BatchNorm after each convolution) is run on each window, its last features averaged over the
  object's mask and classified into the shape families by a linear head;
* at the end the BatchNorm layers are folded into the convolutions and the stem's weights copied into the model
  (its zero-initialised projection untouched: the model's output is unchanged until a painting stage trains it).

Object windows are generated once and cached (``objects.npz``); episode seeds ``seed_base + i`` are far from every
held-out range. Resuming (``last.pt``) continues the same shuffled epochs.
"""
from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..io.files import atomic_path
from ..model.matcher import windows_to_tensors

LOG_FIELDS = ("epoch", "seconds", "loss", "heldout_acc")


@dataclass
class StemPretrainConfig:
    """Settings of :func:`pretrain_stem` (defaults: stage 15)."""

    episodes: int = 16_000
    heldout_share: float = 0.1  # the last episodes' objects: accuracy logged each epoch
    window: int = 128
    shift: int = 16  # pixels of the pooled window: each is cut to its size - shift at a random offset
    min_pixels: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.01
    batch_size: int = 64
    max_epochs: int = 100
    max_minutes: float | None = 30.0
    seed: int = 0
    seed_base: int = 40_000_000

    def __post_init__(self) -> None:
        if self.episodes < 10 or not 0 < self.heldout_share < 1:
            raise InputError(f"episodes ({self.episodes}) must be >= 10 and heldout_share in (0, 1)")
        if self.window < 32 or self.batch_size < 2 or not 0 <= self.shift < self.window // 4:
            raise InputError(f"window ({self.window}) must be >= 32, batch_size ({self.batch_size}) >= 2 and "
                             f"shift ({self.shift}, pooled pixels) in [0, window / 4)")


def episode_objects(seed: int, size: int = 192, window: int = 128, min_pixels: int = 128, pool: int = 2
                    ) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """One generated episode's non-clutter query objects, each ``(window, coverage, family index)``.

    ``window``: the ``window`` x ``window`` RGB pixels around the object's centre, averaged over ``pool`` x ``pool``
    cells (the stem's first step, :class:`~painter_seg.model.layers.ConvStem`), uint8; ``coverage``: the share of
    each cell the object covers, x 255, uint8.
    """
    from ..data.synthetic import FAMILIES, generate_episode
    from ..model.matcher import region_windows

    fam_id = {f: i for i, f in enumerate(FAMILIES)}
    ep = generate_episode(int(seed), kind=("multiclass", "semantic")[int(seed) % 2], size=(size, size))
    img, objmap = ep.query[0], ep.meta["query_objmap"]
    masks, fams = [], []
    for k, obj in enumerate(ep.meta["query_objects"]):
        if obj["role"] == "clutter" or obj["family"] not in fam_id:
            continue
        m = objmap == k
        if m.sum() < min_pixels:
            continue
        masks.append(m)
        fams.append(fam_id[obj["family"]])
    xs, cs = region_windows(img, masks, window, pool)
    return list(zip(xs, cs, fams))


def _objects_of(args: tuple) -> list:
    return episode_objects(*args)


def build_objects(cfg: StemPretrainConfig, path: Path, size: int = 192, pool: int = 2, workers: int = 1,
                  progress: bool = True) -> dict:
    """Generate (or read back) the object windows of ``cfg.episodes`` episodes: ``{"x", "m", "y", "e"}``."""
    from tqdm import tqdm

    if path.is_file():
        d = np.load(path)
        if (int(d["episodes"]), int(d["window"]), int(d["pool"]), int(d["seed_base"])) == (
                cfg.episodes, cfg.window, pool, cfg.seed_base):
            return {k: d[k] for k in ("x", "m", "y", "e")}
    jobs = [(cfg.seed_base + i, size, cfg.window, cfg.min_pixels, pool) for i in range(cfg.episodes)]
    xs, ms, ys, es = [], [], [], []
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as ex:
            results = list(tqdm(ex.imap(_objects_of, jobs, chunksize=64), total=len(jobs), disable=not progress,
                                desc="object windows"))
    else:
        results = (_objects_of(j) for j in tqdm(jobs, disable=not progress, desc="object windows"))
    for i, objs in enumerate(results):
        for x, m, y in objs:
            xs.append(x)
            ms.append(m)
            ys.append(y)
            es.append(i)
    d = {"x": np.stack(xs), "m": np.stack(ms), "y": np.array(ys, np.int64), "e": np.array(es, np.int64)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, episodes=cfg.episodes, window=cfg.window, pool=pool, seed_base=cfg.seed_base, **d)
    return d


class _TrainStem(nn.Module):
    """The layers of a model's stem (or region matcher) with BatchNorm after each convolution (folded away by
    :meth:`fold_into`)."""

    def __init__(self, stem, num_classes: int):
        super().__init__()
        layers = []
        for m in stem.body:
            if isinstance(m, nn.Conv2d):
                conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
                layers += [conv, nn.BatchNorm2d(m.out_channels)]
            else:
                layers.append(nn.GELU())
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(stem.width, num_classes)

    def forward(self, x: torch.Tensor, cover: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` ``[N, 3, h, w]`` (already pooled) averaged over ``cover`` ``[N, 1, h, w]``."""
        f = self.body(x)
        w = F.adaptive_avg_pool2d(cover, f.shape[-2:])
        return self.head((f * w).sum((2, 3)) / w.sum((2, 3)).clamp_min(1e-3))

    @torch.no_grad()
    def fold_into(self, stem) -> None:
        """Copy the convolutions into ``stem.body`` with each BatchNorm (running statistics) folded in, and the
        head into ``stem.head`` when it has one (a :class:`~painter_seg.model.matcher.RegionMatcher`)."""
        convs = [m for m in stem.body if isinstance(m, nn.Conv2d)]
        mods = list(self.body)
        pairs = [(mods[i], mods[i + 1]) for i in range(len(mods) - 1) if isinstance(mods[i], nn.Conv2d)]
        for dst, (conv, bn) in zip(convs, pairs, strict=True):
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            dst.weight.copy_(conv.weight * scale[:, None, None, None])
            dst.bias.copy_(bn.bias + (conv.bias - bn.running_mean) * scale)
        if isinstance(getattr(stem, "head", None), nn.Linear):
            stem.head.load_state_dict(self.head.state_dict())


def _augment(x: torch.Tensor, cover: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random quarter turn and mirror for a batch's windows and masks (families do not change)."""
    k = int(torch.randint(4, (1,), generator=g))
    flip = bool(torch.randint(2, (1,), generator=g))
    x, cover = torch.rot90(x, k, (2, 3)), torch.rot90(cover, k, (2, 3))
    if flip:
        x, cover = x.flip(3), cover.flip(3)
    return x, cover


def _shifted(x: np.ndarray, cover: np.ndarray, shift: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each window (and its coverage) cut to ``size - shift`` at its own random offset in ``[0, shift]``.

    Objects sit at every phase of the stem's output grid in a canvas, never only at the centre of a window: a
    stem trained on centred windows alone classifies them and little else (docs/training "Stage 15").
    """
    if shift <= 0:
        return x, cover
    n, size = len(x), x.shape[1] - shift
    oy, ox = rng.integers(0, shift + 1, n), rng.integers(0, shift + 1, n)
    xs = np.stack([x[i, oy[i]:oy[i] + size, ox[i]:ox[i] + size] for i in range(n)])
    cs = np.stack([cover[i, oy[i]:oy[i] + size, ox[i]:ox[i] + size] for i in range(n)])
    return xs, cs


def pretrain_stem(model, cfg: StemPretrainConfig, output_dir: str | Path, resume: bool = False, workers: int = 1,
                  progress: bool = True, target: str = "stem") -> dict:
    """Train ``model.stem`` (``target="stem"``) or ``model.matcher`` (``"matcher"``: the region matcher, its head
    kept) on the shape families of generated objects; see the module docstring.

    A run that resumes with its time already spent trains nothing more and writes ``model.safetensors`` from
    ``last.pt``: that is how a stem run's net becomes a matcher (same layers) without training it again.

    Writes ``output_dir``/``objects.npz`` (the windows, reused), ``stem_log.csv`` (loss and held-out accuracy per
    epoch), ``last.pt`` (resume) and ``model.safetensors`` (``model`` with the folded stem: a painting stage's
    ``init_checkpoint``).

    Returns:
        ``{"epoch", "seconds", "loss", "heldout_acc", "objects", "majority"}``.
    """
    from tqdm import tqdm

    from ..data.synthetic import FAMILIES

    if target not in ("stem", "matcher"):
        raise InputError(f"target={target!r}: expected stem or matcher")
    module = getattr(model, target, None)
    if module is None:
        key = "conv_stem" if target == "stem" else "region_matcher"
        raise InputError(f"the model has no {key} to pretrain (set net.{key} in its config)")
    if target == "matcher" and module.num_classes != len(FAMILIES):
        raise InputError(f"the region matcher names {module.num_classes} families, the generator has {len(FAMILIES)}: "
                         f"set net.region_matcher.num_classes={len(FAMILIES)}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = build_objects(cfg, out / "objects.npz", size=model.half_size[0], pool=module.pool, workers=workers,
                         progress=progress)
    held = data["e"] >= int(cfg.episodes * (1 - cfg.heldout_share))
    train_idx = np.nonzero(~held)[0]
    test_idx = np.nonzero(held)[0]
    y = torch.from_numpy(data["y"])
    majority = float(np.bincount(data["y"][held], minlength=len(FAMILIES)).max() / max(len(test_idx), 1))
    torch.manual_seed(cfg.seed)
    net = _TrainStem(module, len(FAMILIES))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    epoch, spent = 0, 0.0
    last = out / "last.pt"
    log_path = out / "stem_log.csv"
    if resume:
        if not last.is_file():
            raise InputError(f"{last}: no checkpoint to resume from")
        state = torch.load(last, map_location="cpu", weights_only=True)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["generator"])
        epoch, spent = int(state["epoch"]), float(state["seconds"])
    if not resume or not log_path.is_file():
        with atomic_path(log_path) as tmp, open(tmp, "w", newline="") as f:
            csv.writer(f).writerow(LOG_FIELDS)

    def batch(idx, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return windows_to_tensors(*_shifted(data["x"][idx], data["m"][idx], cfg.shift, rng))

    @torch.no_grad()
    def evaluate() -> float:
        net.eval()
        hits, rng = 0, np.random.default_rng(cfg.seed)  # the same offsets every epoch
        for b in range(0, len(test_idx), 256):
            j = test_idx[b:b + 256]
            hits += int((net(*batch(j, rng)).argmax(1) == y[j]).sum())
        return hits / max(len(test_idx), 1)

    loss_mean, acc = float("nan"), float("nan")
    t0 = time.time()
    steps = (len(train_idx) + cfg.batch_size - 1) // cfg.batch_size
    first_epoch = epoch
    while epoch < cfg.max_epochs and (cfg.max_minutes is None or spent + time.time() - t0 < 60 * cfg.max_minutes):
        net.train()
        perm = train_idx[torch.randperm(len(train_idx), generator=g).numpy()]
        losses = []
        for b in tqdm(range(0, len(perm), cfg.batch_size), total=steps, disable=not progress,
                      desc=f"stem epoch {epoch + 1}", leave=False):
            j = np.sort(perm[b:b + cfg.batch_size])
            x, cover = _augment(*batch(j, np.random.default_rng(int(torch.randint(2**31, (1,), generator=g)))), g)
            loss = F.cross_entropy(net(x, cover), y[j])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        epoch += 1
        loss_mean, acc = float(np.mean(losses)), evaluate()
        spent, t0 = spent + time.time() - t0, time.time()
        with open(log_path, "a", newline="") as f:
            csv.writer(f).writerow([epoch, f"{spent:.1f}", f"{loss_mean:.5f}", f"{acc:.4f}"])
        if progress:
            print(f"stem epoch {epoch}: loss {loss_mean:.4f}, held-out family accuracy {acc:.4f} "
                  f"(commonest {majority:.4f}), {spent / 60:.1f} min", flush=True)
        with atomic_path(last) as tmp:
            torch.save({"net": net.state_dict(), "optimizer": opt.state_dict(), "generator": g.get_state(),
                        "epoch": epoch, "seconds": spent}, tmp)
        _export(net, module, model, cfg, out, epoch, acc)
    if resume and epoch == first_epoch:  # nothing left to train: write the resumed net into this model
        with open(log_path, newline="") as f:
            rows = list(csv.DictReader(f))
        acc = float(rows[-1]["heldout_acc"]) if rows else float("nan")
        _export(net, module, model, cfg, out, epoch, acc)
    return {"epoch": epoch, "seconds": spent, "loss": loss_mean, "heldout_acc": acc,
            "objects": len(y), "majority": majority}


def _export(net: _TrainStem, module: nn.Module, model, cfg: StemPretrainConfig, out: Path, epoch: int,
            acc: float) -> None:
    from ..checkpoint import save_checkpoint

    net.fold_into(module)
    save_checkpoint(model.state_dict(), out / "model.safetensors",
                    metadata={"stem_pretrain": str(asdict(cfg)), "epoch": str(epoch), "heldout_acc": f"{acc:.4f}"})


__all__ = ("StemPretrainConfig", "build_objects", "episode_objects", "pretrain_stem")
