"""Prompt tuning: only the prompt learns, the model stays bit-identical, the artefact round-trips and refuses
other models, the tuned strategy is an example pair; tune_prompt.py / segment.py strategy=tuned / the report.

The model is seggpt_tiny on a 2 x (64 x 64) canvas (every code path of seggpt_tiny, a quarter of the tokens)
so that the whole file runs in well under a minute on a 2-core CPU.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from painter_seg import build_model, save_checkpoint
from painter_seg.apps.few_shot import FewShotSegmenter
from painter_seg.cli import run_job
from painter_seg.data.synthetic import generate_scene_views
from painter_seg.errors import InputError
from painter_seg.strategies import build_strategy
from painter_seg.tuning import PromptTuner, TuneConfig, TunedPrompt, score_pairs, split_pairs
from tests.conftest import REPO, run_cli

SMALL = ["net.img_size=[128,64]", "net.pretrain_img_size=64"]


def _small_model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("seggpt_tiny", pretrained=False, overrides=SMALL)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random values everywhere (rel-pos tables and biases start at zero)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These tensors are tiny: one thread is as fast, and much faster on a CPU shared with other jobs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    return _small_model()


@pytest.fixture(scope="module")
def views():
    views = generate_scene_views(0, 6, (48, 64), num_classes=2)
    return [(img, np.where(lab > 0, lab + 4, 0)) for img, lab in views]  # class ids 5 and 6


@pytest.fixture(scope="module")
def tuned(model, views):
    """One short tuning run, recording what happens to the model meanwhile."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    hook = model.register_forward_hook(
        lambda m, i, o: seen.append((any(p.requires_grad for p in m.parameters()), m.training)))
    model.train()  # the tuner must switch to eval and back
    tuner = PromptTuner(model, TuneConfig(steps=3, batch_size=2, val_fraction=0.34, val_every=1))
    try:
        prompt = tuner.fit(views, class_names=["five", "six"], progress=False)
    finally:
        hook.remove()
    after_training = model.training
    model.eval()
    return {"tuner": tuner, "prompt": prompt, "before": before, "seen": seen,
            "after_training": after_training}


def test_gradients_reach_only_the_prompt(model, tuned):
    tuner = tuned["tuner"]
    assert tuner.image.grad is not None and tuner.image.grad.abs().sum() > 0
    assert tuner.mask.grad is not None and tuner.mask.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    assert tuned["seen"] and not any(grad or training for grad, training in tuned["seen"])
    assert all(p.requires_grad for p in model.parameters()) and tuned["after_training"]  # put back


def test_model_weights_are_bit_identical_after_tuning(model, tuned):
    after = model.state_dict()
    assert set(after) == set(tuned["before"])
    assert all(torch.equal(after[k], v) for k, v in tuned["before"].items())


def test_prompt_learns_and_summary(tuned, views):
    p, tuner = tuned["prompt"], tuned["tuner"]
    assert p.class_ids == [5, 6] and p.class_names == ["five", "six"] and p.size == (64, 64)
    assert p.palette.tolist() == [[0, 0, 0], [255, 255, 255], [255, 255, 127]]
    s = p.summary
    assert s["steps"] == 3 and s["train_pairs"] == 4 and s["val_pairs"] == 2 and 0 <= s["best_step"] <= 3
    assert [r["step"] for r in tuner.history if "val_miou" in r] == [0, 1, 2, 3]  # 0 = the initial prompt
    train, _ = split_pairs(len(views), 0.34, 0)
    init, _ = tuner.initial_prompt([views[i] for i in train], [5, 6], p.palette)  # init="mean"
    assert not torch.equal(tuner.image.detach()[0], init)
    assert torch.equal(p.image, init) == (s["best_step"] == 0)  # the best validated prompt is returned


def test_a_prompt_is_tuned_in_the_model_palette(views):
    model = _small_model(1)
    model.palette = "distinct"  # as build_model sets it from the config (the shipped model's)
    prompt = PromptTuner(model, TuneConfig(steps=1, batch_size=2)).fit(views[:3], progress=False)
    assert prompt.palette.tolist() == [[0, 0, 0], [255, 255, 0], [0, 255, 255]]


