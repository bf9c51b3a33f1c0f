"""Training: masks, optimiser groups, in-context samples, the loop, exact resume, DDP, the tool.

Everything runs on CPU with a shrunken seggpt_tiny (3 blocks, width 48, 96 px canvas halves)
composed from the real ``conf/train.yaml`` plus overrides.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch.utils.data import default_collate

from painter_seg.codec.canvas import IMAGENET_MEAN, IMAGENET_STD
from painter_seg.data.in_context import (
    FolderInContextDataset,
    InContextRecipe,
    MixedInContextDataset,
    SyntheticInContextDataset,
)
from painter_seg.errors import InputError
from painter_seg.training import TrainConfig, Trainer, parse_config, train
from painter_seg.training.logbook import CSV_FIELDS
from painter_seg.training.masking import BlockMaskGenerator, bottom_half_mask, sample_mask
from painter_seg.training.optim import build_optimizer, param_groups
from painter_seg.utils.schedule import WarmupCosine, warmup_cosine

REPO = Path(__file__).resolve().parents[1]
CONF = str(REPO / "conf")

# seggpt_tiny shrunk further for CPU tests: same code paths, a fraction of the cost.
SMALL = [
    "+experiment=smoke",
    "model.net.depth=3",
    "model.net.feature_layers=[2]",
    "model.net.embed_dim=48",
    "model.net.num_heads=2",
    "model.net.img_size=[192,96]",
    "model.net.decoder_embed_dim=16",
    "train.batch_size=2",
    "train.save_every=0",
    "train.progress=false",
]


def _cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=[*SMALL, f"output_dir={tmp_path}", *overrides])


def _batch(ds, indices) -> dict[str, torch.Tensor]:
    return default_collate([ds[i] for i in indices])


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------ masking
def test_bottom_half_mask():
    m = bottom_half_mask((6, 3))
    assert m.dtype == bool and m.shape == (18,)
    assert not m[:9].any() and m[9:].all()
    with pytest.raises(ValueError):
        bottom_half_mask((5, 3))


def test_block_masks_deterministic_with_painter_fraction():
    grid = (56, 28)  # the official canvas grid
    a = [sample_mask(np.random.default_rng(7), grid, p_half=0.0) for _ in range(2)]
    assert np.array_equal(a[0], a[1])
    rng = np.random.default_rng(0)
    masks = np.stack([sample_mask(rng, grid, p_half=0.0) for _ in range(200)])
    frac = masks.mean(1)
    assert masks.shape == (200, 56 * 28) and masks.dtype == bool
    assert frac.max() <= 0.5 and frac.mean() > 0.48  # at most 784 of 1568, rarely short of it
    assert 0.3 < masks[:, :784].mean() / masks[:, 784:].mean() < 3  # both halves get masked
    gen = BlockMaskGenerator(grid, 784, min_num_patches=16, max_num_patches=392)
    one = gen(np.random.default_rng(1))
    assert one.sum() <= 784 and np.array_equal(one, gen(np.random.default_rng(1)))
    halves = [sample_mask(np.random.default_rng(s), grid, p_half=1.0) for s in range(3)]
    assert all(np.array_equal(h, bottom_half_mask(grid)) for h in halves)
    rng = np.random.default_rng(3)
    share = np.mean(
        [
            np.array_equal(sample_mask(rng, (8, 4), 0.3), bottom_half_mask((8, 4)))
            for _ in range(400)
        ]
    )
    assert 0.22 < share < 0.38


# ------------------------------------------------------------------------------------ optimiser
def test_param_groups_no_decay_and_layer_decay(tiny_model):
    groups = param_groups(tiny_model, 0.05, layer_decay=0.5)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(tiny_model.named_parameters())
    assert len(by_param) == len(named)
    for name in tiny_model.no_weight_decay():
        assert by_param[id(named[name])]["weight_decay"] == 0.0
    assert by_param[id(named["blocks.0.norm1.weight"])]["weight_decay"] == 0.0
    assert by_param[id(named["blocks.0.attn.qkv.bias"])]["weight_decay"] == 0.0
    assert by_param[id(named["blocks.0.attn.qkv.weight"])]["weight_decay"] == 0.05
    depth = tiny_model.depth
    assert by_param[id(named["pos_embed"])]["lr_scale"] == 0.5 ** (depth + 1)
    assert by_param[id(named["blocks.0.mlp.fc1.weight"])]["lr_scale"] == 0.5**depth
    assert by_param[id(named[f"blocks.{depth - 1}.mlp.fc1.weight"])]["lr_scale"] == 0.5
    assert by_param[id(named["decoder_embed.weight"])]["lr_scale"] == 1.0
    opt = build_optimizer(tiny_model, 1e-3, layer_decay=0.5)
    assert max(g["lr"] for g in opt.param_groups) == pytest.approx(1e-3)


def test_warmup_cosine_schedule():
    f = WarmupCosine(warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    vals = [f(s) for s in range(16)]
    assert vals[0] == pytest.approx(0.2) and vals[3] == pytest.approx(0.8)
    assert vals[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(vals[4:]))
    assert vals[14] == pytest.approx(0.1) and vals[15] == pytest.approx(0.1)
    assert vals == [warmup_cosine(s, 14, 4, 0.1) for s in range(16)]  # the object is the function


# ------------------------------------------------------------------------------------ data
def _denorm(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return x * std + mean


def test_synthetic_items_deterministic_shaped_normalised():
    recipe = InContextRecipe(mix_context_p=0.5)
    ds = SyntheticInContextDataset(20, seed=3, half_size=(64, 48), recipe=recipe)
    again = SyntheticInContextDataset(20, seed=3, half_size=(64, 48), recipe=recipe)
    other = SyntheticInContextDataset(20, seed=4, half_size=(64, 48), recipe=recipe)
    seg_types = set()
    for i in range(6):
        a, b = ds[i], again[i]
        assert set(a) == {"imgs", "tgts", "valid", "seg_type"}
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert a["imgs"].shape == a["tgts"].shape == (3, 128, 48)
        assert a["valid"].shape == (1, 128, 48) and bool((a["valid"] == 1).all())
        assert a["imgs"].dtype == a["tgts"].dtype == torch.float32
        assert a["seg_type"].dtype == torch.int64 and a["seg_type"].dim() == 0
        seg_types.add(int(a["seg_type"]))
        img = _denorm(a["imgs"])
        assert img.min() >= -1e-5 and img.max() <= 1 + 1e-5
        colors = _denorm(a["tgts"]) * 255
        assert torch.allclose(colors, colors.round(), atol=1e-3)  # exact palette colours
        top = colors[:, :64].round().reshape(3, -1).T.unique(dim=0)
        bottom = colors[:, 64:].round().reshape(3, -1).T.unique(dim=0)
        assert len(top) >= 1 and len(bottom) >= 1
    assert seg_types <= {0, 1}
    assert not torch.equal(ds[0]["imgs"], other[0]["imgs"])


def test_colour_mapping_shared_between_prompt_and_query():
    ds = SyntheticInContextDataset(
        8,
        seed=0,
        half_size=(64, 64),
        recipe=InContextRecipe(mix_context_p=0.0, label_subset_p=0.0),
        kinds=["multiclass"],
    )
    item = ds[1]
    colors = (_denorm(item["tgts"]) * 255).round().to(torch.int64)
    top = {tuple(c) for c in colors[:, :64].reshape(3, -1).T.tolist()}
    bottom = {tuple(c) for c in colors[:, 64:].reshape(3, -1).T.tolist()}
    assert (0, 0, 0) in top and len(top) >= 3  # background + >= 2 classes
    assert len(top & bottom) >= 2  # the same colours mean the same classes


def test_folder_dataset_pairs_within_group(tmp_path):
    from PIL import Image

    groups = {}
    for g in ("a", "b"):
        pairs = []
        for k in range(4):
            img = np.full((40, 30, 3), 40 * k, dtype=np.uint8)
            lab = np.zeros((40, 30), dtype=np.uint8)
            lab[5:20, 5:15] = 1
            Image.fromarray(img).save(tmp_path / f"{g}{k}.jpg")
            Image.fromarray(lab, mode="L").save(tmp_path / f"{g}{k}.png")
            pairs.append((tmp_path / f"{g}{k}.jpg", tmp_path / f"{g}{k}.png"))
        groups[g] = pairs
    ds = FolderInContextDataset(
        groups,
        length=10,
        seed=1,
        half_size=(32, 32),
        seg_type=1,
        window=1,
        recipe={"mix_context_p": 0.5},
    )
    item = ds[3]
    assert item["imgs"].shape == (3, 64, 32) and int(item["seg_type"]) == 1
    assert all(torch.equal(item[k], ds[3][k]) for k in item)
    rng = np.random.default_rng(0)
    for q in range(4):
        partners = {ds._partner(rng, 4, q) for _ in range(50)}
        assert partners <= {q - 1, q + 1} - {-1, 4} and partners
    mixed = MixedInContextDataset([ds, SyntheticInContextDataset(4, 0, (32, 32))], [1, 1], 6)
    assert mixed[2]["imgs"].shape == (3, 64, 32)


def test_folder_dataset_on_davis(shared_data):
    root = shared_data / "davis2016"
    if not root.is_dir():
        pytest.skip("davis2016 not present")
    ds = FolderInContextDataset.from_folder(root, half_size=(48, 48), length=4, max_side=240)
    assert ds.seg_type == 1 and ds.window == 10
    item = ds[0]
    assert item["imgs"].shape == (3, 96, 48) and int(item["seg_type"]) == 1


def test_tiled_prompt_half_is_the_spatial_ensemble_grid():
    # K = 2 prompt views: n = 2, cells (0, 0) and (0, 1) filled, the bottom row empty (black, bg)
    recipe = InContextRecipe(tile_prompts_p=1.0, tile_prompts_k=(2, 2), jitter_p=0.0,
                             mix_context_p=0.0, label_subset_p=0.0)
    ds = SyntheticInContextDataset(6, seed=2, half_size=(64, 64), recipe=recipe, kinds=["semantic"])
    for i in range(3):
        a = ds[i]
        assert all(torch.equal(a[k], ds[i][k]) for k in a)  # a pure function of (seed, index)
        img, colors = _denorm(a["imgs"]), (_denorm(a["tgts"]) * 255).round()
        assert img[:, 32:64].abs().max() < 1e-5 and colors[:, 32:64].abs().max() == 0
        assert img[:, :32, :32].abs().max() > 0.05 and img[:, :32, 32:].abs().max() > 0.05
        assert img[:, 64:].abs().max() > 0.05  # the query half is one full view
    # tiling off draws nothing: the same items as a recipe without tiles
    plain = SyntheticInContextDataset(4, seed=2, half_size=(32, 32), recipe=InContextRecipe())
    off = SyntheticInContextDataset(4, seed=2, half_size=(32, 32),
                                    recipe=InContextRecipe(tile_prompts_k=(3, 4)))
    assert all(torch.equal(plain[1][k], off[1][k]) for k in plain[1])


def test_folder_dataset_tiles_partners_of_one_group(tmp_path):
    from PIL import Image

    pairs = []
    for k in range(3):
        Image.fromarray(np.full((40, 30, 3), 60 + 40 * k, dtype=np.uint8)).save(tmp_path / f"{k}.jpg")
        lab = np.zeros((40, 30), dtype=np.uint8)
        lab[5:30, 5:20] = 1
        Image.fromarray(lab, mode="L").save(tmp_path / f"{k}.png")
        pairs.append((tmp_path / f"{k}.jpg", tmp_path / f"{k}.png"))
    recipe = {"tile_prompts_p": 1.0, "tile_prompts_k": [4, 4], "jitter_p": 0.0, "scale": [1, 1],
              "ratio": [0.75, 0.75]}
    ds = FolderInContextDataset({"a": pairs}, length=4, seed=0, half_size=(32, 32), recipe=recipe)
    colors = (_denorm(ds[0]["tgts"]) * 255).round()
    fg = colors[:, :32].abs().sum(0) > 0
    for r, c in ((0, 0), (0, 1), (1, 0), (1, 1)):  # 4 views: every 16 x 16 cell holds an object
        assert fg[16 * r : 16 * r + 16, 16 * c : 16 * c + 16].any()


def test_score_paint_perfect_and_swapped():
    from painter_seg.training.validation import score_paint

    target = np.zeros((8, 4, 3), np.uint8)
    target[1:3, :2] = (255, 0, 0)
    target[5:7, :2] = (255, 0, 0)
    target[7, 2:] = (0, 255, 0)
    target[0, 3] = (0, 255, 0)
    paint = target[4:].astype(np.float32)
    assert score_paint(paint, target) == [1.0, 1.0]
    assert score_paint(np.zeros_like(paint), target) == [0.0, 0.0]


def test_validation_sets_are_logged(tmp_path):
    val = [
        "+data.val.gen._target_=painter_seg.data.in_context.SyntheticInContextDataset",
        "+data.val.gen.length=3",
        "train.val_every=2",
        "train.val_batch_size=2",
    ]
    out = train(_cfg(tmp_path, "train.max_steps=3", "data.length=6", *val))
    rows = _read_csv(tmp_path / "val_log.csv")
    assert [(r["step"], r["set"]) for r in rows] == [("0", "gen"), ("2", "gen"), ("3", "gen")]
    assert all(0 <= float(r["miou"]) <= 100 and float(r["loss"]) > 0 for r in rows)
    assert set(out["val"]) == {"gen"} and out["val"]["gen"]["pairs"] == int(rows[-1]["pairs"])
    again = train(_cfg(tmp_path / "again", "train.max_steps=1", "data.length=6", *val))
    assert again["val"]["gen"]["pairs"] == int(rows[0]["pairs"])  # same fixed samples


def test_real_mix_experiment_composes():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        job = parse_config(compose("train", overrides=["+experiment=real_mix_ft"]))
        gpu = parse_config(compose("train", overrides=["+experiment=real_mix_gpu"]))
    assert job.init_checkpoint == "pkg://painter_seg/weights/painter_small.safetensors"
    assert job.train.loss_fg_weight == 2.5 and job.train.lr < 2e-4 and job.train.val_every
    sets = job.data.sets
    holdout = set(sets.pascal.holdout)
    assert len(holdout) == 3 and holdout == set(sets.pascal_instances.holdout)
    assert set(job.data.val.pascal_holdout.holdout) == holdout
    assert job.data.val.pascal_holdout.split == "holdout" and sets.pascal.split == "train"
    assert job.data.recipe.tile_prompts_p > 0
    assert gpu.device == "cuda" and gpu.train.batch_size * gpu.train.max_steps >= 64 * 1000


# ------------------------------------------------------------------------------------ the loop
def test_one_step_lowers_loss_on_fixed_batch(tmp_path):
    trainer = Trainer(
        _cfg(tmp_path, "train.lr=2e-3", "train.warmup_steps=0", "train.p_half_mask=1")
    )
    batch = _batch(trainer.dataset, [0, 1])
    mask = trainer.masks_for(0, 0, 2)
    with torch.no_grad():
        before = trainer.compute_loss(batch, mask).item()
    loss, norm = trainer.train_step([batch])
    assert loss.item() == pytest.approx(before, rel=1e-5) and torch.isfinite(norm)
    with torch.no_grad():
        after = trainer.compute_loss(batch, mask).item()
    assert after < before


def test_loss_fg_weight_reaches_the_objective(tmp_path):
    from painter_seg.model.loss import masked_smooth_l1

    trainer = Trainer(_cfg(tmp_path, "train.loss_fg_weight=2.5", "train.p_half_mask=1", "train.loss_beta=100"))
    batch = _batch(trainer.dataset, [0, 1])
    mask = trainer.masks_for(0, 0, 2)
    with torch.no_grad():
        got = trainer.compute_loss(batch, mask).item()
        pred = trainer.net(batch["imgs"], batch["tgts"], bool_masked_pos=mask, seg_type=batch["seg_type"])
        args = (pred.float(), batch["tgts"], mask, trainer.net.patch_size)
        weighted = masked_smooth_l1(*args, valid=batch["valid"], beta=100.0, fg_weight=2.5).item()
        plain = masked_smooth_l1(*args, valid=batch["valid"], beta=100.0).item()
    assert got == pytest.approx(weighted, rel=1e-4) and abs(weighted - plain) > 1e-3 * plain


def test_every_parameter_gets_a_gradient(tmp_path):
    trainer = Trainer(_cfg(tmp_path, "train.p_half_mask=0"))
    batch = _batch(trainer.dataset, [2, 3])
    batch["seg_type"] = torch.tensor([0, 1])  # both type tokens in play
    trainer.compute_loss(batch, trainer.masks_for(0, 0, 2)).backward()
    for name, p in trainer.net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_resume_reproduces_uninterrupted_run(tmp_path):
    common = [
        "train.max_steps=6",
        "train.warmup_steps=2",
        "data.length=6",
        "train.log_every=1",
        "model.net.drop_path_rate=0.2",
        "train.accum_steps=1",
    ]
    full = train(_cfg(tmp_path / "full", *common))
    first = train(_cfg(tmp_path / "split", *common, "train.stop_after_steps=2"))
    assert first["stopped"] == "stop_after_steps" and first["step"] == 2
    state = torch.load(tmp_path / "split" / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 2 and state["batch_in_epoch"] == 2  # stopped mid-epoch (3 per epoch)
    rest = train(_cfg(tmp_path / "split", *common, "resume=true"))
    assert rest["resumed_from"] and rest["step"] == 6
    assert sorted(rest["losses"]) == [3, 4, 5, 6]
    for s in range(1, 7):
        got = first["losses"].get(s, rest["losses"].get(s))
        assert got == full["losses"][s], s  # bit-exact, step for step
    rows_full = _read_csv(tmp_path / "full" / "train_log.csv")
    rows_split = _read_csv(tmp_path / "split" / "train_log.csv")
    assert list(rows_full[0]) == list(CSV_FIELDS)
    assert [r["loss"] for r in rows_full] == [r["loss"] for r in rows_split]
    assert [r["step"] for r in rows_split] == [str(s) for s in range(1, 7)]
    wa = load_file(str(tmp_path / "full" / "model.safetensors"))
    wb = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    summary = json.loads((tmp_path / "split" / "summary.json").read_text())
    assert summary["step"] == 6 and "losses" not in summary


def test_wall_clock_budget_stops_and_saves(tmp_path):
    out = train(_cfg(tmp_path, "train.max_steps=50", "train.max_minutes=1e-9", "data.length=8"))
    assert out["stopped"] == "max_minutes" and out["step"] == 1
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "model.safetensors").is_file()


def test_saved_weights_load_with_build_model(tmp_path):
    from painter_seg import build_model

    cfg = _cfg(tmp_path, "train.max_steps=1", "data.length=2")
    train(cfg)
    model = build_model(cfg.model, checkpoint=tmp_path / "model.safetensors")
    ref = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def test_train_job_runs_with_precision_auto(tmp_path):
    from painter_seg.jobs.train import run
    from painter_seg.utils.runtime import resolve_precision

    assert run(_cfg(tmp_path / "o", "train.max_steps=1", "data.length=2", "precision=auto")) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["step"] == 1 and summary["precision"] == resolve_precision("auto", torch.device("cpu"))


def test_train_defaults_live_in_the_dataclass():
    from omegaconf import OmegaConf

    yaml = OmegaConf.load(REPO / "conf" / "train" / "default.yaml")
    assert OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), yaml)) == TrainConfig()
    assert set(yaml) == set(TrainConfig.__dataclass_fields__)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+train.lrr=1", "unknown config key train.lrr (did you mean train.lr?)"),
        ("+init_checkpont=x.pth", "unknown config key init_checkpont (did you mean init_checkpoint?)"),
        ("train.batch_size=two", "train.batch_size: Value 'two' of type 'str' could not be converted"),
        ("train.batch_size=0", "train.batch_size and train.accum_steps must be >= 1"),
        ("train.layer_decay=1.5", "train.layer_decay must be in (0, 1]"),
        ("precision=bf61", "precision=bf61: expected one of auto, fp32, bf16, fp16"),
    ],
)
def test_bad_config_is_one_line_input_error(tmp_path, override, message):
    with pytest.raises(InputError) as e:
        parse_config(_cfg(tmp_path, override))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_shipped_stages_are_deltas_of_one_recipe():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        s1, s2, s3 = (
            parse_config(compose("train", overrides=[f"+experiment=ship_small_{n}"]))
            for n in ("stage1", "mix", "fg")
        )
    # MODEL_CARD.md: lr, warm-up and length per stage; each stage starts from the previous one's weights
    assert [(s.train.lr, s.train.warmup_steps, s.train.max_steps) for s in (s1, s2, s3)] == [
        (5e-4, 200, 2500), (2e-4, 100, 4800), (1e-4, 50, 2600)
    ]
    assert s1.init_checkpoint is None
    assert s2.init_checkpoint == f"{s1.output_dir}/model.safetensors"
    assert s3.init_checkpoint == f"{s2.output_dir}/model.safetensors"
    assert [s.train.loss_fg_weight for s in (s1, s2, s3)] == [1.0, 1.0, 2.5]
    assert sorted(s1.data.sets) == ["synthetic"] and sorted(s2.data.sets) == sorted(s3.data.sets) == ["easy", "full"]
    for s in (s1, s2, s3):
        assert s.model.name == "painter_small" and s.precision == "auto"
        assert (s.train.batch_size, s.train.loss_beta, s.train.p_half_mask) == (16, 100.0, 0.5)


def test_configs_compose(tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        tiny = compose("train", overrides=["+experiment=tiny_synthetic"])
        fold = compose("train", overrides=["data=folders_train", "data.sets.folders.root=/x"])
    assert tiny.model.name == "seggpt_tiny" and tiny.train.max_steps > 1000
    assert fold.data.sets.folders.weight == 1.0 and fold.data.sets.synthetic.weight == 0.0
    assert fold.data.recipe.mix_context_p == tiny.data.recipe.mix_context_p


# ------------------------------------------------------------------------------------ processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def test_torchrun_two_processes_keep_identical_weights(tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "tools/train.py",
        *SMALL,
        "train.max_steps=3",
        "data.length=8",
        f"output_dir={out}",
        "debug_fingerprints=true",
        "train.aux_family_weight=0.5",  # the auxiliary head is not DDP-wrapped: its gradients are averaged by hand
        "train.aux_family_layer=2",
        "data.sets.synthetic.family_targets=true",
    ]
    res = subprocess.run(
        cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240, check=False
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 4 and summary["step"] == 3
    fps = summary["rank_fingerprints"]
    assert len(fps) == 2 and fps[0] == fps[1]
    heads = summary["rank_aux_fingerprints"]
    assert len(heads) == 2 and heads[0] == heads[1]
    assert len(_read_csv(out / "train_log.csv")) == 3  # written once, by rank 0


def test_tool_reports_bad_input_in_one_line(tmp_path):
    cmd = [
        sys.executable,
        "tools/train.py",
        *SMALL,
        f"output_dir={tmp_path / 'o'}",
        f"init_checkpoint={tmp_path / 'missing.pth'}",
    ]
    res = subprocess.run(
        cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing.pth" in lines[0]


def test_family_maps_name_each_objects_family():
    from painter_seg.data.synthetic import FAMILIES, generate_episode
    from painter_seg.data.synthetic.episodes import FAMILY_IGNORE

    ep = generate_episode(11, "multiclass", size=(96, 96))
    fams = ep.meta["family_maps"]
    assert len(fams) == 2 and all(f.shape == (96, 96) and f.dtype == np.uint8 for f in fams)
    q, objmap = fams[-1], ep.meta["query_objmap"]
    assert np.array_equal(q == 0, objmap < 0)  # background exactly where no object is seen
    for i, o in enumerate(ep.meta["query_objects"]):
        seen = q[objmap == i]
        want = 1 + FAMILIES.index(o["family"]) if o["family"] in FAMILIES else FAMILY_IGNORE
        assert seen.size == 0 or set(seen.tolist()) == {want}, o
    # multi-class ids are families: every pixel of id k shows family k of the concept
    for (img, lab), fam in zip([*ep.prompts, ep.query], fams):
        for k, name in enumerate(ep.meta["concept"]["families"], 1):
            assert set(fam[lab == k].tolist()) == {1 + FAMILIES.index(name)}


def test_family_targets_ride_along_without_changing_the_sample():
    recipe = InContextRecipe(mix_context_p=0.4, tile_prompts_p=0.3)
    kw = {"seed": 5, "half_size": (64, 48), "recipe": recipe, "kinds": ["multiclass", "semantic"]}
    plain = SyntheticInContextDataset(12, **kw)
    fam = SyntheticInContextDataset(12, family_targets=True, **kw)
    nonzero = 0
    for i in range(12):
        a, b = plain[i], fam[i]
        assert set(b) == set(a) | {"family"}
        assert all(torch.equal(a[k], b[k]) for k in a)  # same draws, same sample
        f = b["family"]
        assert f.shape == (128, 48) and f.dtype == torch.uint8
        assert set(f.unique().tolist()) <= set(range(17)) | {255}
        # a coloured (labelled) pixel always lies on an object, so its family is never background
        colored = (_denorm(b["tgts"]) * 255).round().abs().sum(0) > 0
        assert not bool((f[colored] == 0).any())
        nonzero += int((f > 0).sum())
    assert nonzero > 0


def test_collate_fills_missing_family_targets():
    from painter_seg.training.loader import collate_samples

    a = {"imgs": torch.zeros(3, 8, 4), "family": torch.ones(8, 4, dtype=torch.uint8)}
    b = {"imgs": torch.zeros(3, 8, 4)}
    out = collate_samples([a, b])
    assert out["family"].shape == (2, 8, 4)
    assert bool((out["family"][0] == 1).all()) and bool((out["family"][1] == 255).all())
    assert set(collate_samples([b, b])) == {"imgs"}


def test_patch_family_targets_take_the_majority_or_nothing():
    from painter_seg.model.loss import family_cross_entropy, patch_family_targets

    f = torch.zeros(1, 4, 6, dtype=torch.uint8)
    f[0, :2, 2:4] = 3  # a whole patch of family 3
    f[0, :2, 4] = 5  # half a patch of 5 ...
    f[0, 2:, 0:2] = 255  # an ignored patch
    f[0, 2, 2] = 7  # a quarter: the rest (background) wins
    f[0, 2:, 4] = 2
    f[0, 2:, 5] = 6  # two halves: neither covers more than half, yet each covers exactly half
    got = patch_family_targets(f, 2, num_classes=17)
    assert got.tolist() == [[[0, 3, 0], [-1, 0, 2]]]  # ties go to the smaller value
    logits = torch.zeros(1, 2, 3, 17, requires_grad=True)
    ce = family_cross_entropy(logits, f, 2)
    assert ce.item() == pytest.approx(float(np.log(17)), rel=1e-6)
    none = family_cross_entropy(logits, torch.full((1, 4, 6), 255, dtype=torch.uint8), 2)
    none.backward()
    assert none.item() == 0.0 and logits.grad is not None


def test_object_family_loss_pools_each_regions_logits_per_half():
    from painter_seg.model.loss import object_family_cross_entropy

    # a 2 x 2 patch canvas of 2 x 2 px patches, two halves of one patch row each
    f = torch.zeros(1, 4, 4, dtype=torch.uint8)
    f[0, :2, :2] = 3  # top half: family 3 covers patch (0, 0) ...
    f[0, :2, 2] = 3  # ... and half of patch (0, 1)
    f[0, 2:, 0] = 5  # bottom half: family 5 covers half a patch only: too small, no target
    f[0, 2:, 2:] = 255  # ignored
    logits = torch.zeros(1, 2, 2, 17)
    logits[0, 0, 0, 3] = 3.0  # patch (0, 0) says 3 strongly, patch (0, 1) says 1
    logits[0, 0, 1, 1] = 3.0
    logits[0, 1, :, 5] = -50.0  # never read: family 5's region is below one patch
    logits.requires_grad_(True)
    pooled = (logits[0, 0, 0] * 1.0 + logits[0, 0, 1] * 0.5) / 1.5  # weighted by the share each patch is covered
    want = torch.nn.functional.cross_entropy(pooled[None], torch.tensor([3]))
    got = object_family_cross_entropy(logits, f, 2)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    got.backward()
    assert logits.grad[0, 1].abs().sum().item() == 0.0  # the bottom half had no region
    # the same region split over both halves makes two targets, each pooled in its own half
    f2 = torch.zeros(1, 4, 4, dtype=torch.uint8)
    f2[0, 1:3, :2] = 3
    assert object_family_cross_entropy(torch.zeros(1, 2, 2, 17), f2, 2).item() == 0.0  # half a patch each side
    none = object_family_cross_entropy(logits, torch.full((1, 4, 4), 255, dtype=torch.uint8), 2)
    assert none.item() == 0.0 and none.requires_grad
    with pytest.raises(ValueError, match="3 patch rows do not split into 2 halves"):
        object_family_cross_entropy(torch.zeros(1, 3, 2, 17), torch.zeros(1, 6, 4, dtype=torch.uint8), 2)


def test_aux_family_loss_trains_a_head_that_is_saved_but_never_exported(tmp_path):
    from painter_seg.model.loss import object_family_cross_entropy

    over = ["train.aux_family_weight=0.5", "train.aux_family_layer=2", "data.sets.synthetic.family_targets=true",
            "train.max_steps=3", "data.length=6", "train.log_every=1"]
    trainer = Trainer(_cfg(tmp_path / "a", *over))
    batch = _batch(trainer.dataset, [0, 1])
    mask = trainer.masks_for(0, 0, 2)
    with torch.no_grad():
        with_aux = trainer.compute_loss(batch, mask).item()
        ce = trainer.aux_window[-1].item()
        without = trainer.compute_loss({k: v for k, v in batch.items() if k != "family"}, mask).item()
    assert ce > 0.5 and with_aux == pytest.approx(without + 0.5 * ce, rel=1e-4)
    lrs = {g["group_name"]: g["initial_lr"] for g in trainer.state.optimizer.param_groups}
    assert sorted(k for k in lrs if k.startswith("aux_")) == ["aux_layer1_decay", "aux_layer1_no_decay"]
    net_lr = trainer.base_lr
    assert all(v == pytest.approx(20 * net_lr if k.startswith("aux_") else net_lr) for k, v in lrs.items())
    trainer.close()
    out = train(_cfg(tmp_path / "b", *over, "train.stop_after_steps=2"))
    rows = _read_csv(tmp_path / "b" / "train_log.csv")
    assert list(rows[0]) == [*CSV_FIELDS, "aux_family_loss"] and float(rows[0]["aux_family_loss"]) > 0
    assert float(rows[0]["lr"]) <= float(OmegaConf.select(_cfg(tmp_path / "b", *over), "train.lr"))  # the net's
    state = torch.load(tmp_path / "b" / "last.pt", map_location="cpu", weights_only=True)
    assert sorted(state["aux"]) == ["bias", "weight"] and state["aux"]["weight"].shape == (17, 48)
    exported = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert set(exported) == set(trainer.net.state_dict())  # the head stays out of the weights
    rest = train(_cfg(tmp_path / "b", *over, "resume=true"))
    assert out["step"] == 2 and rest["resumed_from"] and rest["step"] == 3
    with pytest.raises(InputError, match="aux_family_layer=9"):
        Trainer(_cfg(tmp_path / "c", *over[:1], "train.aux_family_layer=9"))
    obj = Trainer(_cfg(tmp_path / "d", *over, "train.aux_family_pool=object"))
    with torch.no_grad():
        obj.compute_loss(batch, mask)
        _, feats = obj.model(batch["imgs"], batch["tgts"], bool_masked_pos=mask, seg_type=batch["seg_type"],
                             return_features=True)
        want = object_family_cross_entropy(obj.aux_head(feats[obj.aux_index]), batch["family"], obj.net.patch_size)
    assert obj.aux_window[-1].item() == pytest.approx(want.item(), rel=1e-5) and want.item() > 0.5
    obj.close()
    with pytest.raises(InputError, match="train.aux_family_pool must be 'patch' or 'object', got 'mean'"):
        Trainer(_cfg(tmp_path / "e", *over, "train.aux_family_pool=mean"))


def test_family_pretrain_trains_only_the_blocks_it_runs_and_resumes_exactly(tmp_path):
    from painter_seg import build_model

    def fresh():
        torch.manual_seed(0)
        return build_model("seggpt_tiny", pretrained=False)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # at this size two threads reduce in a varying order: two runs differ in the last bit
    try:
        _family_pretrain_checks(fresh, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _family_pretrain_checks(fresh, tmp_path):
    from painter_seg.training.family_pretrain import (
        FamilyPretrainConfig,
        family_batch,
        pretrain_families,
    )

    start = {k: v.clone() for k, v in fresh().state_dict().items()}
    cfg = FamilyPretrainConfig(layer=3, batch_size=2, max_steps=3, max_minutes=None, log_every=1, save_every=2,
                               precision="fp32")
    imgs, tgts, fam = family_batch(fresh(), [cfg.seed_base, cfg.seed_base + 1])
    assert imgs.shape == tgts.shape == (2, 3, 448, 224) and fam.shape == (2, 448, 224)
    assert fam.dtype == torch.uint8 and int(fam[0, 224:].max()) > 0  # the query half has families

    res = pretrain_families(fresh(), cfg, tmp_path / "a", progress=False)
    assert res["step"] == 3
    rows = _read_csv(tmp_path / "a" / "family_log.csv")
    assert [r["step"] for r in rows] == ["1", "2", "3"] and all(float(r["loss"]) > 0 for r in rows)
    once = load_file(str(tmp_path / "a" / "model.safetensors"))
    moved = {k for k in once if not torch.equal(once[k], start[k])}
    assert any(k.startswith("blocks.3.") for k in moved) and any(k.startswith("patch_embed.") for k in moved)
    assert not any(k.startswith(("blocks.4.", "blocks.5.", "decoder")) for k in moved)  # never run, never moved

    pretrain_families(fresh(), replace(cfg, max_steps=2), tmp_path / "b", progress=False)
    pretrain_families(fresh(), cfg, tmp_path / "b", resume=True, progress=False)
    twice = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(once[k], twice[k]) for k in once)  # stopped and resumed = run in one go
    assert [r["step"] for r in _read_csv(tmp_path / "b" / "family_log.csv")] == ["1", "2", "3"]

    with pytest.raises(InputError, match=r"layer=7: expected one of the model's feature_layers \[2, 3, 4, 5\]"):
        pretrain_families(fresh(), replace(cfg, layer=7), tmp_path / "c", progress=False)
    with pytest.raises(InputError, match="no checkpoint to resume from"):
        pretrain_families(fresh(), cfg, tmp_path / "d", resume=True, progress=False)


def test_pretrain_families_tool_reports_a_bad_layer_in_one_line(tmp_path, capsys):
    import runpy

    tool = runpy.run_path(str(REPO / "tools" / "pretrain_families.py"))
    assert tool["main"](["--output-dir", str(tmp_path / "o"), "--layer", "4", "--steps", "1"]) == 2
    assert capsys.readouterr().err.strip() == "error: layer=4: expected one of the model's feature_layers [3, 5, 7, 9]"
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_lr_scales_multiply_the_named_groups_and_zero_freezes(tmp_path):
    from painter_seg.training.optim import prefix_scale

    scales = {"blocks": 0.5, "blocks.1": 0.0, "decoder_pred": 3.0}
    assert prefix_scale("blocks.1.mlp.fc1.weight", scales) == 0.0  # the longest prefix wins
    assert prefix_scale("blocks.2.mlp.fc1.weight", scales) == 0.5
    assert prefix_scale("blocks10.x", {"blocks1": 2.0}) == 1.0  # whole name parts only
    assert prefix_scale("decoder_embed.weight", scales) == 1.0

    over = ["train.max_steps=2", "data.length=4", "train.lr_scales={blocks.1:0,decoder_pred:3}"]
    trainer = Trainer(_cfg(tmp_path / "a", *over))
    lrs = {g["group_name"]: g["initial_lr"] for g in trainer.state.optimizer.param_groups}
    base = trainer.base_lr
    assert lrs["layer4_decay_x3"] == pytest.approx(3 * base) and lrs["layer4_decay"] == pytest.approx(base)
    frozen = {n for n, p in trainer.net.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in trainer.net.named_parameters() if n.startswith("blocks.1.")}
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    trainer.close()
    train(_cfg(tmp_path / "a", *over))
    after = load_file(str(tmp_path / "a" / "model.safetensors"))
    assert float(_read_csv(tmp_path / "a" / "train_log.csv")[0]["lr"]) <= base  # the network's, not 3 x
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("blocks.1."))
    assert not torch.equal(after["blocks.0.mlp.fc1.weight"], before["blocks.0.mlp.fc1.weight"])
    with pytest.raises(InputError, match=r"train.lr_scales values must be numbers >= 0, got \{'blocks': -1.0\}"):
        Trainer(_cfg(tmp_path / "b", "train.lr_scales={blocks:-1}"))
