"""Targets registry, error cases, and the roofline against hand-computed cases and published tier-A rows."""

from __future__ import annotations

import random

import pytest
from segfactory.benchmarks import roofline
from segfactory.benchmarks.roofline import SPECS, DeviceSpec, Kernel, KernelList, Params, estimate_ms
from segfactory.benchmarks.targets import (
    ALIASES,
    TARGETS,
    LatencyResult,
    Target,
    get_target,
    target_class,
    target_help,
    target_names,
)
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError, RunError
from segfactory.factory.genotype import sample_genotype
from segfactory.factory.zoo import resolve_arch

CFG = ModelConfig.create(encoder_weights="none")


def test_peaks_match_published_table():
    assert SPECS["jetson-agx-orin"].tensor_peak("fp16") / 1e12 == pytest.approx(42.6, rel=0.01)
    assert SPECS["jetson-orin-nano"].tensor_peak("fp16") / 1e12 == pytest.approx(16.7, rel=0.01)
    assert SPECS["jetson-orin-nx"].tensor_peak("int8") / 1e12 == pytest.approx(30.1, rel=0.01)


def test_roofline_hand_computed():
    spec = DeviceSpec("test", sms=1, gpu_ghz=1.0, bandwidth_gbs=100.0, mode="-")  # fp16 peak 2.048 TFLOP/s
    p = Params(eff_dense=0.5, eff_dw=0.5, eff_mem=0.5, t_kernel_us=10.0, t_fixed_us=100.0)
    # compute-bound conv: 2.048e9 FLOP at 1.024 TFLOP/s = 2 ms; 5e5 fp16 elements = 1e6 B at 50 GB/s = 0.02 ms
    conv = Kernel("conv", 2.048e9, 5e5)
    # memory-bound resize: 2.5e7 fp16 elements = 5e7 B at 50 GB/s = 1 ms
    mem = Kernel("memory", 0.0, 2.5e7)
    # depthwise on CUDA cores: 256 FLOP/clk x 1 GHz x 2 x 0.5 = 256 GFLOP/s; 2.56e8 FLOP = 1 ms
    dw = Kernel("dwconv", 2.56e8, 0.0)
    est = estimate_ms(KernelList([conv, mem, dw]), spec, "fp16", p)
    assert est == pytest.approx(0.1 + (2.0 + 0.01) + (1.0 + 0.01) + (1.0 + 0.01))
    # int8 doubles the tensor peak: the conv halves
    assert estimate_ms(KernelList([conv]), spec, "int8", p) == pytest.approx(0.1 + 1.0 + 0.01)
    # fp32 (TF32 on Orin): half the fp16 tensor peak, twice the bytes
    assert estimate_ms(KernelList([conv, mem]), spec, "fp32", p) == pytest.approx(0.1 + 4.01 + 2.01)


def test_roofline_tier_a_within_1_5x():
    rows = roofline.tier_a_report()
    assert len(rows) == len(roofline.TIER_A)
    for r in rows:
        assert 1 / 1.5 <= r["ratio"] <= 1.5, r


def test_unknown_target_lists_valid_names():
    with pytest.raises(InputError, match="valid targets: cpu, cuda, jetson-orin-nano"):
        get_target("jetson-tx2")
    assert "jetson-orin" in target_names()


@pytest.mark.parametrize("name", target_names())
def test_every_target_name_resolves_or_says_why_in_one_line(name):
    try:
        target = get_target(name)
    except (InputError, RunError) as e:  # cuda on a host without a GPU
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(target, Target) and target.name == ALIASES.get(name, name)
    assert target.describe()["target"] == target.name


def test_target_registry_names_help_and_duplicates():
    helps = target_help()
    assert list(helps) == [*TARGETS.names(), *ALIASES] and all(helps.values())
    assert helps["jetson-orin"] == "alias of jetson-orin-nano"
    with pytest.raises(ValueError, match="already registered"):
        TARGETS.register("cpu", Target)


def test_capabilities_are_class_attributes():
    """What callers ask of a target, answered by its class (an alias too), not by its name."""
    assert target_class("jetson-orin") is target_class("jetson-orin-nano")
    assert target_class("jetson-orin").via_agent and target_class("jetson-agx-orin").engines
    cpu, cuda = target_class("cpu"), target_class("cuda")
    assert cpu.profiled_here and cpu.bench_backend == "ort" and not cpu.via_agent and not cpu.engines
    assert not cuda.takes_lut and not cuda.profiled_here and cuda.bench_backend is None
    with pytest.raises(InputError, match="valid targets"):
        target_class("jetson-tx2")
    with pytest.raises(InputError, match="--lut is for cpu, jetson-orin-nano"):
        get_target("cuda", lut="table.json")


