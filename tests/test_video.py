"""Video propagation on a generated clip where one object leaves the frame and comes back: ids and colours
kept, J&F reported, the CLI's palette PNGs, resume, and bad inputs (one line each, the input left untouched).

Every clip is tiny (64x64, <= 8 frames) and the model is seggpt_tiny with random weights, so the predictions
mean nothing; what is checked is what must hold for any model. The J&F of the shipped model is printed by the
``shipped`` test (``python -m pytest -m shipped -s tests/test_video.py``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from painter_seg.apps.video import VideoPropagator, VideoSettings, object_colors
from painter_seg.cli import run_job
from painter_seg.codec.canvas import denormalize, resize_labels
from painter_seg.data.synthetic import generate_clip
from painter_seg.errors import InputError
from painter_seg.evaluation import SUMMARY_KEYS, evaluate_vos
from painter_seg.evaluation.vos import id_consistency
from painter_seg.io.masks import davis_palette, save_label_png
from painter_seg.io.video import Mp4Writer, missing_numbers
from painter_seg.jobs.propagate import propagate_video, run
from tests.conftest import REPO, run_cli

SHIPPED = REPO / "painter_seg" / "weights" / "painter_small.safetensors"
SIZE = (64, 64)
LEAVE_ID = 1


# ------------------------------------------------------------------------------------------ helpers


def _tree(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below ``folder`` (folders listed too, hash '')."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
    return out


def _save_palette_png(path: Path, labels: np.ndarray, palette: np.ndarray) -> None:
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(palette.reshape(-1).tolist())
    im.save(path)


def _write_clip(root: Path, frames: list[np.ndarray], labels: list[np.ndarray] | None = None) -> Path:
    """Frames as ``root/frames/00000.png``...; ground truth as DAVIS palette PNGs in ``root/gt``."""
    fdir = root / "frames"
    fdir.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(fdir / f"{i:05d}.png")
    if labels is not None:
        (root / "gt").mkdir()
        for i, lab in enumerate(labels):
            _save_palette_png(root / "gt" / f"{i:05d}.png", lab, davis_palette())
    return fdir


def _leave_and_return(labels: list[np.ndarray], obj: int) -> tuple[int, int]:
    """(first frame without ``obj``, first frame after that with it again)."""
    present = [bool((lab == obj).any()) for lab in labels]
    gone = present.index(False)
    return gone, present.index(True, gone)


def propagate_clip(model: torch.nn.Module, frames_dir: Path, first_mask: np.ndarray, context_frames: int = 2
                   ) -> list[np.ndarray]:
    """Label maps of every frame of ``frames_dir`` propagated from ``first_mask`` on frame 0."""
    prop = VideoPropagator(model, context_frames=context_frames)
    state = prop.init(frames_dir)
    prop.add_mask(state, 0, first_mask)
    return [labels for _, labels in prop.propagate(state)]


def score_clip(preds: list[np.ndarray], gt_dir: Path, work: Path) -> dict:
    """DAVIS 2017 J&F of ``preds`` (written as palette PNGs named like the ground truth) via evaluate_vos."""
    pred_dir = work / "pred" / gt_dir.name
    pred_dir.mkdir(parents=True)
    for i, lab in enumerate(preds):
        save_label_png(pred_dir / f"{i:05d}.png", lab, davis_palette())
    return evaluate_vos(pred_dir, gt_dir, work / "eval")


def clip_jf(model: torch.nn.Module, work: Path, seed: int = 3, num_frames: int = 6, context_frames: int = 2
            ) -> dict:
    """J&F of ``model`` on a generated clip (3 objects, object 1 leaves and comes back)."""
    frames, labels = generate_clip(seed, num_frames, size=SIZE, num_objects=3, leave_and_return=True)
    fdir = _write_clip(work, frames, labels)
    preds = propagate_clip(model, fdir, labels[0], context_frames)
    return score_clip(preds, work / "gt", work)


# -------------------------------------------------------------------------------- the predictor API


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """6 frames, 3 objects; object 1 is gone on some frames and back later (asserted, not assumed)."""
    frames, labels = generate_clip(3, 6, size=SIZE, num_objects=3, leave_and_return=True, leave_id=LEAVE_ID)
    gone, back = _leave_and_return(labels, LEAVE_ID)
    assert 0 < gone < back < len(labels) - 1
    root = tmp_path_factory.mktemp("clip")
    return {"frames": frames, "labels": labels, "dir": _write_clip(root, frames, labels), "root": root,
            "gone": gone, "back": back}


@pytest.fixture(scope="module")
def propagated(clip, tiny_model):
    """Propagation with K=2, recording the state's object ids and colour table at every frame."""
    prop = VideoPropagator(tiny_model, context_frames=2)
    state = prop.init(clip["dir"])
    prop.add_mask(state, 0, clip["labels"][0])
    out, ids, colors = [], [], []
    for idx, labels in prop.propagate(state):
        out.append((idx, labels))
        ids.append(state.object_ids.tolist())
        colors.append(object_colors(state.object_ids))
    return {"out": out, "ids": ids, "colors": colors, "state": state}


def test_ids_kept_through_leave_and_return(clip, propagated):
    out, first = propagated["out"], clip["labels"][0]
    assert [i for i, _ in out] == list(range(6))
    assert np.array_equal(out[0][1], first)  # the annotated frame is the given mask
    ids = set(np.unique(first).tolist())
    assert ids == {0, 1, 2, 3}
    for idx, lab in out:
        assert lab.shape == SIZE and set(np.unique(lab).tolist()) <= ids, idx
    # the state keeps every object, and its colour, while object 1 is out of the frame and after it is back
    assert all(i == [1, 2, 3] for i in propagated["ids"])
    assert all(np.array_equal(c, propagated["colors"][0]) for c in propagated["colors"])
    assert len(propagated["state"].recent) == 2


def test_reentering_object_is_prompted_with_its_first_colour(clip, tiny_model):
    """Ground truth for every frame but the last (``known=``): when the last frame is predicted, object 1 is
    back in the FIFO frames and painted there with exactly its colour in the annotated frame (ids are not
    re-numbered by order of appearance), as are the other objects."""
    labels = clip["labels"]
    prop = VideoPropagator(tiny_model, context_frames=2)
    state = prop.init(clip["dir"])
    prop.add_mask(state, 0, labels[0])
    prompts = []
    set_prompts = prop.strategy.set_prompts

    def record(images, masks, seg_type=0):
        prompts.append(masks.detach().cpu().numpy())
        set_prompts(images, masks, seg_type)

    prop.strategy.set_prompts = record
    known = {i: labels[i] for i in range(1, len(labels) - 1)}
    out = list(prop.propagate(state, known=known))
    assert len(prompts) == 1  # only the last frame was predicted
    assert all(np.array_equal(lab, labels[i]) for i, lab in out[:-1])
    masks = prompts[0]  # [anchor frame 0, frames 3 and 4 from the FIFO]
    context_frames = [0, len(labels) - 3, len(labels) - 2]
    assert masks.shape[0] == 3 and all(i >= clip["back"] and LEAVE_ID in labels[i] for i in context_frames[1:])
    rgb = np.rint(np.clip(denormalize(masks.transpose(0, 2, 3, 1)), 0, 1) * 255).astype(np.uint8)
    table = object_colors(state.object_ids)
    for k, i in enumerate(context_frames):
        small = resize_labels(labels[i], prop.half_size)
        for obj in (1, 2, 3):
            if (small == obj).any():
                assert (rgb[k][small == obj] == table[obj]).all(), (i, obj)
        assert (rgb[k][small == 0] == 0).all()