def test_init_pair_replaces_the_indexed_training_pair(model, views):
    ids, palette = [5, 6], np.array([[0, 0, 0], [255, 255, 255], [255, 255, 127]], np.uint8)

    def init(index, pair=None):
        tuner = PromptTuner(model, TuneConfig(init="pair", init_index=index))
        return tuner.initial_prompt(views, ids, palette, init_pair=pair)

    by_index, given, first = init(3), init(0, views[3]), init(0)
    assert torch.equal(given[0], by_index[0]) and torch.equal(given[1], by_index[1])
    assert not torch.equal(given[0], first[0])


def test_anchor_penalty_is_the_weighted_distance_from_the_start(model, views):
    """anchor * mean squared distance of each trained tensor from its start; it holds the prompt near it."""
    ids, palette = [5, 6], np.array([[0, 0, 0], [255, 255, 255], [255, 255, 127]], np.uint8)
    tuner = PromptTuner(model, TuneConfig(init="pair", anchor=0.5, train_mask=False))
    img0, mask0 = tuner.initial_prompt(views, ids, palette)
    tuner._optimizer(img0, mask0)
    assert float(tuner.anchor_penalty().detach()) == 0.0
    with torch.no_grad():
        tuner.image.add_(0.5)  # only the image trains: 0.5 * 0.25
        tuner.mask.add_(1.0)
    assert float(tuner.anchor_penalty().detach()) == pytest.approx(0.125)
    with pytest.raises(InputError, match="anchor=-1"):
        TuneConfig(anchor=-1)

    def moved(anchor):
        t = PromptTuner(model, TuneConfig(init="pair", steps=4, batch_size=2, lr=0.5, val_fraction=0,
                                          augment=None, anchor=anchor, clamp=False))
        p = t.fit(views, progress=False)
        start, _ = t.initial_prompt(views, ids, p.palette)
        return float((p.image - start).pow(2).mean())

    assert moved(1e6) < 0.1 * moved(0.0)


def test_fg_weight_reaches_the_loss(model, views, monkeypatch):
    import painter_seg.tuning.tuner as tuner_mod

    seen = []
    real = tuner_mod.masked_smooth_l1
    monkeypatch.setattr(tuner_mod, "masked_smooth_l1", lambda *a, **k: seen.append(k) or real(*a, **k))
    losses = {}
    for w in (1.0, 3.0):
        t = PromptTuner(model, TuneConfig(fg_weight=w, init="pair"))
        ids = [5, 6]
        palette = np.array([[0, 0, 0], [255, 255, 255], [255, 255, 127]], np.uint8)
        t._optimizer(*t.initial_prompt(views, ids, palette))
        q, truth, valid, _ = t._batch(np.random.default_rng(0), views, [1, 2], ids, palette)
        with torch.no_grad():
            losses[w] = float(t.loss(q, truth, valid, 0))
    assert [k["fg_weight"] for k in seen] == [1.0, 3.0] and losses[1.0] != losses[3.0]
    with pytest.raises(InputError, match="fg_weight=0"):
        TuneConfig(fg_weight=0)


def test_decoded_loss_scores_the_refined_decode_and_reaches_the_prompt(model, views):
    """loss=decoded: the cross-entropy of the decoded (refined) class scores, differentiable in the prompt mask;
    a bad value is one error."""
    ids = [5, 6]
    palette = np.array([[0, 0, 0], [255, 255, 255], [255, 255, 127]], np.uint8)
    values = {}
    for loss in ("paint", "decoded"):
        t = PromptTuner(model, TuneConfig(loss=loss, init="pair", train_image=False, refine="guided"))
        t._optimizer(*t.initial_prompt(views, ids, palette))
        q, truth, valid, labels = t._batch(np.random.default_rng(0), views, [1, 2], ids, palette)
        assert labels.shape == (2, *t.half_size) and set(labels.unique().tolist()) <= {0, 1, 2}
        value = t.loss(q, truth, valid, 0, "fp32", labels, palette)
        value.backward()
        values[loss] = float(value.detach())
        assert t.mask.grad is not None and float(t.mask.grad.abs().sum()) > 0
    assert np.isfinite(values["decoded"]) and values["decoded"] > 0 and values["decoded"] != values["paint"]
    with pytest.raises(ValueError, match="needs the true labels"):
        t.loss(q, truth, valid, 0)  # t: the decoded one
    with pytest.raises(InputError, match="loss=dice: expected one of paint, decoded"):
        TuneConfig(loss="dice")