def test_jetson_alias_estimates_with_warning(capsys):
    t = get_target("jetson-orin")
    res = t.latency(resolve_arch("arch0"), CFG, (360, 480))
    assert isinstance(res, LatencyResult) and res.source == "estimated"
    assert 0.5 < res.ms < 50 and "ESTIMATED" in res.detail["warning"]
    err = capsys.readouterr().err
    assert "WARNING" in err and len(err.strip().splitlines()) == 1  # one line, however long (not a terminal)
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        res.ms = 1.0
    # bigger boards are not slower
    agx = get_target("jetson-agx-orin").latency(resolve_arch("arch0"), CFG, (360, 480)).ms
    assert agx < res.ms


def test_device_url_without_client_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "segfactory.benchmarks.agent.client", None)
    with pytest.raises(RunError, match="device agent client not available"):
        get_target("jetson-orin-nx", device_url="http://127.0.0.1:1")


def test_device_url_calls_the_client(monkeypatch):
    import sys
    import types

    calls = {}

    def measure_remote(url, token_file, onnx_bytes, settings):
        calls.update(url=url, n=len(onnx_bytes), settings=settings)
        return {"median_ms": 4.2, "backend": "trt"}

    mod = types.ModuleType("segfactory.benchmarks.agent.client")
    mod.measure_remote = measure_remote
    monkeypatch.setitem(sys.modules, "segfactory.benchmarks.agent.client", mod)
    t = get_target("jetson-agx-orin", device_url="http://dev:1", device_token_file="tok")
    g = sample_genotype(random.Random(3))
    res = t.latency(g, CFG.with_(sep_repeats=1), (64, 64))
    assert res == LatencyResult(4.2, "measured", {"median_ms": 4.2, "backend": "trt"})
    assert calls["url"] == "http://dev:1" and calls["n"] > 1000 and calls["settings"]["input_size"] == [64, 64]


def test_bad_combinations():
    with pytest.raises(InputError):
        get_target("cpu", device_url="http://x")
    with pytest.raises(InputError):
        get_target("cpu", threads=0)
    with pytest.raises(InputError):
        get_target("jetson-orin-nano", threads=2)


def test_cuda_target_without_gpu():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RunError, match="no CUDA device"):
        get_target("cuda")


def test_cpu_target_measures_tiny_model():
    t = get_target("cpu")
    t.min_seconds = 0.05
    res = t.latency(sample_genotype(random.Random(1)), CFG.with_(sep_repeats=1), (64, 64))
    assert res.source == "measured" and res.ms > 0 and res.detail["threads"] == 1
    assert res.detail["backend"] == "ort"


def test_estimate_warning_quotes_the_out_of_sample_figure_of_the_results_file():
    """benchmarks/scripts/fit_roofline.py --out-of-sample wrote these ratios; the warning must quote them."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "results" / "roofline_oos.json"
    if not path.exists():
        pytest.skip(f"{path} is absent (run benchmarks/scripts/fit_roofline.py --out-of-sample)")
    lomo = json.loads(path.read_text())["leave_one_model_out"]["summary"]
    lo, hi = lomo["min_ratio"], lomo["max_ratio"]
    dw_lo, dw_hi = lomo["not_computable_ranges"]["mobilenet_v2"]
    assert f"x{lo:.2f}-x{hi:.2f}" in roofline.OUT_OF_SAMPLE
    assert f"x{dw_lo:.2f}-x{dw_hi:.2f}" in roofline.OUT_OF_SAMPLE
    assert roofline.OUT_OF_SAMPLE in roofline.WARNING and "out of sample" in roofline.WARNING


def test_roofline_estimates_a_reference_model_too():
    """A build's baselines include LR-ASPP: without a table or a device, its latency is estimated like a genotype's
    (it used to fail: the estimate built every model as a genotype)."""
    from segfactory.benchmarks.targets import get_target
    from segfactory.factory.config import ModelConfig
    from segfactory.factory.reference import Reference

    lat = get_target("jetson-orin-nano").latency(Reference("lraspp_mobilenet_v3_large"),
                                                 ModelConfig.create(11, encoder_weights="none"), (64, 64))
    assert lat.source == "estimated" and lat.ms > 0
