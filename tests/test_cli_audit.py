"""Audit of the jobs against bad user input: every case ends as exactly one ``error: <file/arg>: <problem>`` line
on stderr with exit code 2 (no traceback, no usage text), and leaves every input file as it was.

One table per job; ``{d}`` is the folder of inputs, ``{o}`` a folder for outputs. The segment job's cases live in
tests/test_cli_inputs.py, propagate's frame/mask cases in tests/test_video.py, the tuning config's in
tests/test_prompt_tuning.py and the train config's in tests/test_training.py; these are the others. Cases fail
before a server starts, a model trains or a benchmark runs (tiny inputs, seggpt_tiny, one step at most).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from painter_seg.io.masks import davis_palette, save_label_png
from tests.conftest import run_cli

TINY = ("model=seggpt_tiny", "device=cpu")
SCENE = (*TINY, "images={d}/images", "masks={d}/masks", "steps=1", "batch_size=2", "progress=false",
         "val_fraction=0")
PROP = ("propagate", *TINY, "video={d}/frames", "first_mask={d}/first.png", "write_overlay=false")
EVAL = ("evaluate", *TINY)
SERVE = ("serve", *TINY)
TRAIN = ("train", "+experiment=smoke", "model.net.depth=3", "model.net.feature_layers=[2]", "model.net.embed_dim=48",
         "model.net.num_heads=2", "model.net.img_size=[192,96]", "model.net.decoder_embed_dim=16",
         "train.max_steps=1", "data.length=2")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """64x64 scene images and masks, three frames with a first mask, a few-shot class folder, VOS masks, and
    the bad files: empty, random bytes, a folder, a plain file."""
    d = tmp_path_factory.mktemp("audit_inputs")
    rng = np.random.default_rng(0)
    for sub in ("images", "masks", "frames", "fss/cat", "vos/pred/s1", "vos/gt/s1", "vos/gt_small/s1", "adir"):
        (d / sub).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / "images" / f"v{i}.png")
        m = np.zeros((64, 64), np.uint8)
        m[10 + i:40, 10:40 + i] = 1
        Image.fromarray(m).save(d / "masks" / f"v{i}.png")
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / "frames" / f"{i:05d}.png")
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / "fss" / "cat" / f"{i + 1}.jpg")
        m = np.zeros((64, 64), np.uint8)
        m[5:30, 5:30] = 255
        Image.fromarray(m).save(d / "fss" / "cat" / f"{i + 1}.png")
        lab = (m > 0).astype(np.int64)
        save_label_png(d / "vos" / "pred" / "s1" / f"{i:05d}.png", lab, davis_palette())
        save_label_png(d / "vos" / "gt" / "s1" / f"{i:05d}.png", lab, davis_palette())
        save_label_png(d / "vos" / "gt_small" / "s1" / f"{i:05d}.png", lab[:32, :32], davis_palette())
    first = np.zeros((64, 64), np.uint8)
    first[10:30, 10:30] = 1
    Image.fromarray(first).save(d / "first.png")
    (d / "empty.png").write_bytes(b"")
    (d / "empty.pth").write_bytes(b"")
    noise = rng.integers(0, 255, 512, dtype=np.uint8).tobytes()
    for name in ("random.png", "random.pth", "random.safetensors"):
        (d / name).write_bytes(noise)
    (d / "afile").write_text("a plain file")
    return d


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


CASES = {
    # ---------------------------------------------------------------- propagate (frames/first mask: test_video.py)
    "propagate/mask-is-folder": ((*PROP[:4], "first_mask={d}/adir"), "{d}/adir: is a folder, not an image file"),
    "propagate/masks-is-file": ((*PROP, "masks={d}/afile"),
                                "masks={d}/afile: not a folder (a folder of PNGs named after their frames)"),
    "propagate/masks-missing": ((*PROP, "masks={d}/nope"), "masks={d}/nope: folder not found"),
    "propagate/output-is-masks": ((*PROP, "masks={d}/adir", "output_dir={d}/adir"),
                                  "{d}/adir: output dir is inside the input masks folder {d}/adir"),
    "propagate/output-is-first-mask": ((*PROP, "output_dir={d}/first.png"),
                                       "{d}/first.png: exists and is a file, not a folder"),
    "propagate/overwrite-first-mask": ((*PROP[:4], "first_mask={d}/frames_masks/00000.png", "overwrite=true",
                                        "output_dir={d}/frames_masks"),
                                       ("{d}/frames_masks: overwrite=true would overwrite the first mask "
                                       "{d}/frames_masks/00000.png")),
    # a checkpoint that cannot load: the missing input is named first (no model is built before the paths pass)
    "propagate/video-missing-before-model": (("propagate", *TINY, "checkpoint={d}/random.pth", "video={d}/nope",
                                              "first_mask={d}/first.png"), "{d}/nope: video not found"),
    "propagate/davis-root-missing": (("propagate", *TINY, "checkpoint={d}/random.pth", "data=davis",
                                      "root={d}/nope"), "root={d}/nope: data set folder not found"),
    "propagate/context-string": ((*PROP, "context_frames=abc"),
                                 "context_frames='abc': expected an integer >= 0 (or null: the model's)"),
    "propagate/precision": ((*PROP, "precision=fp8"), "precision=fp8: expected one of auto, fp32, bf16, fp16"),
    "propagate/video-ownership": (("propagate", "model=default", "device=cpu", *PROP[3:], "model.video.ownership=0.5"),
                                  "video.ownership=0.5: must be 0 (off) or a ratio > 1"),
    "propagate/davis-not-a-layout": (("propagate", *TINY, "data=davis", "root={d}/fss", "sequences=[s1]"),
                                     ("{d}/fss: not a DAVIS layout (expected JPEGImages/480p/<seq> + "
                                     "Annotations/480p/<seq>, or images/<seq> + masks/<seq>)")),
    # ---------------------------------------------------------------- tune
    "tune/images-is-file": (("tune", *TINY, "images={d}/afile", "masks={d}/masks", "output={o}/p.safetensors"),
                            "{d}/afile: image folder not found"),
    "tune/masks-empty-folder": (("tune", *TINY, "images={d}/images", "masks={d}/adir", "output={o}/p.safetensors"),
                                "{d}/images: no image has a mask of the same name in {d}/adir"),
    "tune/output-is-folder": (("tune", *SCENE, "output={d}/adir"),
                              "output={d}/adir: the tuned prompt is a .safetensors file"),
    "tune/output-is-checkpoint": (("tune", *SCENE, "checkpoint={d}/random.safetensors",
                                   "output={d}/random.safetensors"),
                                  "output={d}/random.safetensors: would overwrite the checkpoint"),
    "tune/output-in-images": (("tune", *SCENE, "output={d}/images/p.safetensors"),
                              "output={d}/images/p.safetensors: lies inside the input folder images={d}/images"),
    "tune/output-parent-is-file": (("tune", *SCENE, "output={d}/afile/p.safetensors"),
                                   "{d}/afile: exists and is a file, not a folder"),
    "tune/steps-negative": (("tune", *SCENE, "steps=-3", "output={o}/p.safetensors"),
                            "steps=-3, batch_size=2: both must be >= 1"),
    "tune/batch-zero": (("tune", *SCENE, "batch_size=0", "output={o}/p.safetensors"),
                        "steps=1, batch_size=0: both must be >= 1"),
    "tune/weight-decay": (("tune", *SCENE, "weight_decay=-1", "output={o}/p.safetensors"),
                          "weight_decay=-1: expected >= 0"),
    "tune/min-lr-ratio": (("tune", *SCENE, "min_lr_ratio=2", "output={o}/p.safetensors"),
                          "min_lr_ratio=2: expected 0 <= min_lr_ratio <= 1"),
    "tune/max-pairs-init": (("tune", *SCENE, "max_pairs_init=0", "output={o}/p.safetensors"),
                            "max_pairs_init=0: expected >= 1"),
    "tune/ignore-index-negative": (("tune", *SCENE, "ignore_index=-7", "output={o}/p.safetensors"),
                                   "ignore_index=-7: expected a mask id 1-65535 (or null: none)"),
    "tune/max-side": (("tune", *SCENE, "max_side=-5", "output={o}/p.safetensors"),
                      "max_side=-5: expected a side in pixels >= 1 (0 or null: no limit)"),
    "tune/checkpoint-empty": (("tune", *SCENE, "checkpoint={d}/empty.pth", "output={o}/p.safetensors"),
                              "{d}/empty.pth: empty checkpoint file (0 bytes)"),
    "tune/mask-random-bytes": (("tune", *TINY, "images={d}/images", "masks={d}/bad_masks",
                                "output={o}/p.safetensors"),
                               "{d}/bad_masks/v0.png: not a readable image (cannot identify image file)"),
    # ---------------------------------------------------------------- tune-report
    "tune-report/holdout-above-1": (("tune-report", *SCENE, "report.holdout=1.5", "output={o}/r.safetensors"),
                                    "report.holdout=1.5: expected a share 0 < holdout < 1"),
    "tune-report/max-candidates": (("tune-report", *SCENE, "report.max_candidates=0", "output={o}/r.safetensors"),
                                   "report.max_candidates=0: expected >= 1"),
    "tune-report/views": (("tune-report", *TINY, "report.scene=synthetic", "report.views=0",
                           "output={o}/r.safetensors"),
                          "report.views=0: expected >= 2 (training and held-out views)"),
    "tune-report/size": (("tune-report", *TINY, "report.scene=synthetic", "report.size=[0,0]",
                          "output={o}/r.safetensors"), "report.size=[0, 0]: expected [height, width], each >= 32"),
    "tune-report/num-classes": (("tune-report", *TINY, "report.scene=synthetic", "report.num_classes=0",
                                 "output={o}/r.safetensors"), "report.num_classes=0: expected 1..8"),
    # ---------------------------------------------------------------- evaluate task=few_shot
    "evaluate/root-is-file": ((*EVAL, "root={d}/afile", "output_dir={o}/e"), "{d}/afile: data folder not found"),
    "evaluate/root-empty": ((*EVAL, "root={d}/adir", "output_dir={o}/e"),
                            ("{d}/adir: no known layout (fss1000, perseg, flat_pairs, images_masks, davis) fits "
                            "this folder")),
    "evaluate/output-is-file": ((*EVAL, "root={d}/fss", "output_dir={d}/afile"),
                                "{d}/afile: exists and is a file, not a folder"),
    "evaluate/shots-string": ((*EVAL, "root={d}/fss", "shots=abc", "output_dir={o}/e"),
                              "shots='abc': expected an integer"),
    "evaluate/episodes-per-class": ((*EVAL, "root={d}/fss", "episodes_per_class=0", "output_dir={o}/e"),
                                    "episodes_per_class=0: expected >= 1"),
    "evaluate/seg-type": ((*EVAL, "root={d}/fss", "seg_type=foo", "output_dir={o}/e"),
                          "seg_type='foo': expected semantic or instance"),
    "evaluate/strategy": ((*EVAL, "root={d}/fss", "strategy=foo", "output_dir={o}/e"),
                          ("strategy=foo: unknown strategy; expected one of feature_ensemble, plain, "
                          "spatial_ensemble, tuned")),
    "evaluate/row-string": ((*EVAL, "root={d}/fss", "rows=foo@1", "output_dir={o}/e"),
                            ("rows: 'foo@1' is not <strategy>@<shots> with a strategy in ['feature_ensemble', "
                            "'plain', 'spatial_ensemble'] and shots >= 1 (score a learned prompt with "
                            "tools/report_prompt_tuning.py)")),
    "evaluate/synthetic-size": ((*EVAL, "data=synthetic", "data.episodes=1", "data.size=[0,0]", "output_dir={o}/e"),
                                "data.size=[0, 0]: expected [height, width], each >= 32"),
    # ---------------------------------------------------------------- evaluate task=vos
    "evaluate-vos/pred-missing": ((*EVAL, "task=vos", "pred={d}/nope", "gt={d}/vos/gt", "output_dir={o}/v"),
                                  "{d}/nope: prediction folder not found"),
    "evaluate-vos/gt-empty": ((*EVAL, "task=vos", "pred={d}/vos/pred", "gt={d}/adir", "output_dir={o}/v"),
                              ("{d}/adir: no PNG masks, nor sequence folders of PNG masks, in this ground-truth "
                              "folder")),
    "evaluate-vos/sizes-differ": ((*EVAL, "task=vos", "pred={d}/vos/pred", "gt={d}/vos/gt_small",
                                   "output_dir={o}/v"),
                                  ("{d}/vos/pred/s1/00001.png: size 64x64 differs from the ground truth "
                                  "{d}/vos/gt_small/s1/00001.png (32x32)")),
    "evaluate-vos/output-is-gt": ((*EVAL, "task=vos", "pred={d}/vos/pred", "gt={d}/vos/gt",
                                   "output_dir={d}/vos/gt"),
                                  "{d}/vos/gt: output folder lies inside the ground-truth folder {d}/vos/gt"),
    "evaluate-vos/clips-negative": ((*EVAL, "task=vos", "clips=-1", "output_dir={o}/v"),
                                    "clips=-1: expected a number of generated clips >= 1 (or null)"),
    "evaluate-vos/clips-string": ((*EVAL, "task=vos", "clips=abc", "output_dir={o}/v"),
                                  "clips=abc: expected a number of generated clips >= 1 (or null)"),
    "evaluate-vos/clips-seed": ((*EVAL, "task=vos", "clips=1", "clips_seed=-3", "output_dir={o}/v"),
                                "clips_seed=-3: expected the first clip's seed, an integer >= 0"),
    "evaluate-vos/methods": ((*EVAL, "task=vos", "clips=1", "methods=[ours,zz]", "output_dir={o}/v"),
                             "methods=['ours', 'zz']: expected some of ours, copy, flow"),
    # ---------------------------------------------------------------- train (config values: test_training.py)
    "train/init-random-bytes": ((*TRAIN, "init_checkpoint={d}/random.pth"),
                                "{d}/random.pth: not a readable torch checkpoint (corrupt pickle)"),
    "train/output-is-file": ((*TRAIN, "output_dir={d}/afile"), "{d}/afile: exists and is a file, not a folder"),
    "train/betas": ((*TRAIN, "train.betas=[2,3]"), "train.betas must be in [0, 1), got [2.0, 3.0]"),
    "train/weight-decay": ((*TRAIN, "train.weight_decay=-1"), "train.weight_decay must be >= 0, got -1.0"),
    "train/grad-clip": ((*TRAIN, "train.grad_clip=-1"),
                        "train.grad_clip must be >= 0 (0/null = no clipping), got -1.0"),
    "train/folders-missing": ((*TRAIN, "data=folders_train", "data.sets.folders.root={d}/nope"),
                              "{d}/nope: data folder not found"),
    # ---------------------------------------------------------------- convert
    "convert/no-arguments": (("convert",), "the following arguments are required: src, dst"),
    "convert/missing": (("convert", "{d}/nope.pth", "{o}/c.pth"), "{d}/nope.pth: checkpoint file not found"),
    "convert/random-bytes": (("convert", "{d}/random.safetensors", "{o}/c.pth"),
                             ("{d}/random.safetensors: not a readable safetensors file (Error while deserializing "
                             "header: header too large)")),
    "convert/empty": (("convert", "{d}/empty.pth", "{o}/c.pth"), "{d}/empty.pth: empty checkpoint file (0 bytes)"),
    "convert/image": (("convert", "{d}/first.png", "{o}/c.pth"),
                      "{d}/first.png: not a readable torch checkpoint (corrupt pickle)"),
    "convert/same-file": (("convert", "{d}/random.pth", "{d}/random.pth"),
                          "{d}/random.pth: output would overwrite the input checkpoint"),
    "convert/hf-into-a-file": (("convert", "{d}/random.pth", "{d}/afile", "--to", "hf"),
                               "{d}/afile: exists and is a file, not a folder"),
    "convert/parent-is-file": (("convert", "{d}/random.pth", "{d}/afile/c.pth"),
                               "{d}/afile: exists and is a file, not a folder"),
    "convert/file-layout-into-folder": (("convert", "{d}/random.pth", "{d}/adir", "--to", "safetensors"),
                                        ("{d}/adir: is a folder; the safetensors layout is one file (name a file, or "
                                        "--to hf)")),
    "convert/unknown-suffix": (("convert", "{d}/random.pth", "{o}/c.bin"),
                               ("{o}/c.bin: cannot tell the output layout from the name; pass --to "
                               "{{original,hf,safetensors}}")),
    "convert/unknown-layout": (("convert", "{d}/random.pth", "{o}/c.pth", "--to", "zz"),
                               "--to: invalid choice: 'zz' (choose from 'original', 'hf', 'safetensors')"),
    # ---------------------------------------------------------------- benchmark
    "benchmark/repeats-string": (("benchmark", "--repeats", "abc"), "--repeats: invalid int value: 'abc'"),
    "benchmark/repeats-zero": (("benchmark", "--repeats", "0"), "--repeats must be >= 1 and --warmup >= 0"),
    "benchmark/threads-negative": (("benchmark", "--threads", "-2"), "--threads=-2: expected an integer >= 1"),
    "benchmark/shots-zero": (("benchmark", "--quality", "--shots", "0"), "--shots=0: expected an integer >= 1"),
    "benchmark/unknown-flag": (("benchmark", "--frob"), "unrecognized arguments: --frob"),
    "benchmark/precisions": (("benchmark", "--device", "cpu", "--quality", "--quality-model", "seggpt_tiny",
                              "--precisions", "fp8"), "--precisions: unknown ['fp8']; expected fp32, bf16, fp16"),
    "benchmark/device": (("benchmark", "--device", "tpu", "--quality"),
                         "device=tpu: expected auto, cpu, cuda or cuda:N"),
    "benchmark/quality-model": (("benchmark", "--device", "cpu", "--quality", "--quality-model", "nope"),
                                ("--quality-model nope: unknown model; expected one of default, painter_small, "
                                 "painter_small_stem, seggpt_tiny, seggpt_vit_large")),
    "benchmark/checkpoint-random": (("benchmark", "--device", "cpu", "--quality", "--quality-model", "seggpt_tiny",
                                     "--checkpoint", "{d}/random.pth"),
                                    "{d}/random.pth: not a readable torch checkpoint (corrupt pickle)"),
    "benchmark/json-is-folder": (("benchmark", "--device", "cpu", "--quality", "--json", "{d}/adir"),
                                 "--json {d}/adir: is a folder, not a file"),
    "benchmark/json-parent-is-file": (("benchmark", "--device", "cpu", "--quality", "--json", "{d}/afile/b.json"),
                                      "{d}/afile: exists and is a file, not a folder"),
    # ---------------------------------------------------------------- gpu-check
    "gpu-check/batches": (("gpu-check", "--batches", "0,8"), "--batches: expected integers >= 1, got '0,8'"),
    "gpu-check/video-size": (("gpu-check", "--video-size", "480"),
                             "--video-size: expected HxW (e.g. 480x854), got '480'"),
    "gpu-check/max-minutes": (("gpu-check", "--max-minutes", "-1"), "--max-minutes=-1.0: expected a number >= 0"),
    "gpu-check/repeats-string": (("gpu-check", "--repeats", "x"), "--repeats: invalid int value: 'x'"),
    "gpu-check/out-is-file": (("gpu-check", "--device", "cpu", "--model", "seggpt_tiny", "--out", "{d}/afile"),
                              "{d}/afile: exists and is a file, not a folder"),
    "gpu-check/device": (("gpu-check", "--device", "tpu", "--model", "seggpt_tiny", "--out", "{o}/g"),
                         "device=tpu: expected auto, cpu, cuda or cuda:N"),
    "gpu-check/model": (("gpu-check", "--device", "cpu", "--model", "nope", "--out", "{o}/g"),
                        ("unknown model 'nope'; available: default, painter_small, painter_small_stem, seggpt_tiny, "
                         "seggpt_vit_large")),
    "gpu-check/override": (("gpu-check", "--device", "cpu", "--model", "seggpt_tiny", "--override", "net.zz=1",
                            "--out", "{o}/g"),
                           ("--override net.zz=1: model seggpt_tiny cannot be built with it (TypeError: "
                           "SegGPT.__init__() got an unexpected keyword argument 'zz')")),
    # ---------------------------------------------------------------- serve (all fail before the server starts)
    "serve/port": ((*SERVE, "port=70000"), "port=70000: expected 1..65535"),
    "serve/strategy": ((*SERVE, "default_strategy=tuned"),
                       ("default_strategy=tuned: expected one of plain, spatial_ensemble, feature_ensemble (tuned is "
                       "chosen per request with a tuned prompt)")),
    "serve/seg-type": ((*SERVE, "default_seg_type=foo"), "default_seg_type=foo: expected semantic or instance"),
    "serve/batch-zero": ((*SERVE, "batch_size=0"), "batch_size=0: expected an integer >= 1"),
    "serve/log-level": ((*SERVE, "log_level=zz"),
                        "log_level=zz: expected one of critical, error, warning, info, debug, trace"),
    "serve/work-dir-is-file": ((*SERVE, "work_dir={d}/afile"), "{d}/afile: exists and is a file, not a folder"),
    "serve/checkpoint-random": ((*SERVE, "checkpoint={d}/random.pth"),
                                "{d}/random.pth: not a readable torch checkpoint (corrupt pickle)"),
}


@pytest.fixture(scope="module")
def inputs(data) -> Path:
    """``data`` plus the inputs of a few cases: unreadable masks, an output folder whose 00000.png is the first
    mask."""
    bad = data / "bad_masks"
    bad.mkdir(exist_ok=True)
    for p in (data / "masks").iterdir():
        (bad / p.name).write_bytes((data / "random.png").read_bytes())
    (data / "frames_masks").mkdir(exist_ok=True)
    (data / "frames_masks/00000.png").write_bytes((data / "first.png").read_bytes())
    return data


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line(case, inputs, tmp_path, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server started"))
    argv, expected = CASES[case]
    fill = {"d": inputs, "o": tmp_path / "out"}
    if argv[0] in ("propagate", "evaluate", "train") and not any(a.startswith("output_dir=") for a in argv):
        argv = (*argv, "output_dir={o}/run")
    before = _tree(inputs)
    r = run_cli(*[a.format(**fill) for a in argv])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert (r.returncode, lines) == (2, [f"error: {expected.format(**fill)}"]), r.stderr[-2000:]
    assert _tree(inputs) == before, "an input was modified"