def test_artifact_round_trips(tmp_path, model, tuned):
    p = tuned["prompt"]
    path = p.save(tmp_path / "scene.safetensors")
    q = TunedPrompt.load(path, model)
    assert torch.equal(q.image, p.image) and torch.equal(q.mask, p.mask)
    assert np.array_equal(q.palette, p.palette) and q.palette.dtype == np.uint8
    for key in ("class_ids", "class_names", "seg_type", "model_name", "fingerprint"):
        assert getattr(q, key) == getattr(p, key)
    assert q.summary == json.loads(json.dumps(p.summary))


def test_mismatched_model_is_refused(tmp_path, model, tuned):
    path = tuned["prompt"].save(tmp_path / "scene.safetensors")
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.decoder_pred[3].bias.add_(1e-3)
    msg = r"scene\.safetensors: tuned for model 'seggpt_tiny' \(weights \w+\), but the model is 'seggpt_tiny'"
    with pytest.raises(InputError, match=msg):
        TunedPrompt.load(path, other)
    renamed = copy.deepcopy(model)
    renamed.config_name = "painter_small"
    with pytest.raises(InputError, match="but the model is 'painter_small'"):
        TunedPrompt.load(path, renamed)
    with pytest.raises(InputError, match="takes 224x224 prompts"):
        TunedPrompt.load(path, build_model("seggpt_tiny", pretrained=False))
    seg = FewShotSegmenter(other, strategy="tuned")
    with pytest.raises(InputError, match="tuned for model"):
        seg.set_tuned_prompt(TunedPrompt.read(path))
    save_checkpoint(model.state_dict(), tmp_path / "weights.safetensors")
    with pytest.raises(InputError, match="weights.safetensors: not a tuned prompt"):
        TunedPrompt.read(tmp_path / "weights.safetensors")


def test_tuned_strategy_is_an_example_pair(model, tuned, views):
    """Alone it equals the plain strategy with the learned pair; with real pairs, the feature ensemble."""
    p = tuned["prompt"]
    q = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    plain, fe = build_strategy("plain", model), build_strategy("feature_ensemble", model)
    strat = build_strategy("tuned", model, prompt=p)
    plain.set_prompts(p.image[None], p.mask[None], p.seg_type)
    extra = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(strat.predict_torch(q), plain.predict_torch(q))
        strat.set_prompts(extra, extra.flip(1), tuned=p)
        fe.set_prompts(torch.cat([p.image[None], extra]), torch.cat([p.mask[None], extra.flip(1)]), 0)
        assert torch.equal(strat.predict_torch(q), fe.predict_torch(q))
    seg = FewShotSegmenter(model, strategy="tuned")
    seg.set_tuned_prompt(p, [views[0][0]], [views[0][1]])
    out = seg.predict(views[1][0])
    assert out.labels.shape == (48, 64) and set(np.unique(out.labels)) <= {0, 5, 6}
    assert seg.colors == {5: (255, 255, 255), 6: (255, 255, 127)}
    assert set(score_pairs(seg, views[:2])["per_class"]) == {5, 6}
    with pytest.raises(InputError, match=r"mask ids \[9\] are not classes of the tuned prompt"):
        seg.set_tuned_prompt(p, [views[0][0]], [np.where(views[0][1] == 5, 9, 0)], names=["m.png"])


def test_fixed_scene_views_are_deterministic():
    a, b = generate_scene_views(3, 3, (40, 48), 3), generate_scene_views(3, 3, (40, 48), 3)
    for (ia, la), (ib, lb) in zip(a, b):
        assert np.array_equal(ia, ib) and np.array_equal(la, lb)
        assert ia.shape == (40, 48, 3) and set(np.unique(la)) == {0, 1, 2, 3}
    assert not np.array_equal(a[0][0], a[1][0])


# ------------------------------------------------------------------------------------------------ tools
def _scene_files(root, views):
    for sub in ("images", "masks", "targets"):
        (root / sub).mkdir()
    for i, (img, lab) in enumerate(views):
        Image.fromarray(img).save(root / "images" / f"v{i}.jpg")
        Image.fromarray(lab.astype(np.uint8)).save(root / "masks" / f"v{i}.png")
    Image.fromarray(views[-1][0]).save(root / "targets" / "t.png")


