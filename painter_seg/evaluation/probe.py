"""Linear probe: do a model's query tokens know the shape family of the generated object under them?

Multi-class episodes of the generator are decided by the shape family alone (colours and textures are drawn
afresh for every object), so a model that cannot tell families apart picks the class of a found object at chance.
This probe measures that directly: for held-out ``multiclass`` / ``semantic`` episodes it runs the model on the
episode's prompt pair over the query (the query half masked, as at inference), averages each feature layer's
query tokens over every object that covers at least half of two or more patches, and fits a logistic regression
from that vector to the object's family on the objects of the first 75% of the episodes; the accuracy on the
rest, next to the commonest family's share there, is the answer (docs/training "Stage 12").
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..codec.canvas import canvas_tensors, images_to_tensor, labels_to_tensor
from ..codec.palette import labels_to_compact, make_palette
from .few_shot import HELDOUT_SEED_BASE

PROBE_SEED_OFFSET = 9_000_000  # held-out seeds of their own (evaluation runs use seed * 1e6 + i, seed < 9)


def fit_linear_probe(x: np.ndarray, y: np.ndarray, train: np.ndarray, num_classes: int,
                     steps: int = 300, lr: float = 1e-2, weight_decay: float = 1e-3, seed: int = 0
                     ) -> tuple[float, float]:
    """Logistic regression on standardised features (Adam, full batch).

    Args:
        x: ``[N, D]`` features; y: ``[N]`` int classes; train: ``[N]`` bool, the rows fitted on.
        num_classes: classes of the regression.

    Returns:
        ``(train accuracy, held-out accuracy)`` (held-out: the rows not in ``train``).
    """
    g = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    tr = torch.as_tensor(train, dtype=torch.bool)
    mu, sd = xt[tr].mean(0), xt[tr].std(0) + 1e-5
    xt = (xt - mu) / sd
    yt = torch.as_tensor(y, dtype=torch.int64)
    lin = torch.nn.Linear(xt.shape[1], num_classes)
    with torch.no_grad():
        lin.weight.normal_(0.0, 0.01, generator=g)
        lin.bias.zero_()
    opt = torch.optim.Adam(lin.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():  # also when called under no_grad
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(lin(xt[tr]), yt[tr]).backward()
            opt.step()
    with torch.no_grad():
        hit = lin(xt).argmax(1) == yt
    return hit[tr].float().mean().item(), hit[~tr].float().mean().item()


def episode_canvas(model, ep) -> tuple[torch.Tensor, torch.Tensor]:
    """The inference canvas of a generated episode: its first prompt pair over its query, the prompt's labels
    painted in ``model.palette``.

    Returns:
        ``(imgs, tgts)``, each ``[1, 3, 2h, w]`` at ``model.half_size`` (the query's half of ``tgts`` is for
        :meth:`~painter_seg.model.SegGPT.query_mask` to hide).
    """
    size = tuple(model.half_size)
    (p_img, p_lab), (q_img, _) = ep.prompts[0], ep.query
    ids = np.array([i for i in np.unique(p_lab) if i > 0])
    pal = make_palette(model.palette, len(ids))
    return canvas_tensors(images_to_tensor([p_img], size),
                          labels_to_tensor([labels_to_compact(p_lab, ids)], pal, size),
                          images_to_tensor([q_img], size))


@torch.no_grad()
def family_probe(model, episodes: int = 800, seed: int = 0, min_patches: int = 2) -> dict:
    """The probe of this module's docstring on ``model`` (a :class:`~painter_seg.model.SegGPT`).

    Returns:
        ``{"objects", "majority", "layers": {block: {"train", "heldout"}}}`` (accuracies in 0..1).
    """
    from ..data.synthetic import FAMILIES, generate_episode

    model.eval()
    h, w = model.half_size
    gh, gw = model.half_grid
    ph, pw = h // gh, w // gw
    fam_id = {f: i for i, f in enumerate(FAMILIES)}
    feats_by_layer: list[list[np.ndarray]] = [[] for _ in model.feature_layers]
    ys, eps = [], []
    for e in range(episodes):
        ep = generate_episode(HELDOUT_SEED_BASE + PROBE_SEED_OFFSET + seed * 100_000 + e,
                              kind=("multiclass", "semantic")[e % 2], size=(h, w))
        imgs, tgts = episode_canvas(model, ep)
        feats = model.forward_features(imgs, tgts, model.query_mask(), torch.zeros(1))
        objmap = ep.meta["query_objmap"].astype(np.int64)
        for k, obj in enumerate(ep.meta["query_objects"]):
            if obj["role"] == "clutter" or obj["family"] not in fam_id:
                continue
            cover = (objmap == k).reshape(gh, ph, gw, pw).mean(axis=(1, 3)) >= 0.5
            if cover.sum() < min_patches:
                continue
            sel = torch.from_numpy(cover)
            for li, f in enumerate(feats):
                feats_by_layer[li].append(f[0, gh:][sel].float().mean(0).numpy())
            ys.append(fam_id[obj["family"]])
            eps.append(e)
    y, ep_idx = np.array(ys), np.array(eps)
    train = ep_idx < int(0.75 * episodes)
    held = y[~train]
    majority = float(np.bincount(held, minlength=len(FAMILIES)).max() / max(len(held), 1))
    layers = {}
    for block, xs in zip(model.feature_layers, feats_by_layer):
        tr_acc, ho_acc = fit_linear_probe(np.stack(xs), y, train, len(FAMILIES))
        layers[int(block)] = {"train": tr_acc, "heldout": ho_acc}
    return {"objects": len(y), "majority": majority, "layers": layers}


def format_probe(result: dict, name: str = "model") -> str:
    """One table of :func:`family_probe`'s result."""
    lines = [f"{name}: {result['objects']} objects, commonest family {100 * result['majority']:.1f}%",
             "block   held-out   train"]
    lines += [f"{b:>5}   {100 * v['heldout']:7.1f}%  {100 * v['train']:5.1f}%" for b, v in result["layers"].items()]
    return "\n".join(lines)


__all__: Sequence[str] = ("episode_canvas", "family_probe", "fit_linear_probe", "format_probe")
