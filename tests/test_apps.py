"""Few-shot predictor, segment CLI (files written, bad inputs), video propagator (ids, resume)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from painter_seg.apps.few_shot import FewShotSegmenter
from painter_seg.apps.video import VideoPropagator
from painter_seg.build import build_model
from painter_seg.codec import build_palette, denormalize_tensor, distinct_palette
from painter_seg.data.synthetic import generate_clip, generate_episode
from painter_seg.errors import InputError
from tests.conftest import REPO, run_cli


def _episode_files(tmp_path, seed=0):
    ep = generate_episode(seed, kind="multiclass", size=(96, 128))
    (img, lab), (q, _) = ep.prompts[0], ep.query
    Image.fromarray(img).save(tmp_path / "p.png")
    Image.fromarray(lab.astype(np.uint8)).save(tmp_path / "p_mask.png")
    tdir = tmp_path / "targets"
    tdir.mkdir()
    Image.fromarray(q).save(tdir / "q1.jpg")
    Image.fromarray(np.ascontiguousarray(q[:, ::-1])).save(tdir / "q2.png")
    return ep


def test_predictor_outputs_target_size_and_prompt_ids(tiny_model):
    ep = generate_episode(1, kind="multiclass", size=(96, 128))
    (img, lab), (q, _) = ep.prompts[0], ep.query
    lab = np.where(lab > 0, lab + 6, 0)  # ids 7.. as a user might have them
    for strategy in ("plain", "spatial_ensemble", "feature_ensemble"):
        seg = FewShotSegmenter(tiny_model, strategy=strategy)
        k = 1 if strategy == "plain" else 2
        seg.set_prompts([img] * k, [lab] * k)
        out = seg.predict(q[:80, :100])
        assert out.labels.shape == (80, 100) and out.paint.shape == (80, 100, 3)
        assert set(np.unique(out.labels)) <= {0, *np.unique(lab).tolist()}
        assert out.scores.min() >= 0 and out.scores.max() <= 1
    with pytest.raises(RuntimeError, match="set_prompts"):
        FewShotSegmenter(tiny_model).predict(q)


def test_prompt_masks_are_painted_in_the_model_palette(tiny_model):
    ep = generate_episode(1, kind="multi_instance", size=(64, 64))
    (img, lab) = ep.prompts[0]
    lab = np.where(lab > 0, lab + 2, 0)
    ids = np.unique(lab[lab > 0])
    assert len(ids) >= 2
    for palette, colours in (("auto", build_palette(len(ids))), ("seggpt", build_palette(len(ids))),
                             ("distinct", distinct_palette(len(ids)))):
        seg = FewShotSegmenter(tiny_model, palette=palette)  # tiny_model's own palette: the reference's
        seg.set_prompts([img], [lab])
        assert seg.colors == {int(i): tuple(int(c) for c in colours[k + 1]) for k, i in enumerate(ids)}
        painted = denormalize_tensor(seg.strategy.prompts.masks)[0].permute(1, 2, 0).numpy()
        shown = np.unique(np.rint(painted * 255).reshape(-1, 3), axis=0)
        assert {tuple(c) for c in shown.astype(int).tolist()} == {tuple(c) for c in colours.tolist()}
    shipped = build_model("default")
    assert shipped.palette == "distinct" and shipped.with_canvas((256, 128)).palette == "distinct"
    seg = FewShotSegmenter(shipped)
    seg.set_prompts([img], [lab])
    assert list(seg.colors.values())[:2] == [(255, 255, 0), (0, 255, 255)]
    with pytest.raises(InputError, match=r"^palette=vivid: expected auto or one of seggpt, distinct$"):
        FewShotSegmenter(tiny_model, palette="vivid")
    with pytest.raises(InputError, match=r"^model default: palette='vivid', expected one of seggpt, distinct$"):
        build_model("default", overrides=["palette=vivid"])


def test_box_prompt_becomes_mask(tiny_model):
    ep = generate_episode(2, kind="instance", size=(96, 96))
    img = ep.prompts[0][0]
    seg = FewShotSegmenter(tiny_model)
    seg.set_prompts([img], boxes=[(10, 10, 60, 70)])
    assert list(seg.colors) == [1]


def _run(*args, cwd=REPO):
    return run_cli("segment", "model=seggpt_tiny", "device=cpu", *args, cwd=cwd)


def test_cli_writes_exactly_the_promised_files(tmp_path):
    _episode_files(tmp_path)
    out = tmp_path / "out"
    r = _run(f"prompt.images=[{tmp_path}/p.png]", f"prompt.masks=[{tmp_path}/p_mask.png]",
             f"targets=[{tmp_path}/targets]", f"output_dir={out}")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}_{k}.png" for s in ("q1", "q2") for k in ("mask", "overlay", "paint")] + ["summary.json"])
    m = Image.open(out / "q1_mask.png")
    assert m.mode == "P" and m.size == (128, 96)
    s = json.loads((out / "summary.json").read_text())
    assert s["num_ok"] == 2 and s["failed"] == []


@pytest.mark.parametrize("case, expect", [
    ("missing_target", "nope.jpg: file not found"),
    ("empty_target", "empty.png: empty file (0 bytes)"),
    ("garbage_target", "garbage.png: not a readable image"),
])
def test_cli_bad_targets_are_listed_and_batch_goes_on(tmp_path, case, expect):
    _episode_files(tmp_path)
    bad = {"missing_target": tmp_path / "nope.jpg", "empty_target": tmp_path / "empty.png",
           "garbage_target": tmp_path / "garbage.png"}[case]
    if case == "empty_target":
        bad.write_bytes(b"")
    if case == "garbage_target":
        bad.write_bytes(b"this is not a png")
    out = tmp_path / "out"
    r = _run(f"prompt.images=[{tmp_path}/p.png]", f"prompt.masks=[{tmp_path}/p_mask.png]",
             f"targets=[{tmp_path}/targets,{bad}]", f"output_dir={out}")
    assert r.returncode == 1
    s = json.loads((out / "summary.json").read_text())
    assert s["num_ok"] == 2 and len(s["failed"]) == 1 and expect in s["failed"][0]["error"]
    assert "Traceback" not in r.stderr


def test_cli_bad_prompts_give_one_line_errors(tmp_path):
    _episode_files(tmp_path)
    Image.fromarray(np.zeros((96, 128), np.uint8)).save(tmp_path / "empty_mask.png")
    Image.fromarray(np.ones((50, 50), np.uint8)).save(tmp_path / "small_mask.png")
    (tmp_path / "afile").write_text("x")
    cases = [
        ([f"prompt.masks=[{tmp_path}/empty_mask.png]"], "empty_mask.png: prompt mask is empty"),
        ([f"prompt.masks=[{tmp_path}/small_mask.png]"], "small_mask.png: mask is 50x50 but its image is 128x96"),
        ([f"prompt.masks=[{tmp_path}/p_mask.png]", f"output_dir={tmp_path}/afile"], "afile"),
    ]
    for args, msg in cases:
        r = _run(f"prompt.images=[{tmp_path}/p.png]", f"targets=[{tmp_path}/targets]",
                 *([f"output_dir={tmp_path}/o"] if not any("output_dir" in a for a in args) else []), *args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], r.stderr


def test_video_ids_preserved_and_memory_bounded(tiny_model, tmp_path):
    frames, labels = generate_clip(3, 8, size=(96, 96), num_objects=3, leave_and_return=False)
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(d / f"{i:05d}.png")
    prop = VideoPropagator(tiny_model, context_frames=2)
    state = prop.init(d)
    prop.add_mask(state, 0, labels[0])
    out = list(prop.propagate(state))
    assert [i for i, _ in out] == list(range(8))
    assert np.array_equal(out[0][1], labels[0])
    ids = set(np.unique(labels[0]).tolist())
    assert all(set(np.unique(lab).tolist()) <= ids for _, lab in out)
    assert len(state.recent) == 2  # FIFO bounded by K


def test_evaluate_tool_few_shot_report_with_baselines(tmp_path):
    root = tmp_path / "fss"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            ep = generate_episode(10 * i + len(c), kind="semantic", size=(64, 64))
            img, lab = ep.query
            Image.fromarray(img).save(root / c / f"{i}.jpg")
            Image.fromarray((lab > 0).astype(np.uint8) * 255).save(root / c / f"{i}.png")
    r = run_cli("evaluate", "task=few_shot", f"root={root}", "model=seggpt_tiny", "device=cpu",
                "episodes_per_class=1", f"output_dir={tmp_path}/ev")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "ev" / "few_shot_report.json").read_text())
    assert set(rep["rows"]) == {"plain@1", "baseline_copy_prompt_mask", "baseline_all_foreground"}
    assert rep["rows"]["plain@1"]["pairs"] == 2
    assert all(0 <= row["mIoU"] <= 1 for row in rep["rows"].values())
    # all-foreground baseline by hand: IoU = foreground share of each query (summed per class)
    assert rep["rows"]["baseline_all_foreground"]["FB-IoU"] < 0.5


def test_evaluate_tool_synthetic_rows_share_heldout_episodes(tmp_path):
    from painter_seg.evaluation.few_shot import HELDOUT_SEED_BASE, synthetic_episodes

    eps = list(synthetic_episodes(3, shots=2, seed=0, size=(64, 64)))
    assert [e.name for e in eps] == ["semantic", "instance", "multiclass"]
    again = generate_episode(HELDOUT_SEED_BASE + 1, kind="instance", num_shots=2, size=(64, 64))
    assert np.array_equal(eps[1].query[0], again.query[0]) and eps[1].seg_type == "instance"
    r = run_cli("evaluate", "task=few_shot", "data=synthetic", "data.episodes=2", "data.size=[64,64]",
                "rows=[plain@1,feature_ensemble@2]", "model=seggpt_tiny", "device=cpu", f"output_dir={tmp_path}/ev")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "ev" / "few_shot_report.json").read_text())
    assert list(rep["rows"]) == ["plain@1", "feature_ensemble@2", "baseline_copy_prompt_mask",
                                 "baseline_all_foreground"]
    # every row scored the same (episode, id) pairs: one per foreground id of each query
    n_ids = sum(len(np.unique(e.query[1])) - 1 for e in eps[:2])
    assert {row["pairs"] for row in rep["rows"].values()} == {n_ids}
    bad = run_cli("evaluate", "task=few_shot", "data=synthetic", "rows=[plain@3]", "model=seggpt_tiny", "device=cpu",
                  f"output_dir={tmp_path}/ev2")
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: rows: plain@3: the plain strategy takes 1 prompt; use an ensemble")


def test_predictor_decodes_the_paint_at_the_asked_size(tiny_model):
    """output_size: the painted half is resized to that size and decoded there (no decode at the
    query's size followed by a label upsampling); the default is the query's own size."""
    from painter_seg.codec import paint_to_labels
    from painter_seg.errors import InputError

    ep = generate_episode(1, kind="multiclass", size=(96, 128))
    (img, lab), (q, _) = ep.prompts[0], ep.query
    seg = FewShotSegmenter(tiny_model)
    seg.set_prompts([img], [lab])
    small = np.ascontiguousarray(q[::2, ::2])  # a target downscaled on load
    big = seg.predict(small, output_size=(96, 128))
    assert big.labels.shape == big.scores.shape == (96, 128) and big.paint.shape == (96, 128, 3)
    ref = paint_to_labels(seg.strategy.paint([small])[0], seg.palette, seg.ids, (96, 128), image=small,
                          refine=seg.refine, grid=seg.grid)[0]
    assert np.array_equal(big.labels, ref)
    own = seg.predict(small)
    assert own.labels.shape == (48, 64)
    assert np.array_equal(own.labels, seg.predict(small, output_size=(48, 64)).labels)
    batch = seg.predict_batch([small, small], output_sizes=[None, (96, 128)])
    assert np.array_equal(batch[0].labels, own.labels) and np.array_equal(batch[1].labels, ref)
    with pytest.raises(InputError, match="output_size"):
        seg.predict(small, output_size=(0, 5))