def _tool(job, *args):
    return run_cli(job, "model=seggpt_tiny", "device=cpu", *[f"model.{o}" for o in SMALL], *args)


def test_cli_tune_then_segment_with_the_tuned_prompt(tmp_path, model, views):
    _scene_files(tmp_path, views)
    ckpt = save_checkpoint(model.state_dict(), tmp_path / "tiny.safetensors")
    out = tmp_path / "out" / "scene.safetensors"
    r = _tool("tune", f"images={tmp_path}/images", f"masks={tmp_path}/masks", f"output={out}",
              f"checkpoint={ckpt}", "steps=2", "batch_size=2", "val_every=1", "init=pair", "progress=false")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "scene.safetensors", "scene_curve.png", "scene_image.png", "scene_mask.png"]
    assert Image.open(out.parent / "scene_image.png").size == (64, 64)
    assert TunedPrompt.load(out, model).class_ids == [5, 6]

    seg_out = tmp_path / "seg"
    r = _tool("segment", "strategy=tuned", f"prompt.tuned={out}", f"targets=[{tmp_path}/targets]",
              f"output_dir={seg_out}", f"checkpoint={ckpt}")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in seg_out.iterdir()) == [
        "summary.json", "t_mask.png", "t_overlay.png", "t_paint.png"]
    s = json.loads((seg_out / "summary.json").read_text())
    assert s["prompt_ids"] == {"5": [255, 255, 255], "6": [255, 255, 127]}
    assert s["prompts"] == [{"tuned": str(out)}] and s["num_ok"] == 1
    assert set(np.unique(np.asarray(Image.open(seg_out / "t_mask.png")))) <= {0, 5, 6}