def test_jf_is_reported_on_the_generated_clip(clip, propagated, tmp_path):
    summary = score_clip([lab for _, lab in propagated["out"]], clip["root"] / "gt", tmp_path)
    for key in SUMMARY_KEYS:
        assert key in summary
    for key in ("J&F-Mean", "J-Mean", "J-Recall", "F-Mean", "F-Recall"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["num_objects"] == 3
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["J&F-Mean"] == pytest.approx(
        summary["J&F-Mean"])
    print(f"\nseggpt_tiny (random weights) on the leave-and-return clip: J&F {summary['J&F-Mean']:.3f}")


@pytest.mark.shipped
@pytest.mark.skipif(not SHIPPED.is_file(), reason=f"{SHIPPED.name} is not there (no shipped model yet)")
def test_shipped_model_jf_on_generated_clip(tmp_path):
    from painter_seg import build_model

    summary = clip_jf(build_model("default"), tmp_path)
    assert all(0.0 <= summary[k] <= 1.0 for k in ("J&F-Mean", "J-Mean", "F-Mean"))
    print("\nshipped model on the leave-and-return clip: "
          + ", ".join(f"{k} {summary[k]:.3f}" for k in SUMMARY_KEYS))


# ------------------------------------------------------------------------------------------ the CLI

IDS = (3, 7, 12)  # the user's ids: not 1..K, to see that they are kept as given
USER_PALETTE = np.zeros((256, 3), np.uint8)
USER_PALETTE[list(IDS)] = [(250, 20, 120), (30, 200, 90), (240, 230, 10)]  # neither DAVIS nor ours


def _cli(*args):
    """``painter-seg propagate`` (in this process) with seggpt_tiny (random weights) on CPU, K=1 unless given."""
    return run_cli("propagate", "model=seggpt_tiny", "device=cpu", "context_frames=1", *args)


def _cli_process(*args):
    """The same through tools/propagate.py in a real process: what reaches file descriptor 2 is seen."""
    cmd = [sys.executable, str(REPO / "tools/propagate.py"), "model=seggpt_tiny", "device=cpu", "context_frames=1",
           *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One CLI run over a 6-frame clip with a palette first mask of ids 3, 7, 12 in the user's colours."""
    root = tmp_path_factory.mktemp("cli")
    frames, labels = generate_clip(11, 6, size=SIZE, num_objects=3, leave_and_return=True)
    fdir = _write_clip(root, frames)
    lut = np.array([0, *IDS])
    first = lut[labels[0]]
    _save_palette_png(root / "first.png", first, USER_PALETTE)
    before = _tree(fdir)
    out = root / "out"
    r = _cli(f"video={fdir}", f"first_mask={root / 'first.png'}", f"output_dir={out}")
    assert r.returncode == 0, r.stderr
    return {"root": root, "frames": fdir, "first": first, "out": out, "input_tree": before, "stdout": r.stdout}


def test_cli_writes_palette_pngs_named_after_the_frames(cli_run):
    out, first = cli_run["out"], cli_run["first"]
    names = sorted(p.stem for p in cli_run["frames"].iterdir())
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{n}.png" for n in names]
                                                           + ["overlay.mp4", "summary.json"])
    for n in names:
        im = Image.open(out / f"{n}.png")
        assert im.mode == "P" and im.size == SIZE[::-1]
        pal = np.asarray(im.getpalette()[: 256 * 3], np.uint8).reshape(-1, 3)
        assert np.array_equal(pal[list(IDS)], USER_PALETTE[list(IDS)])  # the first mask's colours per id
        assert set(np.unique(np.asarray(im)).tolist()) <= {0, *IDS}
    assert np.array_equal(np.asarray(Image.open(out / "00000.png")), first)
    s = json.loads((out / "summary.json").read_text())
    assert s["objects"] == list(IDS) and s["frames"] == 6 and s["written"] == 6 and s["warnings"] == []
    assert _tree(cli_run["frames"]) == cli_run["input_tree"]


def test_cli_resume_writes_nothing_twice(cli_run):
    out, fdir = cli_run["out"], cli_run["frames"]
    args = (f"video={fdir}", f"first_mask={cli_run['root'] / 'first.png'}", f"output_dir={out}")

    def stamps():
        return {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in sorted(out.glob("*.png"))}

    before = stamps()
    assert len(before) == 6
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    assert stamps() == before  # not one PNG rewritten, frame 0 included
    s = json.loads((out / "summary.json").read_text())
    assert (s["written"], s["resumed"]) == (0, 6)
    assert "(0 written, 6 resumed)" in r.stdout
    r = _cli(*args, "overwrite=true")
    assert r.returncode == 0, r.stderr
    after = stamps()
    assert all(after[n] != before[n] for n in before)  # every PNG written anew
    s = json.loads((out / "summary.json").read_text())
    assert (s["written"], s["resumed"]) == (6, 0)
    assert _tree(fdir) == cli_run["input_tree"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_cli_undecodable_mp4_is_one_error_line(tmp_path):
    """Through the real CLI (stderr exactly as a user sees it, FFmpeg's own complaints silenced)."""
    _, labels = generate_clip(2, 1, size=SIZE, num_objects=3)
    _save_palette_png(tmp_path / "first.png", labels[0], davis_palette())
    (tmp_path / "bad.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    r = _cli_process(f"video={tmp_path / 'bad.mp4'}", f"first_mask={tmp_path / 'first.png'}",
             f"output_dir={tmp_path / 'out'}")
    assert r.returncode == 2 and r.stderr.strip() == (
        f"error: {tmp_path / 'bad.mp4'}: cannot decode video (not a video OpenCV can read)"), r.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------- bad inputs, the CLI's job in-process


def _job(capfd, *overrides) -> tuple[int, str]:
    """The CLI's job on ``conf/propagate.yaml`` + overrides, in this process (tools/propagate.py minus the
    interpreter start): ``(exit code, stderr)``."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("propagate", overrides=["model=seggpt_tiny", "device=cpu", "context_frames=0",
                                              *map(str, overrides)])
    capfd.readouterr()
    with pytest.raises(SystemExit) as e:
        run_job(run, cfg)
    return e.value.code, capfd.readouterr().err


@pytest.fixture
def small_clip(tmp_path):
    frames, labels = generate_clip(4, 4, size=SIZE, num_objects=3)
    fdir = _write_clip(tmp_path, frames)
    _save_palette_png(tmp_path / "first.png", labels[0], davis_palette())
    return fdir, tmp_path / "first.png", labels


def test_bad_inputs_give_one_error_line_and_write_nothing_in_the_input(small_clip, tmp_path, capfd):
    fdir, first, labels = small_clip
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    Image.fromarray(np.ones((32, 48), np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.zeros(SIZE, np.uint8)).save(tmp_path / "zeros.png")
    ids300 = labels[0].astype(np.uint16)
    ids300[labels[0] == 3] = 300  # three levels and background: an index map, not a binary mask
    assert len(np.unique(ids300)) >= 3
    Image.fromarray(ids300).save(tmp_path / "ids300.png")
    assert Image.open(tmp_path / "ids300.png").mode.startswith("I")
    out = tmp_path / "out"
    cases = [
        ([f"video={tmp_path / 'nope'}", f"first_mask={first}"], f"{tmp_path / 'nope'}: video not found"),
        ([f"video={tmp_path / 'empty'}", f"first_mask={first}"],
         f"{tmp_path / 'empty'}: folder holds no frames (.jpg, .jpeg, .png, .bmp, .webp)"),
        ([f"video={fdir}", f"first_mask={tmp_path / 'small.png'}"],
         f"{tmp_path / 'small.png'}: mask is 48x32 but the frames of {fdir} are 64x64"),
        ([f"video={fdir}", f"first_mask={tmp_path / 'zeros.png'}"],
         f"{tmp_path / 'zeros.png'}: first mask has no objects (all background)"),
        ([f"video={fdir}", f"first_mask={tmp_path / 'ids300.png'}"],
         f"{tmp_path / 'ids300.png'}: mask ids above 255 (max 300); at most 255 objects supported"),
        ([f"video={fdir}", f"first_mask={tmp_path / 'nomask.png'}"], f"{tmp_path / 'nomask.png'}: file not found"),
        ([f"video={fdir}", f"first_mask={first}", f"output_dir={fdir / 'out'}"],
         f"{fdir / 'out'}: output dir is inside the input video folder {fdir}"),
        ([f"video={fdir}", f"first_mask={first}", f"output_dir={fdir}"],
         f"{fdir}: output dir is inside the input video folder {fdir}"),
        ([f"video={fdir}", f"first_mask={first}", f"output_dir={tmp_path / 'afile'}"],
         f"{tmp_path / 'afile'}: exists and is a file, not a folder"),
    ]
    before = _tree(fdir)
    for args, msg in cases:
        if not any(a.startswith("output_dir=") for a in args):
            args = [*args, f"output_dir={out}"]
        code, err = _job(capfd, *args)
        assert code == 2 and err == f"error: {msg}\n", (args, err)
        assert _tree(fdir) == before and not out.exists(), args


def test_frame_of_another_size_stops_after_the_frames_before(small_clip, tmp_path, capfd):
    """An error (not a warning: the masks could not be named and sized like the frames), naming that frame and
    both sizes, when the frame is reached; the frames before it are written, so a re-run resumes."""
    fdir, first, _ = small_clip
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(fdir / "00002.png")
    before = _tree(fdir)
    code, err = _job(capfd, f"video={fdir}", f"first_mask={first}", f"output_dir={tmp_path / 'out'}")
    errors = [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert code == 2 and errors == [
        (f"error: {fdir / '00002.png'}: frame is 64x48 but the first frame (00000.png) is 64x64; all frames "
         "of a video must have one size")] and err.splitlines()[-1] == errors[0], err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000.png", "00001.png"]
    assert _tree(fdir) == before


def test_unreadable_frame_in_the_middle_stops_after_the_frames_before(small_clip, tmp_path, capfd):
    fdir, first, _ = small_clip
    (fdir / "00002.png").write_bytes(b"not a png")
    code, err = _job(capfd, f"video={fdir}", f"first_mask={first}", f"output_dir={tmp_path / 'out'}")
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and errors[0].startswith(f"error: {fdir / '00002.png'}: "), err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000.png", "00001.png"]


def test_missing_frames_warn_once_and_outputs_keep_the_frame_names(small_clip, tmp_path, capfd):
    fdir, first, _ = small_clip
    (fdir / "00002.png").unlink()
    assert missing_numbers(["00000", "00001", "00003", "00006"]) == ["00002", "00004", "00005"]
    assert missing_numbers(["a", "b"]) == [] and missing_numbers(["f_01", "g_03"]) == []
    out = tmp_path / "out"
    code, err = _job(capfd, f"video={fdir}", f"first_mask={first}", f"output_dir={out}")
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert code == 0 and warnings == [
        f"warning: {fdir}: 1 frame(s) missing from the numbering (00002); propagating over the gap"], err
    assert not [line for line in err.splitlines() if line.startswith("error")]
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00003.png"]
    assert json.loads((out / "summary.json").read_text())["warnings"] == [warnings[0][len("warning: "):]]


def test_resume_refuses_an_output_dir_of_another_first_mask(small_clip, tmp_path, capfd):
    fdir, first, labels = small_clip
    out = tmp_path / "out"
    out.mkdir()
    save_label_png(out / "00000.png", (labels[0] == 1).astype(np.int64), davis_palette())
    before = _tree(out)
    code, err = _job(capfd, f"video={fdir}", f"first_mask={first}", f"output_dir={out}")
    assert code == 2 and err == (f"error: {out / '00000.png'}: holds another first-frame mask than {first}; "
                                 "pass overwrite=true or another output_dir\n"), err
    assert _tree(out) == before


def test_mp4_input_gives_one_png_per_decoded_frame(tiny_model, tmp_path):
    frames, labels = generate_clip(6, 4, size=SIZE, num_objects=2)
    w = Mp4Writer(tmp_path / "clip.mp4", 10.0, SIZE)
    for f in frames:
        w.write(f)
    w.close()
    _save_palette_png(tmp_path / "first.png", labels[0], davis_palette())
    s = propagate_video(VideoPropagator(tiny_model, context_frames=0), tmp_path / "clip.mp4",
                        tmp_path / "first.png", tmp_path / "out", show_progress=False)
    assert s["frames"] == 4 and s["written"] == 4
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [f"{i:05d}.png" for i in range(4)]


# ------------------------------------------------------------- per-object decoding (issue 15): ids, resume

PER_OBJECT = VideoSettings(decode="per_object", context_frames=1, memory="gated", crop=True, flow=True,
                           model_weight=0.5)


def _run(prop: VideoPropagator, frames_dir: Path, annotations: dict[int, np.ndarray],
         known: dict[int, np.ndarray] | None = None) -> list[np.ndarray]:
    state = prop.init(frames_dir)
    for idx, lab in annotations.items():
        prop.add_mask(state, idx, lab)
    return [lab for _, lab in prop.propagate(state, known=known)]


@pytest.fixture(scope="module")
def small_model():
    """The shipped painter_small (the cheapest model with the real code paths; weights in the package)."""
    from painter_seg import build_model

    return build_model("default")


@pytest.fixture(scope="module")
def lar_clip(tmp_path_factory):
    """12 frames at 64 x 96, 3 objects, object 1 leaves and comes back."""
    frames, labels = generate_clip(5, 12, size=(64, 96), num_objects=3, leave_and_return=True, leave_id=1)
    gone, back = _leave_and_return(labels, 1)
    root = tmp_path_factory.mktemp("lar")
    return {"frames": frames, "labels": labels, "dir": _write_clip(root, frames, labels), "gone": gone,
            "back": back}


def test_settings_come_from_the_model_config():
    assert VideoSettings.for_model("seggpt_vit_large") == VideoSettings.official(8)
    assert VideoSettings.for_model("default").decode == "per_object"
    with pytest.raises(InputError, match="unknown setting"):
        VideoSettings.from_config({"contxt_frames": 2})
    with pytest.raises(InputError, match="decode=per_object"):
        VideoSettings(decode="joint", crop=True)


@pytest.fixture(scope="module")
def per_object_run(lar_clip, small_model):
    return _run(VideoPropagator(small_model, PER_OBJECT), lar_clip["dir"], {0: lar_clip["labels"][0]})


def test_per_object_ids_never_swap_and_the_leaving_object_comes_back(lar_clip, per_object_run):
    rep = id_consistency(lar_clip["labels"], per_object_run)
    assert rep["swaps"] == 0, rep
    assert all(set(np.unique(p).tolist()) <= {0, 1, 2, 3} for p in per_object_run)
    # objects that stay are found on every frame; the leaving one misses a few of its partly visible frames
    # at the border (0.75 here), and comes back with its own id
    assert rep["presence"][2] >= 0.9 and rep["presence"][3] >= 0.9 and rep["presence"][1] >= 0.5, rep
    assert rep["returns"].get(1, False), rep


def test_flow_baseline_keeps_ids(lar_clip, small_model):
    preds = _run(VideoPropagator(small_model, VideoSettings.flow_only()), lar_clip["dir"],
                 {0: lar_clip["labels"][0]})
    rep = id_consistency(lar_clip["labels"], preds)
    assert rep["swaps"] == 0 and rep["presence"][2] >= 0.9 and rep["presence"][3] >= 0.9


@pytest.mark.parametrize("settings", [PER_OBJECT, VideoSettings.official(1)], ids=["per_object", "joint"])
def test_objects_added_at_later_frames_keep_their_ids(lar_clip, small_model, settings):
    """Object 3 is annotated only at frame 4: absent before, id 3 from then on."""
    labels = lar_clip["labels"]
    first = np.where(labels[0] == 3, 0, labels[0])
    later = np.where(labels[4] == 3, 3, 0)
    preds = _run(VideoPropagator(small_model, settings), lar_clip["dir"], {0: first, 4: later})
    assert all(not (p == 3).any() for p in preds[:4])
    assert (preds[4][labels[4] == 3] == 3).all()
    assert sum((p == 3).any() for p in preds[5:]) >= len(preds[5:]) - 1
    if settings.decode == "per_object":
        assert id_consistency(labels, preds)["swaps"] == 0


def test_resume_from_written_frames_is_exact(lar_clip, small_model, per_object_run):
    """A run that reads frames 1..5 back (as a resumed job does) continues exactly like one that did not stop."""
    known = {i: per_object_run[i] for i in range(1, 6)}
    resumed = _run(VideoPropagator(small_model, PER_OBJECT), lar_clip["dir"], {0: lar_clip["labels"][0]},
                   known=known)
    assert all(np.array_equal(a, b) for a, b in zip(per_object_run, resumed))



def test_resume_with_the_shipped_video_block_is_exact(lar_clip, small_model):
    """The same with every rule of the shipped model's video block on (colour model, ownership, foreign colours
    and tones, distractors): what they keep is rebuilt from the annotated frames and the frames read back."""
    settings = VideoSettings.for_model("default")
    assert settings.foreign_colour > 0 and settings.foreign_tones > 1 and settings.ownership > 0
    full = _run(VideoPropagator(small_model, settings), lar_clip["dir"], {0: lar_clip["labels"][0]})
    resumed = _run(VideoPropagator(small_model, settings), lar_clip["dir"], {0: lar_clip["labels"][0]},
                   known={i: full[i] for i in range(1, 6)})
    assert len(full) == 12 and all(np.array_equal(a, b) for a, b in zip(full, resumed))


# ------------------------------------------------------------------------- priors and edge refinement


def test_occlusion_map_flags_the_uncovered_background_only():
    from painter_seg.apps.video import occlusion_map

    # a 10 px wide band moves 5 px right over a still background, x 10..20 (t-1) -> 15..25 (t)
    back = np.zeros((8, 40, 2), np.float32)
    back[:, 15:25, 0] = -5.0  # pixel x of frame t came from x - 5
    fwd = np.zeros((8, 40, 2), np.float32)
    fwd[:, 10:20, 0] = 5.0
    occ = occlusion_map(back, fwd)
    assert occ.dtype == np.float32 and occ.shape == (8, 40)
    assert occ[:, 10:15].all()  # background uncovered behind the band: a backward warp would leave a trail there
    assert not occ[:, :10].any() and not occ[:, 15:].any()  # the band and the still background are consistent
    assert not occlusion_map(np.zeros_like(back), np.zeros_like(fwd)).any()


def _priors(settings: VideoSettings, frames, labels) -> np.ndarray:
    """Object 1's prior in ``frames[1]`` from its mask in ``frames[0]`` (colours from that frame)."""
    from painter_seg.apps.video import ObjectTrack, VideoState, colour_hist, flow_gray

    prop = VideoPropagator.__new__(VideoPropagator)  # the priors need the settings and colours only, no model
    prop.settings = settings
    state = VideoState(frames=None, size=labels[0].shape, prev_labels=labels[0], prev_gray=flow_gray(frames[0]))
    m = labels[0] == 1
    state.tracks = {1: ObjectTrack(1, None, int(m.sum()), hist=colour_hist(frames[0], m),
                                   bg_hist=colour_hist(frames[0], ~m))}
    return prop._priors(state, frames[1])[1]


def _moving_square(red: bool = False):
    """Two 96 x 128 frames: a textured 40 px square moving 10 px right over a textured still background (smooth
    textures: DIS needs them); ``red``: the square red, the background green-blue. Returns (frames, labels)."""
    import cv2

    rng = np.random.default_rng(0)

    def texture(h, w):
        noise = rng.integers(0, 255, (h, w, 3)).astype(np.float32)
        return (cv2.GaussianBlur(noise, (0, 0), 2) * 3 - 255).clip(0, 255).astype(np.uint8)

    bg, obj = texture(96, 128), texture(40, 40)
    if red:
        bg[..., 0] //= 4
        obj[..., 0], obj[..., 1:] = 230, obj[..., 1:] // 4
    frames, labels = [], []
    for x in (20, 30):
        f = bg.copy()
        f[30:70, x:x + 40] = obj
        lab = np.zeros((96, 128), np.int64)
        lab[30:70, x:x + 40] = 1
        frames.append(f)
        labels.append(lab)
    return frames, labels


def test_occlusion_removes_the_trail_behind_a_moving_object():
    frames, labels = _moving_square()
    plain = _priors(VideoSettings.flow_only(), frames, labels)
    fb = _priors(VideoSettings.flow_only(occlusion=True), frames, labels)
    trail = np.zeros((96, 128), bool)
    trail[32:68, 20:30] = True  # 360 px uncovered at t, the object's at t-1 (a margin off the square's corners)
    assert (plain[trail] > 0.5).sum() >= 180  # the plain backward warp leaves the object on its trail
    assert (fb[trail] > 0.5).sum() <= 60  # the checked warp does not
    inner = np.zeros((96, 128), bool)
    inner[34:66, 34:66] = True
    assert (fb[inner] > 0.5).all() and (plain[inner] > 0.5).all()  # the object itself stays
    assert (fb <= plain + 1e-6).all()  # the check only removes


def test_occlusion_colour_keeps_the_object_the_check_erodes_and_still_removes_the_trail():
    frames, labels = _moving_square(red=True)

    def prior(**kw):
        settings = VideoSettings(decode="per_object", flow=True, model_weight=0.0, context_frames=0, **kw)
        return _priors(settings, frames, labels) > 0.5

    plain, checked = prior(), prior(occlusion=True)
    coloured = prior(occlusion=True, occlusion_colour=True)
    now = labels[1] == 1
    trail = np.zeros_like(now)
    trail[32:68, 20:30] = True  # uncovered at t
    assert plain[trail].sum() >= 300 and checked[trail].sum() <= 40 and coloured[trail].sum() <= 40
    assert checked[now].sum() <= plain[now].sum() - 200  # the check also fails inside the object: erodes it
    assert np.array_equal(coloured & now, plain & now)  # the object's colours keep all of it
    with pytest.raises(InputError, match="occlusion_colour refines the occlusion check"):
        VideoSettings(decode="per_object", flow=True, occlusion_colour=True)


def test_a_lost_object_is_found_again_above_the_redetect_threshold(monkeypatch):
    from painter_seg.apps.video import ObjectTrack

    model = np.zeros((40, 40), np.float32)
    model[10:30, 10:30] = 0.4  # the model sees the object coming back, but below fg_threshold
    prop = VideoPropagator.__new__(VideoPropagator)
    monkeypatch.setattr(prop, "_object_score", lambda track, frame, p: model)
    track, frame = ObjectTrack(1, None, 400), np.zeros((40, 40, 3), np.uint8)
    prop.settings = VideoSettings(decode="per_object", flow=True, model_weight=0.15)
    assert not prop._fused_score(track, frame, None).any()  # at 0.5: still lost
    prop.settings = VideoSettings(decode="per_object", flow=True, model_weight=0.15, redetect_threshold=0.35)
    found = prop._fused_score(track, frame, None) > 0.5
    assert found[10:30, 10:30].all() and found.sum() == 400  # back, with its area
    model[:] = 0.4  # the whole frame: 4x the annotated area, implausible
    assert not prop._fused_score(ObjectTrack(1, None, 100), frame, None).any()
    with pytest.raises(InputError, match="redetect_threshold"):
        VideoSettings(decode="per_object", redetect_threshold=0.0)


def test_gate_is_the_prior_grown_by_a_share_of_its_size():
    from painter_seg.apps.video import _gate_mask

    prior = np.zeros((120, 160), np.float32)
    prior[50:70, 70:90] = 1.0  # 20 x 20: grown by 0.5 x 20 = 10 px
    gate = _gate_mask(prior, 0.5)
    assert gate[50:70, 70:90].all()
    assert gate[60, 60] and gate[60, 99] and gate[40, 80] and gate[79, 80]  # 10 px out on each side
    assert not gate[60, 58] and not gate[60, 101] and not gate[37, 80] and not gate[82, 80]
    assert not gate[41, 61]  # the corner is round: 9 px out on both axes is 12.7 px away
    assert not _gate_mask(np.zeros_like(prior), 0.5).any()



def test_the_search_for_a_lost_object_skips_the_pixels_of_the_objects_still_tracked(monkeypatch):
    """Id safety: a lost object coming back is never written on another tracked object's pixels."""
    from painter_seg.apps.video import ObjectTrack

    model = np.zeros((40, 40), np.float32)
    model[5:25, 5:25] = 0.9  # the model paints the lost object's colour over object 2
    prop = VideoPropagator.__new__(VideoPropagator)
    monkeypatch.setattr(prop, "_object_score", lambda track, frame, p: model.copy())
    prop.settings = VideoSettings(decode="per_object", flow=True, model_weight=0.15, redetect_threshold=0.35)
    track, frame = ObjectTrack(1, None, 100), np.zeros((40, 40, 3), np.uint8)
    taken = np.zeros((40, 40), bool)
    taken[5:25, 5:20] = True  # object 2's expected pixels: 300 of the 400
    found = prop._fused_score(track, frame, None, lambda: taken) > 0.5
    assert not found[taken].any() and found.sum() == 100  # only the 20 x 5 strip outside object 2
    assert (prop._fused_score(track, frame, None) > 0.5).sum() == 400  # without it: over object 2



def test_a_sliver_below_lost_area_ends_the_track_so_the_search_can_start(monkeypatch):
    from painter_seg.apps.video import ObjectTrack

    model = np.zeros((40, 40), np.float32)
    prior = np.zeros((40, 40), np.float32)
    prior[10:13, 10:13] = 1.0  # 9 px left of a 400 px object: the warp lost it
    prop = VideoPropagator.__new__(VideoPropagator)
    monkeypatch.setattr(prop, "_object_score", lambda track, frame, p: model)
    frame, track = np.zeros((40, 40, 3), np.uint8), ObjectTrack(1, None, 400)
    prop.settings = VideoSettings(decode="per_object", flow=True, model_weight=0.15)
    assert (prop._fused_score(track, frame, prior) > 0.5).sum() == 9  # off: the sliver holds the track
    prop.settings = VideoSettings(decode="per_object", flow=True, model_weight=0.15, lost_area=0.1)
    assert not prop._fused_score(track, frame, prior).any()  # 9 < 0.1 x 400: gone
    prior[10:30, 10:30] = 1.0
    assert (prop._fused_score(track, frame, prior) > 0.5).sum() == 400
    with pytest.raises(InputError, match=r"video.lost_area=1.0: must be in \[0, 1\)"):
        VideoSettings(decode="per_object", lost_area=1.0)


def test_a_found_object_must_look_like_its_annotation(monkeypatch):
    """redetect_appearance: the region the search finds is kept only when its hue-saturation histogram is
    within that Bhattacharyya distance of the annotated object's."""
    from painter_seg.apps.video import ObjectTrack, colour_hist

    frame = np.zeros((40, 40, 3), np.uint8)
    frame[:, :20] = (200, 30, 30)   # red on the left
    frame[:, 20:] = (30, 30, 200)   # blue on the right
    annotated = np.zeros((40, 40), bool)
    annotated[10:30, 2:18] = True   # the object was red
    model = np.zeros((40, 40), np.float32)
    prop = VideoPropagator.__new__(VideoPropagator)
    monkeypatch.setattr(prop, "_object_score", lambda track, f, p: model.copy())
    track = ObjectTrack(1, None, 320, hist=colour_hist(frame, annotated))
    prop.settings = VideoSettings(decode="per_object", flow=True, model_weight=0.15, redetect_threshold=0.35,
                                  redetect_appearance=0.5)
    model[10:30, 22:38] = 0.9       # the search finds something blue
    assert not prop._fused_score(track, frame, None).any()
    model[:] = 0.0
    model[10:30, 2:18] = 0.9        # ... or something red
    assert (prop._fused_score(track, frame, None) > 0.5).sum() == 320
    with pytest.raises(InputError, match="redetect_appearance"):
        VideoSettings(decode="per_object", redetect_appearance=1.5)


def test_object_likelihood_follows_the_annotated_colours():
    from painter_seg.apps.video import colour_hist, object_likelihood

    frame = np.zeros((40, 60, 3), np.uint8)
    frame[:, :20] = (200, 30, 30)    # red: the object
    frame[:, 20:40] = (30, 30, 200)  # blue: the background
    frame[:, 40:] = (30, 200, 30)    # green: in neither histogram
    obj = np.zeros((40, 60), bool)
    obj[:, :20] = True
    like = object_likelihood(frame, colour_hist(frame, obj), colour_hist(frame, ~obj & (np.arange(60) < 40)))
    assert like.shape == (40, 60) and like.dtype == np.float32
    assert (like[:, :20] == 1.0).all() and (like[:, 20:40] == 0.0).all() and (like[:, 40:] == 0.5).all()


def _two_colour_scene():
    """A 40 x 60 frame: a red 16 x 16 object at rows 12-28, cols 36-52 on blue; annotated earlier at
    cols 4-20 of a frame of the same colours."""
    from painter_seg.apps.video import ObjectTrack, colour_hist

    frame = np.zeros((40, 60, 3), np.uint8)
    frame[:] = (30, 30, 200)
    frame[12:28, 36:52] = (200, 30, 30)
    before = np.zeros_like(frame)
    before[:] = (30, 30, 200)
    before[12:28, 4:20] = (200, 30, 30)
    annotated = np.zeros((40, 60), bool)
    annotated[12:28, 4:20] = True
    track = ObjectTrack(1, None, 256, hist=colour_hist(before, annotated), bg_hist=colour_hist(before, ~annotated))
    return frame, track


def test_the_search_cuts_its_coarse_blob_to_the_object_colours(monkeypatch):
    """redetect_colours: the model's blob (patch-coarse, twice the object, with a stray patch) is cut to the
    pixels coloured like the object and to its largest part, so the appearance check can accept it."""
    frame, track = _two_colour_scene()
    model = np.zeros((40, 60), np.float32)
    model[6:34, 30:58] = 0.6   # 784 px around the 256 px object
    model[0:4, 0:4] = 0.6      # a stray patch
    prop = VideoPropagator.__new__(VideoPropagator)
    monkeypatch.setattr(prop, "_object_score", lambda t, f, p: model.copy())
    base = {"decode": "per_object", "flow": True, "model_weight": 0.15, "redetect_threshold": 0.35,
                "redetect_appearance": 0.5}
    prop.settings = VideoSettings(**base)
    assert not prop._fused_score(track, frame, None).any()  # the blob is mostly blue: rejected
    prop.settings = VideoSettings(**base, redetect_colours=True)
    found = prop._fused_score(track, frame, None) > 0.5
    assert found[12:28, 36:52].all() and found.sum() == 256  # exactly the object


def _blind_propagator(monkeypatch, size: tuple[int, int]) -> VideoPropagator:
    """A propagator without a model whose every model pass paints nothing (``size``: the frames' ``(H, W)``):
    what the colour and prior rules do alone. The test sets its ``settings``."""
    prop = VideoPropagator.__new__(VideoPropagator)
    monkeypatch.setattr(prop, "_object_score", lambda t, f, p: np.zeros(size, np.float32))
    return prop


def _annotated_state(annotated: np.ndarray, masks: dict[int, np.ndarray], area: int, tones: int = 1):
    """A per-object state whose tracks hold the colours of ``masks`` in the ``annotated`` frame (background: the
    pixels of no mask), with the brightness-split histograms too when ``tones`` > 1; no prompts."""
    from painter_seg.apps.video import ObjectTrack, VideoState, colour_hist

    state = VideoState(frames=None, size=annotated.shape[:2])
    background = ~np.logical_or.reduce(list(masks.values()))
    for oid, mask in masks.items():
        state.tracks[oid] = ObjectTrack(oid, None, area, hist=colour_hist(annotated, mask),
                                        bg_hist=colour_hist(annotated, background),
                                        tone_hist=colour_hist(annotated, mask, tones) if tones > 1 else None)
    return state


def test_colour_search_finds_the_object_the_model_misses_by_its_colours_alone(monkeypatch):
    """colour_search: the model's full-frame search paints nothing; the object is found by its colours (a
    plausible area, a histogram within the distance), never a speck of its colour, nor pixels of another object."""
    frame, track = _two_colour_scene()
    frame[2:5, 2:5] = (200, 30, 30)  # a 9 px speck of the object's colour: implausible area
    prop = _blind_propagator(monkeypatch, (40, 60))
    base = {"decode": "per_object", "flow": True, "model_weight": 0.15, "redetect_threshold": 0.35,
            "redetect_appearance": 0.5, "redetect_colours": True}
    prop.settings = VideoSettings(**base)
    assert not prop._fused_score(track, frame, None).any()  # the model alone: lost
    prop.settings = VideoSettings(**base, colour_search=0.3)
    found = prop._fused_score(track, frame, None) > 0.5
    assert found[12:28, 36:52].all() and found.sum() == 256  # exactly the object
    other = np.zeros((40, 60), bool)
    other[10:30, 34:54] = True  # another object is expected there: not this one's
    assert not (prop._fused_score(track, frame, None, lambda: other) > 0.5).any()
    frame[12:28, 36:52] = (30, 30, 200)  # the object is gone: the speck is not taken for it
    assert not prop._fused_score(track, frame, None).any()
    with pytest.raises(InputError, match=r"video.colour_search=1.0: must be in \[0, 1\)"):
        VideoSettings(decode="per_object", colour_search=1.0)


def test_a_track_dragged_onto_background_ends_and_is_searched_for_in_the_same_frame(monkeypatch):
    """lost_colour: the flow left the object's mask on background (blue, unlike the red object): the track
    ends and the full-frame search finds the object in that frame, not one frame later."""
    frame, track = _two_colour_scene()
    prior = np.zeros((40, 60), np.float32)
    prior[12:28, 4:20] = 1.0  # where the object was: now blue background

    def model(t, f, p):
        out = np.zeros((40, 60), np.float32)
        if p is None:  # the full-frame search sees the object
            out[12:28, 36:52] = 0.9
        return out

    prop = VideoPropagator.__new__(VideoPropagator)
    monkeypatch.setattr(prop, "_object_score", model)
    base = {"decode": "per_object", "flow": True, "model_weight": 0.15, "redetect_threshold": 0.35}
    prop.settings = VideoSettings(**base)
    ghost = prop._fused_score(track, frame, prior) > 0.5
    assert ghost[12:28, 4:20].all() and ghost.sum() == 256  # off: the ghost holds the track
    prop.settings = VideoSettings(**base, lost_colour=0.3)
    found = prop._fused_score(track, frame, prior) > 0.5
    assert found[12:28, 36:52].all() and found.sum() == 256
    frame[12:28, 4:20] = (200, 30, 30)  # the object really is under its prior: the track holds
    assert (prop._fused_score(track, frame, prior) > 0.5)[12:28, 4:20].all()
    with pytest.raises(InputError, match=r"video.lost_colour=1.0: must be in \[0, 1\)"):
        VideoSettings(decode="per_object", lost_colour=1.0)


def test_colour_weight_trims_the_warp_s_soft_edge_off_background_but_never_adds_by_colour(monkeypatch):
    """colour_weight: the fused score mixed with the object's colour likelihood. The soft edge of the prior
    on background that does not look like the object goes; a pixel the prior holds fully stays whatever its
    colour; an object-coloured pixel the prior does not cover is not added."""
    frame, track = _two_colour_scene()  # red object at rows 12-28, cols 36-52, blue background
    frame[30:34, 4:8] = (200, 30, 30)   # a red patch away from the object
    prior = np.zeros((40, 60), np.float32)
    prior[12:28, 36:52] = 1.0
    prior[12:28, 52:56] = 0.62          # the warp's soft edge, on blue
    prior[12:28, 32:36] = 1.0           # fully held, on blue
    prop = _blind_propagator(monkeypatch, (40, 60))
    base = {"decode": "per_object", "flow": True, "model_weight": 0.15, "gate": 2.0}
    prop.settings = VideoSettings(**base)
    plain = prop._fused_score(track, frame, prior) > 0.5
    assert plain[12:28, 32:56].all() and plain.sum() == 16 * 24  # the soft edge passes (0.85 x 0.62)
    prop.settings = VideoSettings(**base, colour_weight=0.3)
    mixed = prop._fused_score(track, frame, prior) > 0.5
    assert mixed[12:28, 32:52].all() and not mixed[12:28, 52:56].any()  # held stays, soft edge goes
    assert not mixed[30:34, 4:8].any()  # colour alone adds nothing
    with pytest.raises(InputError, match=r"video.colour_weight=0.5: must be in \[0, 0.5\)"):
        VideoSettings(decode="per_object", colour_weight=0.5)


def _checks_beside_green():
    """A 40 x 80 blue frame: object 1 (rows 10-30, cols 10-30) red with a quarter of 2 x 2 checks green, object
    2 (cols 30-50) plain green, touching it. Returns ``(frame, truth)``."""
    frame = np.zeros((40, 80, 3), np.uint8)
    frame[:] = (30, 30, 200)
    frame[10:30, 10:30] = (200, 30, 30)
    frame[10:30, 10:30][np.outer(np.arange(20) // 2 % 2, np.arange(20) // 2 % 2) == 1] = (30, 200, 30)
    frame[10:30, 30:50] = (30, 200, 30)
    truth = np.zeros((40, 80), np.int64)
    truth[10:30, 10:30], truth[10:30, 30:50] = 1, 2
    return frame, truth


def test_colour_ownership_gives_a_touching_object_back_the_pixels_its_neighbour_drifted_onto():
    """colour_ownership: object 1 (red, a quarter green checks) has drifted onto object 2 (plain green) they touch.
    The green pixels of object 2 go back to it; object 1's own green checks stay its own (among its red ones);
    a green patch labelled 1 that does not touch object 2, and the background, are left as they are."""
    from painter_seg.apps.video import colour_hist, colour_logp, colour_ownership, hs_bins

    frame, truth = _checks_beside_green()
    frame[2:6, 60:64] = (30, 200, 30)                                     # a green patch far from both
    hists = {1: colour_hist(frame, truth == 1), 2: colour_hist(frame, truth == 2)}
    drifted = truth.copy()
    drifted[10:30, 30:42] = 1   # 1 holds 12 of object 2's 20 columns
    drifted[2:6, 60:64] = 1
    out = colour_ownership(drifted, colour_logp(hs_bins(frame), hists), ratio=2.0, window=3)
    assert (out[10:30, 31:50] == 2).all()                   # object 2 whole again, but on the boundary column
    assert (out[10:30, 30] == 1).sum() >= 18                # where the window still sees 1's red checks
    assert (out[10:30, 10:30] == 1).sum() == 399            # object 1 keeps its green checks (but the one
                                                            # corner pixel whose window is mostly green)
    assert (out[2:6, 60:64] == 1).all() and (out[truth == 0] == drifted[truth == 0]).all()
    assert colour_ownership(drifted, colour_logp(hs_bins(frame), {1: hists[1]}), 2.0, 3) is drifted
    with pytest.raises(InputError, match=r"video.ownership=1.0: must be 0 \(off\) or a ratio > 1"):
        VideoSettings(decode="per_object", ownership=1.0)


def test_a_lost_object_seen_through_another_s_gaps_is_claimed_by_its_colours_only():
    """claimed_by_colour (the search's view with ownership): inside the pixels another object (red comb) is
    expected on, the bar of the lost object's colour (green) seen through the gaps is the lost object's; the
    comb's own pixels and grey background that neither explains are not."""
    from painter_seg.apps.video import (
        claimed_by_colour,
        colour_hist,
        colour_logp,
        hs_bins,
        object_likelihood,
    )

    frame = np.zeros((40, 60, 3), np.uint8)
    frame[:] = (128, 128, 128)
    frame[10:30, 10:40] = (200, 30, 30)      # the comb ...
    frame[14:30, 16:20] = (30, 200, 30)      # ... a gap showing the green object behind it
    frame[14:30, 26:30] = (128, 128, 128)    # ... a gap showing background
    annotated = np.zeros((40, 60, 3), np.uint8)
    annotated[:] = (128, 128, 128)
    annotated[5:15, 45:55] = (30, 200, 30)
    annotated[20:35, 2:12] = (200, 30, 30)
    green, red = np.zeros((40, 60), bool), np.zeros((40, 60), bool)
    green[5:15, 45:55], red[20:35, 2:12] = True, True
    hists = {1: colour_hist(annotated, green), 2: colour_hist(annotated, red)}
    logp = colour_logp(hs_bins(frame), hists)
    looks = object_likelihood(frame, hists[1], colour_hist(annotated, ~green)) > 0.5
    expected = np.zeros((40, 60), bool)
    expected[10:30, 10:40] = True            # the comb's prior covers its gaps
    claimed = claimed_by_colour(expected, logp[1], logp[2], ratio=2.0, window=3, looks=looks)
    assert claimed[15:30, 16:20].all() and claimed[14, 17:19].all()  # the bar, but for its two top corners,
    assert claimed.sum() == 62                                          # where the window sees more red


def test_foreign_colours_leave_a_comb_s_mask_for_the_object_in_its_gaps_even_a_lost_one():
    """foreign_pixels: a red comb's mask has filled its gaps, where a purple bar behind it shows. Per pixel, the
    purple is the bar's colour and never the comb's: within reach of the bar's own labelled pixels it goes to the
    bar, out of reach (or with the bar lost, no pixel labelled) to background; the comb's red and the grey gap stay the
    comb's. A colour the comb's annotation had, however little of it, stays; two objects of one look are not
    rivals (colour_rivals), so nothing moves between them."""
    from painter_seg.apps.video import colour_hist, colour_rivals, foreign_pixels, hs_bins

    frame = np.full((40, 60, 3), 128, np.uint8)
    frame[10:30, 10:40] = (200, 30, 30)      # the comb
    frame[14:30, 16:20] = (150, 40, 220)     # a gap showing the purple bar
    frame[14:30, 26:30] = (128, 128, 128)    # a gap showing background
    frame[4:10, 16:20] = (150, 40, 220)      # the bar's end above the comb
    comb, bar = np.zeros((40, 60), bool), np.zeros((40, 60), bool)
    comb[10:30, 10:40], bar[4:10, 16:20] = True, True
    hists = {1: colour_hist(frame, comb & (frame[..., 0] == 200)), 2: colour_hist(frame, bar)}
    rivals = colour_rivals(hists)
    assert rivals == {1: [2], 2: [1]}
    bins = hs_bins(frame)
    labels = np.where(comb, 1, 0) + np.where(bar, 2, 0)
    out = foreign_pixels(labels, bins, hists, 0.02, 5, rivals)
    assert (out[14:30, 16:20] == 2).all() and (out[bar] == 2).all()
    assert (out[comb] == 1).sum() == comb.sum() - 64 and (out[14:30, 26:30] == 1).all()
    lost = np.where(comb, 1, 0)              # the bar lost: its pixels in the gap go to background
    out = foreign_pixels(lost, bins, hists, 0.02, 5, rivals)
    assert (out[14:30, 16:20] == 0).all() and (out[comb] == 1).sum() == comb.sum() - 64
    far = foreign_pixels(labels, bins, hists, 0.02, 0, rivals)  # the comb's rows 10-13 part the gap from the bar
    assert (far[14:30, 16:20] == 0).all() and (far[bar] == 2).all()
    seen = comb.copy()                       # a comb annotated with a few purple pixels: not foreign to it
    seen[4:6, 16:18] = True
    some = {1: colour_hist(frame, seen & (frame[..., 2] != 128)), 2: hists[2]}
    assert colour_rivals(some) == rivals and foreign_pixels(labels, bins, some, 0.02, 5, rivals) is labels
    twins = {1: hists[2], 2: hists[2]}       # one look: no rivals, the label map comes back as it is
    assert colour_rivals(twins) == {1: [], 2: []}
    assert foreign_pixels(labels, bins, twins, 0.02, 5, colour_rivals(twins)) is labels
    with pytest.raises(InputError, match=r"video.foreign_colour=20.0: must be in \[0, 1\) \(a share; 0: off\)"):
        VideoSettings(decode="per_object", foreign_colour=20.0)


def test_ownership_in_the_propagator_returns_drifted_pixels_and_is_off_by_default(monkeypatch):
    """The per-object decoder with ``ownership``: object 1's prior (red, a quarter green checks) has drifted over 12 of
    object 2's (plain green) 20 columns; the decoded frame gives them back to 2 (but the two columns next to
    object 1, whose window still sees its red), with the setting off they stay 1's."""
    frame, truth = _checks_beside_green()
    state = _annotated_state(frame, {1: truth == 1, 2: truth == 2}, 400)
    priors = {1: np.zeros((40, 80), np.float32), 2: np.zeros((40, 80), np.float32)}
    priors[1][10:30, 10:42], priors[2][10:30, 42:50] = 1.0, 1.0
    prop = _blind_propagator(monkeypatch, (40, 80))
    base = {"decode": "per_object", "flow": True, "model_weight": 0.15, "colour_weight": 0.3}
    prop.settings = VideoSettings(**base)
    assert (prop._predict_objects(state, frame, priors)[10:30, 30:42] == 1).all()
    prop.settings = VideoSettings(**base, ownership=2.0)
    labels = prop._predict_objects(state, frame, priors)
    assert (labels[10:30, 32:50] == 2).all() and (labels[10:30, 10:30] == 1).all()
    assert (labels[truth == 0] == 0).all()


def test_foreign_colour_in_the_propagator_keeps_a_lost_object_s_pixels_off_the_one_in_front(monkeypatch):
    """The per-object decoder with ``foreign_colour``: object 2 (a green bar) is lost (no prior, the search finds
    nothing) and shows through the gaps of object 1 (a red comb) whose prior covers them. Without the setting
    (ownership on) id 1 is written on the bar: ownership cannot hand pixels to an object without any; with it
    the bar's pixels are background and the comb keeps its red."""
    frame = np.full((40, 60, 3), 128, np.uint8)
    frame[10:30, 10:40] = (200, 30, 30)
    frame[14:30, 16:20] = (30, 200, 30)      # the bar behind the comb
    annotated = np.full((40, 60, 3), 128, np.uint8)
    annotated[5:15, 45:55], annotated[20:35, 2:12] = (30, 200, 30), (200, 30, 30)
    masks = {1: np.zeros((40, 60), bool), 2: np.zeros((40, 60), bool)}
    masks[1][20:35, 2:12], masks[2][5:15, 45:55] = True, True
    state = _annotated_state(annotated, masks, 150)
    priors = {1: np.zeros((40, 60), np.float32), 2: np.zeros((40, 60), np.float32)}
    priors[1][10:30, 10:40] = 1.0
    prop = _blind_propagator(monkeypatch, (40, 60))
    base = {"decode": "per_object", "flow": True, "model_weight": 0.15, "ownership": 2.0}
    prop.settings = VideoSettings(**base)
    assert (prop._predict_objects(state, frame, priors)[14:30, 16:20] == 1).all()
    prop.settings = VideoSettings(**base, foreign_colour=0.02)
    labels = prop._predict_objects(state, frame, priors)
    assert (labels[14:30, 16:20] == 0).all() and (labels == 1).sum() == 600 - 64 and not (labels == 2).any()


def test_foreign_tones_hand_back_a_flat_bright_object_under_a_dark_striped_one_of_the_same_hue(monkeypatch):
    """``foreign_tones``: a flat bright violet object (1) and a violet object striped darker (2) share every
    hue-saturation bin, so neither ``ownership`` nor the hue-saturation foreign rule can part them, and object
    2's prior, drifted over 6 of object 1's 10 columns, keeps them. Split by brightness (8 tones) the bright
    violet is a colour object 2 never had: those columns leave object 2 for background (brightness alone never
    hands pixels to another object), object 2 keeps all of its own."""
    from painter_seg.apps.video import colour_rivals, hs_bins

    violet = np.array([170, 90, 220])
    frame = np.full((40, 60, 3), 128, np.uint8)
    frame[10:30, 10:20] = violet                                   # object 1: flat, bright (value 220)
    frame[10:30, 20:40] = (violet * 0.68).astype(np.uint8)         # object 2: the same violet, darker (150) ...
    frame[10:30:4, 20:40] = frame[11:30:4, 20:40] = (violet * 0.41).astype(np.uint8)  # ... striped darker (90)
    bins, toned = hs_bins(frame), hs_bins(frame, 8)
    assert len(np.unique(bins[10:30, 10:40])) == 1 and len(np.unique(toned[10:30, 10:40])) == 3
    masks = {1: np.zeros((40, 60), bool), 2: np.zeros((40, 60), bool)}
    masks[1][10:30, 10:20], masks[2][10:30, 20:40] = True, True
    state = _annotated_state(frame, masks, 150, tones=8)
    assert colour_rivals({o: t.hist for o, t in state.tracks.items()}) == {1: [], 2: []}
    assert colour_rivals({o: t.tone_hist for o, t in state.tracks.items()}) == {1: [2], 2: [1]}
    priors = {1: np.zeros((40, 60), np.float32), 2: np.zeros((40, 60), np.float32)}
    priors[1][10:30, 10:14], priors[2][10:30, 14:40] = 1.0, 1.0  # object 2's mask drifted over columns 14-19
    prop = _blind_propagator(monkeypatch, (40, 60))
    base = {"decode": "per_object", "flow": True, "model_weight": 0.15, "ownership": 2.0, "foreign_colour": 0.02}
    prop.settings = VideoSettings(**base)
    assert (prop._predict_objects(state, frame, priors)[10:30, 14:20] == 2).all()
    prop.settings = VideoSettings(**base, foreign_tones=8)
    labels = prop._predict_objects(state, frame, priors)
    assert (labels[10:30, 14:20] == 0).all() and (labels[10:30, 10:14] == 1).all()
    assert (labels[masks[2]] == 2).all() and (labels > 0).sum() == 80 + 400
    with pytest.raises(InputError, match=r"video.foreign_tones=3: must divide 256 \(1: hue and saturation only\)"):
        VideoSettings(decode="per_object", foreign_colour=0.02, foreign_tones=3)
    with pytest.raises(InputError, match="video.foreign_tones refines the foreign-colour rule: set video.foreign_colour"):
        VideoSettings(decode="per_object", foreign_tones=8)


def test_a_background_part_that_looks_like_the_object_is_not_taken_for_it(monkeypatch):
    """distractors: a red square in the annotated frame's background looks like a red-and-pink object; once
    the object left, neither the model's search nor the colour search takes the square for it; the object
    itself, coming back, is found by both."""
    from painter_seg.apps.video import ObjectTrack, colour_hist

    blue, red, pink = (30, 30, 200), (200, 30, 30), (200, 120, 120)
    before = np.zeros((40, 80, 3), np.uint8)
    before[:] = blue
    before[12:22, 4:20], before[22:28, 4:20] = red, pink  # the object: 160 red, 96 pink pixels
    before[12:28, 60:76] = red  # the distractor: a red square of the background
    obj = np.zeros((40, 80), bool)
    obj[12:28, 4:20] = True
    track = ObjectTrack(1, None, 256, hist=colour_hist(before, obj), bg_hist=colour_hist(before, ~obj))
    prop = VideoPropagator.__new__(VideoPropagator)
    base = {"decode": "per_object", "flow": True, "model_weight": 0.15, "redetect_threshold": 0.35,
            "redetect_appearance": 0.5, "redetect_colours": True, "colour_search": 0.5}
    prop.settings = VideoSettings(**base, distractors=True)
    distractors = prop._distractors(track, before, ~obj)
    assert len(distractors) == 1

    gone = before.copy()
    gone[12:28, 4:20] = blue  # the object left; the square stays
    model = np.zeros((40, 80), np.float32)
    model[12:28, 60:76] = 0.9  # the model's search paints the square
    monkeypatch.setattr(prop, "_object_score", lambda t, f, p: model.copy())
    prop.settings = VideoSettings(**base)
    assert (prop._fused_score(track, gone, None) > 0.5).sum() == 256  # off: the square is taken
    prop.settings = VideoSettings(**base, distractors=True)
    track.distractors = distractors  # as _set_anchor keeps them with the setting on
    assert not prop._fused_score(track, gone, None).any()  # model search and colour search reject it

    back = gone.copy()
    back[12:22, 36:52], back[22:28, 36:52] = red, pink  # the object returns
    found = prop._fused_score(track, back, None) > 0.5  # the model still paints the square: colour search
    assert found[12:28, 36:52].all() and found.sum() == 256
    model[:] = 0.0
    model[12:28, 36:52] = 0.9  # the model paints the object
    found = prop._fused_score(track, back, None) > 0.5
    assert found[12:28, 36:52].all() and found.sum() == 256
    with pytest.raises(InputError, match="distractors and core_colours need decode=per_object"):
        VideoSettings(distractors=True)


def test_an_object_whose_base_colour_is_the_background_is_found_by_its_own_colours(monkeypatch):
    """core_colours: a square of green checks on olive, the olive being the background's colour: a colour cut
    of it keeps only its green checks, whose histogram is 0.54 from the whole object's (above the search's
    0.3 and 0.5), so without the setting neither the colour search nor the model's search takes it back;
    with it, both compare with the annotated green checks alone and find it."""
    from painter_seg.apps.video import ObjectTrack

    olive, green = (120, 130, 40), (30, 160, 60)
    before = np.zeros((40, 80, 3), np.uint8)
    before[:] = olive
    checks = (np.add.outer(np.arange(16) // 4, np.arange(16) // 4) % 2 == 0)
    before[12:28, 4:20][checks] = green  # the object: 128 green, 128 olive pixels
    obj = np.zeros((40, 80), bool)
    obj[12:28, 4:20] = True
    base = {"decode": "per_object", "flow": True, "model_weight": 0.15, "redetect_threshold": 0.35,
            "redetect_appearance": 0.5, "redetect_colours": True, "colour_search": 0.3}
    prop = VideoPropagator.__new__(VideoPropagator)
    back = np.zeros_like(before)
    back[:] = olive
    back[12:28, 50:66][checks] = green  # the object, back elsewhere
    model = np.zeros((40, 80), np.float32)
    monkeypatch.setattr(prop, "_object_score", lambda t, f, p: model.copy())
    for core in (False, True):
        prop.settings = VideoSettings(**base, core_colours=core)
        track = ObjectTrack(1, None, 256)
        prop._set_colours(track, before, obj, ~obj)
        assert (track.core_hist is not None) == core
        for painted in (False, True):  # the model misses it (colour search) / paints it (model's search)
            model[:] = 0.0
            if painted:
                model[12:28, 50:66] = 0.9
            found = prop._fused_score(track, back, None) > 0.5
            if core:
                assert found.sum() == 128 and found[12:28, 50:66][checks].all()
            else:
                assert not found.any()
    with pytest.raises(InputError, match="core_colours need decode=per_object"):
        VideoSettings(core_colours=True)


def test_colour_ownership_reaches_a_part_seen_through_a_gap_of_the_holder():
    """reach: a green part (object 2's colours) that object 1's red tooth separates from object 2's own pixels
    goes to object 2 when the tooth is narrower than ``reach``; a green part farther away stays object 1's."""
    from painter_seg.apps.video import colour_hist, colour_logp, colour_ownership, hs_bins

    frame = np.zeros((40, 80, 3), np.uint8)
    frame[:] = (30, 30, 200)
    frame[10:30, 10:40] = (200, 30, 30)   # object 1: red
    frame[10:30, 40:50] = (30, 200, 30)   # object 2: green, right of object 1
    frame[12:28, 30:37] = (30, 200, 30)   # green seen through object 1, 3 px of red (a tooth) from object 2
    frame[12:28, 14:20] = (30, 200, 30)   # green 20 px from object 2
    truth = np.zeros((40, 80), np.int64)
    truth[10:30, 10:40], truth[10:30, 40:50] = 1, 2
    truth[12:28, 30:37], truth[12:28, 14:20] = 2, 2
    hists = {1: colour_hist(frame, truth == 1), 2: colour_hist(frame, truth == 2)}
    labels = truth.copy()
    labels[10:30, 10:40] = 1  # object 1's mask covers its gaps
    logp = colour_logp(hs_bins(frame), hists)
    near = np.zeros((40, 80), bool)
    near[13:27, 31:36] = True  # the near part, less the border the 3 x 3 window shares with red
    assert not (colour_ownership(labels, logp, 2.0, 3) == 2)[near].any()  # not connected: stays 1's
    out = colour_ownership(labels, logp, 2.0, 3, reach=3)
    assert (out[near] == 2).all()
    assert (out[12:28, 14:20] == 1).all() and (out[10:30, 10:30] == 1).all()  # far part and the red stay 1's


def test_video_canvas_runs_the_shared_weights_on_the_canvas_the_settings_name(small_model, lar_clip):
    """``video.canvas``: the propagator paints on its own canvas with the model's own weight tensors, and its
    masks equal those of a model built for that canvas."""
    side = small_model.half_size[1] + 32
    settings = dataclasses.replace(VideoSettings.for_model("default"), canvas=side)
    prop = VideoPropagator(small_model, settings)
    assert prop.half_size == (side, side) and small_model.half_size != (side, side)
    assert prop.model.blocks[3].mlp.fc1.weight is small_model.blocks[3].mlp.fc1.weight
    assert prop.model.blocks[3].attn.rel_pos_h.shape[0] == 2 * (2 * side // 16) - 1  # the canvas height
    from painter_seg import build_model

    built = build_model("default", overrides=[f"net.img_size=[{2 * side},{side}]"])
    ref = VideoPropagator(built, dataclasses.replace(settings, canvas=0))
    got, want = [], []
    for p, out in ((prop, got), (ref, want)):
        state = p.init(lar_clip["dir"])
        p.add_mask(state, 0, lar_clip["labels"][0])
        out += [lab for _, lab in itertools.islice(p.propagate(state), 2)]
    # the twin resamples the fp32 tables, the loader the fp16 file's: the paint differs by ~1e-4
    assert [int((g != w).sum()) for g, w in zip(got, want)] == [0, 0]
    assert VideoPropagator(small_model, dataclasses.replace(settings, canvas=0)).model is small_model
    with pytest.raises(InputError, match=r"^video\.canvas=100: img_size \(200, 100\) is not a multiple of "
                                         r"patch_size 16$"):
        VideoPropagator(small_model, dataclasses.replace(settings, canvas=100))
    with pytest.raises(InputError, match=r"^video\.canvas=-1: must be 0"):
        dataclasses.replace(settings, canvas=-1)
