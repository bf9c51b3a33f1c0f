"""The GPU check's CPU path (painter_seg.jobs.gpu_check) at tiny sizes: every section runs and the report
holds its keys. The real check (ViT-L on CUDA) is run by hand: ``python tools/gpu_check.py``."""
from __future__ import annotations

import json

import pytest
import torch

from painter_seg.jobs import gpu_check

TINY = ["--device", "cpu", "--model", "seggpt_tiny", "--override", "net.img_size=[128,64]",
        "--override", "net.pretrain_img_size=64", "--batches", "1,2", "--ensemble", "2", "--agree-batch", "1",
        "--repeats", "1", "--warmup", "0", "--tune-batch", "1", "--tune-steps", "1", "--video-frames", "3",
        "--video-size", "48x64", "--video-context", "1"]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu_check")
    assert gpu_check.main([*TINY, "--out", str(out)]) == 0
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


@pytest.mark.timeout(300)
def test_cpu_path_runs_every_section(report):
    doc, _ = report
    s = doc["sections"]
    assert list(s) == list(gpu_check.SECTIONS)
    assert not [k for k, v in s.items() if "error" in v], s
    assert doc["meta"]["model"] == "seggpt_tiny" and doc["meta"]["canvas"] == [128, 64]
    assert doc["meta"]["device"] == "cpu" and doc["meta"]["precisions"][0] == "fp32"
    assert s["parity"]["ok"] and s["parity"]["max_abs_diff"] == 0.0  # CPU against CPU: the same call
    bf16 = s["precision"]["bf16"]  # measured only where this CPU has native bf16 (else minutes, emulated)
    if "bf16" in doc["meta"]["precisions"]:
        assert 0.0 <= bf16["same_pixels"] <= 1.0 and 0.0 <= bf16["fg_iou"] <= 1.0 and bf16["max_abs_diff"] >= 0
    else:
        assert "no native bf16" in bf16["skipped"]
    assert "skipped" in s["precision"]["fp16"]  # fp16 autocast is CUDA-only
    assert s["matmul"]["fp32"]["gflops"] > 0 and "square" not in s["matmul"]["fp32"]  # --mm-square 0 on CPU
    assert s["compile"] == {"skipped": "--compile off", "section_s": s["compile"]["section_s"],
                            "section_peak_mib": s["compile"]["section_peak_mib"]}


def test_throughput_rows(report):
    doc, _ = report
    rows = doc["sections"]["throughput"]["rows"]
    precisions = doc["meta"]["precisions"]
    assert [(r["precision"], r["strategy"], r["prompts"], r["targets"]) for r in rows] == [
        (p, *w) for p in precisions for w in (("plain", 1, 1), ("plain", 1, 2), ("feature_ensemble", 2, 1))]
    for r in rows:
        assert r["ms"] > 0 and r["targets_per_s"] == pytest.approx(r["targets"] / r["ms"] * 1e3, rel=1e-2)
        assert r["gflop"] > 0 and r["mm_fraction"] > 0 and r["peak_mib"] > 0
    plain = {r["targets"]: r["gflop"] for r in rows if r["strategy"] == "plain"}
    assert plain[2] == pytest.approx(2 * plain[1], rel=1e-3)  # independent targets: linear work


def test_tuning_video_and_summary(report):
    doc, md = report
    s, summary = doc["sections"], doc["summary"]
    assert s["tuning"]["steps"] == 1 and s["tuning"]["step_ms"] > 0
    assert s["tuning"]["precision"] == s["video"]["precision"] == doc["meta"]["auto_precision"]
    assert s["video"]["frames"] == 3 and s["video"]["frames_per_s"] > 0 and s["video"]["size"] == [48, 64]
    assert summary["parity_ok"] is True and summary["failed"] == []
    assert summary["tune_step_ms"] == s["tuning"]["step_ms"]
    assert summary["peak_mib"] >= max(r["peak_mib"] for r in s["throughput"]["rows"]) > 0
    assert "| precision | strategy |" in md and "| parity |" in md


def test_bad_arguments_are_usage_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--batches", "0,8"])
    assert e.value.code == 2 and "integers >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_check.main(["--video-size", "480"])
    if not torch.cuda.is_available():  # the default device is cuda: one error line, nothing written
        assert gpu_check.main(["--out", str(tmp_path)]) == 2
        assert "CUDA is not available" in capsys.readouterr().err and not any(tmp_path.iterdir())