def _compose(name, overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(name, overrides=["model=seggpt_tiny", "device=cpu", *[f"model.{o}" for o in SMALL],
                                        *overrides])


def _error_line(capsys, job, cfg) -> str:
    with pytest.raises(SystemExit) as e:
        run_job(job, cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.filterwarnings("ignore:.*no mask found")
def test_bad_inputs_give_one_line_errors(tmp_path, capsys, model, views, tuned):
    from painter_seg.jobs.segment import run as segment
    from painter_seg.jobs.tune import run as tune

    _scene_files(tmp_path, views[:3])
    (tmp_path / "empty").mkdir()
    multi = tmp_path / "multi"
    multi.mkdir()
    for name in ("cat_00", "dog_00"):
        Image.fromarray(views[0][0]).save(multi / f"{name}.jpg")
        Image.fromarray((views[0][1] > 0).astype(np.uint8)).save(multi / f"{name}.png")
    out = f"output={tmp_path}/o/scene.safetensors"
    cases = [
        ([f"images={tmp_path}/nope", out], "nope: data folder not found"),
        ([f"images={tmp_path}/images", f"masks={tmp_path}/empty", out],
         "no image has a mask of the same name"),
        ([f"images={tmp_path}/images", f"masks={tmp_path}/masks", f"output={tmp_path}/scene.pt"],
         "scene.pt: the tuned prompt is a .safetensors file"),
        ([f"images={tmp_path}/images", f"masks={tmp_path}/masks", out, "init=best"],
         "init=best: expected one of"),
        ([f"images={multi}", out], "holds 2 classes (cat, dog): pick the ones to tune for with classes="),
        ([f"images={multi}", out, "classes=[cow]"], "classes: ['cow'] not found"),
    ]
    for args, msg in cases:
        assert msg in _error_line(capsys, tune, _compose("tune_prompt", args))

    wrong = tuned["prompt"].save(tmp_path / "other.safetensors")  # tuned for the fixture's weights, not these
    seg_args = [f"targets=[{tmp_path}/targets]", f"output_dir={tmp_path}/seg"]
    cases = [
        (["strategy=tuned"], "strategy=tuned needs prompt.tuned=<file.safetensors>"),
        ([f"prompt.tuned={wrong}"], "a tuned prompt needs strategy=tuned"),
        (["strategy=tuned", f"prompt.tuned={tmp_path}/missing.safetensors"], "tuned prompt file not found"),
        (["strategy=tuned", f"prompt.tuned={wrong}"], "other.safetensors: tuned for model 'seggpt_tiny'"),
    ]
    for args, msg in cases:
        assert msg in _error_line(capsys, segment, _compose("segment", [*seg_args, *args]))


def test_report_compares_tuned_prompt_with_real_pairs(tmp_path, capsys):
    from painter_seg.jobs.tune_report import make_report as run_report

    out = tmp_path / "rep" / "scene.safetensors"
    cfg = _compose("tune_prompt", ["report.scene=synthetic", "report.views=4", "report.size=[48,48]",
                                   "report.holdout=0.4", "steps=2", "batch_size=2", "val_fraction=0",
                                   "progress=false", f"output={out}"])
    report = run_report(cfg)
    assert set(report["rows"]) == {"best_single_pair", "feature_ensemble@2", "tuned",
                                   "tuned+feature_ensemble@2"}
    assert len(report["train"]) == 2 and len(report["held_out"]) == 2
    assert all(0 <= row["mIoU"] <= 1 for row in report["rows"].values())
    written = json.loads((tmp_path / "rep" / "scene_report.json").read_text())
    assert written["rows"].keys() == report["rows"].keys()
    assert "held-out mIoU" in capsys.readouterr().out
    assert report["tuning"]["init"] == "mean"
    assert report["tuning"]["config"]["steps"] == 2 and report["tuning"]["config"]["val_fraction"] == 0

    # init=best: tuning starts from the best single pair the report chose (and says which)
    cfg.init, cfg.steps, cfg.val_fraction = "best", 1, 0.5
    cfg.output = str(tmp_path / "rep" / "best.safetensors")
    report = run_report(cfg)
    chosen = report["rows"]["best_single_pair"]["chosen"]
    assert report["tuning"]["init"] == f"best single pair ({chosen})"


def test_tuning_keys_have_one_home():
    """conf/tune_prompt.yaml lists exactly TuneConfig's fields at its top level, with its defaults."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "conf" / "tune_prompt.yaml")
    keys = TuneConfig.field_names()
    assert [k for k in keys if k not in cfg] == []
    yaml_values = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys))
    assert TuneConfig.from_dict(yaml_values) == TuneConfig()


def test_tuning_and_strategies_import_nothing_above_them():
    import ast

    pkg = REPO / "painter_seg"
    above = {"tuning": ("apps", "jobs"), "strategies": ("apps", "jobs", "tuning")}
    for sub, banned in above.items():
        for path in (pkg / sub).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level >= 2:
                    top = (node.module or "").split(".")[0]
                    assert top not in banned, f"{path.name} imports painter_seg.{node.module}"


def test_validation_decodes_as_the_prompt_will_be_used(model, views, tuned):
    """The step kept is chosen under the decode the prompt is used with (``refine``, default ``auto``: the
    guided refinement for a coarse grid): the validation mIoU is that of the refined labels."""
    from painter_seg.codec import paint_to_labels, resolve_refine
    from painter_seg.tuning.scene import score_labels
    from painter_seg.tuning.tuner import _Validator

    snap = tuned["prompt"]
    held = views[2:]
    strat = build_strategy("tuned", model)
    strat.set_prompts(tuned=snap)
    paints = strat.paint([img for img, _ in held], "fp32")
    grid = (model.half_size[0] // model.patch_size, model.half_size[1] // model.patch_size)
    seen = {}
    for refine in ("none", "guided"):
        preds = [paint_to_labels(p, snap.palette, snap.class_ids, img.shape[:2], image=img,
                                 refine=resolve_refine(refine, grid), grid=grid)[0]
                 for p, (img, _) in zip(paints, held)]
        want = score_labels(preds, [lab for _, lab in held], snap.class_ids, 255)["mIoU"]
        got = _Validator(model, copy.deepcopy(snap), held, "fp32", 255, refine)(snap.image[None], snap.mask[None])
        assert got == pytest.approx(want, abs=1e-9), refine
        seen[refine] = got
    assert seen["none"] != seen["guided"]  # the two decodes score differently here
    assert TuneConfig().refine == "auto"
    with pytest.raises(InputError, match="^refine=sharp: expected one of auto, guided, none"):
        TuneConfig(refine="sharp")
