"""tools/segment.py on the unusual inputs users bring: image and mask formats, huge images, odd colours."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from painter_seg.data.synthetic import generate_episode
from tests.conftest import SHARED_DATA, run_cli


def _run(*args):
    return run_cli("segment", "model=seggpt_tiny", "device=cpu", *args)


def _episode(seed=0, size=(96, 128)):
    ep = generate_episode(seed, kind="multiclass", size=size)
    return ep.prompts[0], ep.query


def test_image_formats_are_all_segmented(tmp_path):
    """RGBA, 16-bit grey, 8-bit grey and palette targets; a grey prompt image with a 16-bit binary mask."""
    (p_img, p_lab), (q, _) = _episode()
    Image.fromarray(p_img).convert("L").save(tmp_path / "p_grey.png")
    Image.fromarray(((p_lab > 0) * 65535).astype(np.uint16)).save(tmp_path / "p_mask16.png")
    assert Image.open(tmp_path / "p_mask16.png").mode.startswith("I")
    t = tmp_path / "targets"
    t.mkdir()
    rgba = np.dstack([q, np.full(q.shape[:2], 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(t / "rgba.png")
    Image.fromarray(q[..., 1].astype(np.uint16) * 257).save(t / "grey16.png")
    Image.fromarray(q).convert("L").save(t / "grey8.png")
    Image.fromarray(q).convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(t / "pal.png")
    assert [Image.open(t / f).mode for f in ("rgba.png", "grey8.png", "pal.png")] == ["RGBA", "L", "P"]
    out = tmp_path / "out"
    r = _run(f"prompt.images=[{tmp_path}/p_grey.png]", f"prompt.masks=[{tmp_path}/p_mask16.png]",
             f"targets=[{t}]", f"output_dir={out}")
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["num_ok"] == 4 and s["failed"] == []
    assert list(s["prompt_ids"]) == ["1"]  # the 16-bit 0/65535 mask is one object
    for stem in ("rgba", "grey16", "grey8", "pal"):
        m = Image.open(out / f"{stem}_mask.png")
        assert m.mode == "P" and m.size == (128, 96)


def test_antialiased_colour_mask_keeps_its_main_colours(tmp_path):
    """A colour mask whose edges hold blended colours outside its palette: the blends snap to the main
    colours, so the prompt has exactly the drawn objects as ids."""
    (p_img, _), (q, _) = _episode()
    mask = np.zeros((96, 128, 3), np.uint8)
    cv2.circle(mask, (35, 45), 22, (255, 0, 0), -1)
    cv2.rectangle(mask, (70, 20), (115, 80), (0, 200, 255), -1)
    mask = cv2.GaussianBlur(mask, (5, 5), 1.5)  # edge colours that are in neither object's colour
    assert len(np.unique(mask.reshape(-1, 3), axis=0)) > 20
    Image.fromarray(mask).save(tmp_path / "soft.png")
    Image.fromarray(p_img).save(tmp_path / "p.png")
    Image.fromarray(q).save(tmp_path / "q.jpg")
    out = tmp_path / "out"
    r = _run(f"prompt.images=[{tmp_path}/p.png]", f"prompt.masks=[{tmp_path}/soft.png]",
             f"targets=[{tmp_path}/q.jpg]", f"output_dir={out}")
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert sorted(s["prompt_ids"]) == ["1", "2"]
    assert set(s["targets"]["q"]["classes"]) <= {"1", "2"}


def test_huge_target_is_downscaled_with_a_warning(tmp_path):
    (p_img, p_lab), (q, _) = _episode()
    Image.fromarray(p_img).save(tmp_path / "p.png")
    Image.fromarray(p_lab.astype(np.uint8)).save(tmp_path / "p_mask.png")
    big = cv2.resize(q, (640, 480), interpolation=cv2.INTER_LINEAR)
    Image.fromarray(big).save(tmp_path / "big.png")
    out = tmp_path / "out"
    r = _run(f"prompt.images=[{tmp_path}/p.png]", f"prompt.masks=[{tmp_path}/p_mask.png]",
             f"targets=[{tmp_path}/big.png]", f"output_dir={out}", "max_side=200")
    assert r.returncode == 0, r.stderr
    assert "big.png: 640x480 image downscaled to 200x150 (max_side=200)" in r.stderr
    assert Image.open(out / "big_mask.png").size == (640, 480)  # outputs at the file's own size


def test_bad_prompt_masks_give_one_line_errors(tmp_path):
    (p_img, p_lab), _ = _episode()
    Image.fromarray(p_img).save(tmp_path / "p.png")
    ids300 = p_lab.astype(np.uint16)  # several ids (a two-level map would read as binary) ...
    ids300[p_lab == p_lab.max()] = 300  # ... one of them above 255
    assert len(np.unique(ids300)) >= 3
    Image.fromarray(ids300).save(tmp_path / "ids300.png")
    (tmp_path / "empty.png").write_bytes(b"")
    Image.fromarray(p_lab.astype(np.uint8)).save(tmp_path / "t.png")
    cases = [
        ("ids300.png", "ids300.png: mask ids above 255 (max 300); at most 255 objects supported"),
        ("empty.png", "empty.png: empty file (0 bytes)"),
    ]
    for name, msg in cases:
        r = _run(f"prompt.images=[{tmp_path}/p.png]", f"prompt.masks=[{tmp_path}/{name}]",
                 f"targets=[{tmp_path}/t.png]", f"output_dir={tmp_path}/o")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0] == f"error: {tmp_path}/{msg}", r.stderr
    assert not (tmp_path / "o" / "summary.json").exists()


def _pair_files(tmp_path):
    (p_img, p_lab), (q, _) = _episode()
    Image.fromarray(p_img).save(tmp_path / "p.png")
    Image.fromarray((p_lab > 0).astype(np.uint8) * 255).save(tmp_path / "p_gt.png")
    Image.fromarray(q).save(tmp_path / "a.png")
    return tmp_path / "p.png", tmp_path / "p_gt.png", tmp_path / "a.png"


def test_a_file_the_job_did_not_write_is_never_overwritten(tmp_path):
    """Target a.png beside the user's own a_mask.png, output into that folder: a_mask.png is kept byte for
    byte, the target is a listed failure; a second run into a folder of our own outputs replaces them."""
    p, m, a = _pair_files(tmp_path)
    (tmp_path / "a_mask.png").write_bytes(b"the user's own file")
    r = _run(f"prompt.images=[{p}]", f"prompt.masks=[{m}]", f"targets=[{a}]", f"output_dir={tmp_path}")
    assert r.returncode == 1
    assert (tmp_path / "a_mask.png").read_bytes() == b"the user's own file"
    failed = json.loads((tmp_path / "summary.json").read_text())["failed"]
    assert failed[0]["error"] == (f"{tmp_path / 'a_mask.png'}: exists and was not written by painter-seg; "
                                  f"not overwritten (choose another output_dir, or overwrite=true)")
    out = tmp_path / "out"
    for _ in range(2):  # the second run replaces what the first wrote
        r = _run(f"prompt.images=[{p}]", f"prompt.masks=[{m}]", f"targets=[{a}]", f"output_dir={out}")
        assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["outputs"] == [
        "a_mask.png", "a_overlay.png", "a_paint.png"]


def test_targets_that_match_nothing_are_an_error(tmp_path):
    p, m, _ = _pair_files(tmp_path)
    (tmp_path / "empty").mkdir()
    for spec, why in [(tmp_path / "empty", f"{tmp_path / 'empty'}: folder holds no images"),
                      (tmp_path / "nope_*.jpg", f"{tmp_path / 'nope_*.jpg'}: pattern matches no files")]:
        r = _run(f"prompt.images=[{p}]", f"prompt.masks=[{m}]", f"targets=[{spec}]",
                 f"output_dir={tmp_path / 'out'}")
        assert r.returncode == 2
        assert r.stderr.strip().splitlines() == [f"error: no target images to segment: {why}"]
    r = _run(f"prompt.images=[{p}]", f"prompt.masks=[{m}]", f"targets=[{tmp_path}]", f"output_dir={tmp_path}")
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {tmp_path}: is both a target folder and output_dir; choose another output_dir"


def test_a_photograph_given_as_mask_is_an_error(tmp_path):
    """A real photo (many colours, no flat regions) as the prompt mask: one line naming the file."""
    photo = SHARED_DATA / "fss1000" / "apple" / "1.jpg"
    if not photo.exists():
        pytest.skip("needs ../shared/data")
    p, _, a = _pair_files(tmp_path)
    rgb = cv2.resize(cv2.imread(str(photo)), (128, 96))
    cv2.imwrite(str(tmp_path / "photo_mask.png"), rgb)
    r = _run(f"prompt.images=[{p}]", f"prompt.masks=[{tmp_path / 'photo_mask.png'}]", f"targets=[{a}]",
             f"output_dir={tmp_path / 'out'}")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'photo_mask.png'}: looks like a "
                                                   f"photograph, not a mask (")


def test_evaluate_on_a_folder_without_pairs_is_one_line(tmp_path):
    """An FSS-style class folder with a single pair cannot make a 1-shot episode."""
    (tmp_path / "cls").mkdir()
    (p_img, p_lab), _ = _episode()
    Image.fromarray(p_img).save(tmp_path / "cls" / "1.jpg")
    Image.fromarray((p_lab > 0).astype(np.uint8) * 255).save(tmp_path / "cls" / "1.png")
    r = run_cli("evaluate", "task=few_shot", f"root={tmp_path}", "model=seggpt_tiny", "device=cpu",
                f"output_dir={tmp_path / 'out'}")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path}: no episode to score (a class needs at least 2 image/mask pairs for 1 shot(s))")
    assert not (tmp_path / "out").exists()


BAD_ARGUMENTS = [
    ("model=nosuch", ("model=nosuch: unknown model; expected one of default, painter_small, painter_small_stem, "
                     "seggpt_tiny, seggpt_vit_large")),
    ("strategy=nosuch", ("strategy=nosuch: unknown strategy; expected one of feature_ensemble, plain, "
                        "spatial_ensemble, tuned")),
    ("device=tpu", "device=tpu: expected auto, cpu, cuda or cuda:N"),
    ("max_side=abc", "max_side='abc': expected an integer"),
    ("max_side=-5", "max_side=-5: expected a side length of at least 16 pixels"),
    ("model.net.depth=abc", "model.net.depth='abc': expected an integer"),
    ("resize_mode=foo", "resize_mode=foo: expected bilinear or nearest"),
    ("bg_threshold=2", "bg_threshold=2: expected a score in [0, 1)"),
    ("compile=maybe", "compile='maybe': expected true or false"),
    ("seg_type=foo", "seg_type='foo': expected semantic or instance"),
    ("stepz=3", "stepz=3: unknown key 'stepz' in segment.yaml (painter-seg segment --help lists the keys)"),
    ("prompt.imagez=[a.png]", ("prompt.imagez=[a.png]: unknown key 'prompt.imagez' in segment.yaml "
                               "(painter-seg segment --help lists the keys)")),
    ("+max_side=64", "+max_side=64: 'max_side' is already in segment.yaml; set it without '+' (max_side=...)"),
    ("refine=sharp", ("refine=sharp: expected one of auto, guided, none (or settings such as "
                      "{radius: 1.0, eps: 0.003})")),
    ("assign=always", "assign=always: expected auto, none or AssignSettings"),
    ("max_side=[1", ("bad override: no viable alternative at input '[1' See "
                     "https://hydra.cc/docs/1.2/advanced/override_grammar/basic for details")),
]


@pytest.mark.parametrize(("override", "message"), BAD_ARGUMENTS, ids=[a for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_are_one_line_with_exit_2(tmp_path, override, message):
    """Every class of bad argument ends as one ``error:`` line naming it, exit 2, nothing written."""
    r = run_cli("segment", "device=cpu", override, f"output_dir={tmp_path / 'out'}")
    assert r.returncode == 2, r.stderr
    assert [x for x in r.stderr.splitlines() if x.strip()] == [f"error: {message}"]
    assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "out" / "summary.json").exists()


def test_plain_strategy_with_two_prompts_is_one_line(tmp_path):
    p, m, a = _pair_files(tmp_path)
    r = _run(f"prompt.images=[{p},{p}]", f"prompt.masks=[{m},{m}]", f"targets=[{a}]", f"output_dir={tmp_path / 'o'}")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == ("error: the plain strategy takes exactly one prompt, got 2; use "
                                                 "spatial_ensemble or feature_ensemble for several")


def test_train_resume_takes_a_path(tmp_path):
    """``resume`` is false, true or a path: a path passes the type check and a missing one is one line."""
    r = run_cli("train", "+experiment=smoke", f"resume={tmp_path / 'nope' / 'last.pt'}",
                f"output_dir={tmp_path / 'out'}")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: resume={tmp_path / 'nope' / 'last.pt'}: checkpoint not found ({tmp_path / 'nope' / 'last.pt'})")
