"""precision=auto: bf16 where the device runs it natively (CUDA with bf16, CPUs with avx512_bf16 / AMX),
else fp32; bf16 asked for on a CPU without it warns once. The CPU flags are monkeypatched: no test depends on
this machine's CPU or on bf16 speed."""
from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf

from painter_seg.errors import InputError
from painter_seg.utils import runtime
from tests.conftest import REPO

CPU = torch.device("cpu")


@pytest.fixture
def cpu(monkeypatch):
    """Set this process's CPU flags (and forget earlier one-time warnings)."""
    monkeypatch.setattr(runtime, "_warned", set())

    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(runtime, "cpu_flags", lambda *a: frozenset(flags))

    return set_flags


@pytest.mark.parametrize("flags, expected", [
    (("fpu", "sse2", "avx2", "fma"), "fp32"),  # AVX2-only (e.g. AMD EPYC Rome/Milan)
    (("avx2", "avx512f", "avx512_vnni"), "fp32"),  # AVX-512 without the bf16 extension
    (("avx2", "avx512f", "avx512_bf16"), "bf16"),
    (("avx2", "amx_tile", "amx_bf16"), "bf16"),  # Sapphire Rapids and later
])
def test_auto_on_cpu_follows_the_bf16_flags(cpu, flags, expected):
    cpu(*flags)
    assert runtime.resolve_precision("auto", CPU) == expected
    assert runtime.has_native_bf16(CPU) is (expected == "bf16")


def test_auto_on_cuda_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    asked = []

    def supported(including_emulation=True):
        asked.append(including_emulation)
        return including_emulation  # a V100 / T4: bf16 only through emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert runtime.resolve_precision("auto", torch.device("cuda:0")) == "fp32" and asked == [False]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # Ampere+
    assert runtime.resolve_precision("auto", "cuda") == "bf16"


def test_explicit_bf16_on_a_cpu_without_it_warns_once(cpu, caplog):
    cpu("avx2")
    with caplog.at_level(logging.WARNING, logger=runtime.__name__):
        assert runtime.resolve_precision("bf16", CPU) == "bf16"  # still honoured
        runtime.resolve_precision("bf16", CPU)
        with runtime.autocast(CPU, "bf16"):
            pass
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "slower" in warnings[0].getMessage()


@pytest.mark.parametrize("flags, precision", [(("avx512_bf16",), "bf16"), (("avx2",), "fp32"),
                                              (("avx2",), "auto")])
def test_no_warning_when_nothing_is_emulated(cpu, caplog, flags, precision):
    cpu(*flags)
    with caplog.at_level(logging.WARNING, logger=runtime.__name__):
        runtime.resolve_precision(precision, CPU)
    assert not caplog.records


def test_autocast_resolves_auto(cpu):
    cpu("avx2")
    with runtime.autocast(CPU, "auto"):
        assert not torch.is_autocast_enabled("cpu")
    cpu("amx_bf16")
    with runtime.autocast(CPU, "auto"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_unknown_precision_is_an_input_error():
    with pytest.raises(InputError, match="precision=fp8: expected one of auto, fp32, bf16, fp16"):
        runtime.resolve_precision("fp8", CPU)
    with pytest.raises(InputError):
        runtime.autocast(CPU, "half")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512_bf16\n")
    assert runtime.cpu_flags(info) == {"fpu", "sse2", "avx2", "avx512_bf16"}
    arm = tmp_path / "cpuinfo_arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert runtime.cpu_flags(arm) == {"fp", "asimd", "bf16"}
    assert runtime.cpu_flags(tmp_path / "missing") == frozenset()


def test_no_cpuinfo_falls_back_to_torch_probe(cpu, monkeypatch):
    cpu()  # no flags known
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert runtime.cpu_has_native_bf16()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not runtime.cpu_has_native_bf16()


@pytest.mark.parametrize("name", ["segment", "propagate", "evaluate", "tune_prompt"])
def test_entry_configs_default_to_auto(name):
    assert OmegaConf.load(REPO / "conf" / f"{name}.yaml").precision == "auto"


def test_predictor_accepts_auto(tiny_model):
    from painter_seg.apps.few_shot import FewShotSegmenter

    assert FewShotSegmenter(tiny_model, precision="auto").precision == "auto"
