"""``segfactory profile --device-url``: a lookup table measured through a loopback device agent (ORT backend)."""

from __future__ import annotations

import json
import random

import pytest
from segfactory.benchmarks.agent.client import health
from segfactory.benchmarks.agent.config import AgentConfig
from segfactory.benchmarks.agent.server import BackgroundAgent
from segfactory.benchmarks.lut.profile import run_profile
from segfactory.benchmarks.lut.protocol import fit_genotypes
from segfactory.benchmarks.lut.remote import run_remote_profile, unit_onnx
from segfactory.benchmarks.lut.table import Lut, predict_latency
from segfactory.benchmarks.lut.units import model_units
from segfactory.benchmarks.targets import get_target
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError, RunError
from segfactory.factory.genotype import sample_genotype

SIZE = (32, 32)
TOKEN = "lut-remote-test-token"
QUICK = {"iterations": 3, "warmup_ms": 0.0, "duration_s": 0.01, "fit_duration_s": 0.05, "progress": False,
         "select_models": 0}


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN)
    config = AgentConfig(host="127.0.0.1", port=0, token=TOKEN, backend="ort",
                         cache_dir=tmp_path_factory.mktemp("agent-cache"))
    with BackgroundAgent(config) as running:
        yield running.url, token_file


def config() -> ModelConfig:
    return ModelConfig.create(11, 48, 1, "none")


def test_unit_exports_are_one_input_and_reproducible():
    import onnx

    cfg = config()
    for sig in ("concat|96,32|8x8", "psum|48|4x4", "upsample|11|8x8>32x32"):
        data = unit_onnx(sig, cfg)
        assert data == unit_onnx(sig, cfg)  # seeded: the client cache and the agent cache can hit
        assert len(onnx.load_model_from_string(data).graph.input) == 1


def test_profile_through_agent_resume_and_predict(agent, tmp_path):
    url, token_file = agent
    cfg = config()
    out = tmp_path / "lut.json"
    logs: list[str] = []
    summary = run_remote_profile("jetson-orin-nano", cfg, SIZE, out, device_url=url, token_file=token_file,
                                 precision="fp16", fit_models=2, max_units=3, log=logs.append, **QUICK)
    assert summary["units_measured_now"] == 3 and not summary["complete"]
    lut = Lut.load(out)
    assert lut.data["measured_by"] == "agent" and lut.data["target"] == "jetson-orin-nano"
    assert lut.data["backend"] == "ort" and lut.data["precision"] == "fp16" and lut.data["backend_version"]
    assert lut.data["device"] == health(url, token_file)["device"]["name"]
    assert lut.data["per_call_ms"] > 0
    assert all(e["ms"] >= 0 and e["measured_ms"] >= e["ms"] for e in lut.entries.values())
    fit = fit_genotypes(2)
    assert set(lut.data["overhead"]["fit_keys"]) == {g.key() for g in fit}
    measurements = health(url, token_file)["measurements"]

    # resume: nothing re-measured (entries are kept; the agent sees no new measurement)
    again = run_remote_profile("jetson-orin-nano", cfg, SIZE, out, device_url=url, token_file=token_file,
                               precision="fp16", fit_models=2, max_units=0, log=logs.append, **QUICK)
    assert again["units_measured_now"] == 0
    assert Lut.load(out).entries.keys() == lut.entries.keys()
    assert health(url, token_file)["measurements"] == measurements
    assert (tmp_path / "lut.json.agent-cache").is_dir()

    # predict from it, directly and through the jetson target
    ms = predict_latency(fit[0], cfg, lut)
    assert ms > 0
    res = get_target("jetson-orin-nano", lut=out).latency(fit[0], cfg, SIZE)
    assert res.source == "lut" and res.ms == pytest.approx(ms)
    with pytest.raises(InputError, match="profiled for target jetson-orin-nano"):
        get_target("jetson-agx-orin", lut=out)
    with pytest.raises(InputError, match="not cpu"):
        get_target("cpu", lut=out)
    # a unit missing on a device table is never filled from this host
    other = sample_genotype(random.Random(5))
    assert lut.missing(model_units(other, cfg, SIZE))  # 3 of ~3900 units profiled plus the fitting genotypes'
    with pytest.raises(RunError, match="device agent"):
        predict_latency(other, cfg, lut, fill=True)

    # another precision on the same --out is refused, not mixed in
    with pytest.raises(InputError, match="precision"):
        run_remote_profile("jetson-orin-nano", cfg, SIZE, out, device_url=url, token_file=token_file,
                           precision="fp32", fit_models=0, max_units=0, **QUICK)
    assert json.loads(out.read_text())["precision"] == "fp16"


def test_profile_cli_paths(agent, tmp_path):
    url, token_file = agent
    with pytest.raises(InputError, match="jetson"):
        run_profile("cpu", config(), SIZE, tmp_path / "a.json", device_url=url, device_token_file=token_file)
    with pytest.raises(RunError, match="--device-url"):
        run_profile("jetson-orin-nx", config(), SIZE, tmp_path / "b.json")
    from click.testing import CliRunner
    from segfactory.benchmarks.cli import profile

    result = CliRunner().invoke(profile, ["--target", "jetson-orin", "--input-size", "32x32", "--out",
                                          str(tmp_path / "c.json"), "--num-classes", "11", "--agg-size", "48",
                                          "--sep-repeats", "1", "--encoder-weights", "none", "--fit-models", "0",
                                          "--minutes", "0.0001", "--device-url", url, "--device-token-file",
                                          str(token_file), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["backend"] == "ort" and summary["units_measured_now"] <= 1
    assert Lut.load(tmp_path / "c.json").data["target"] == "jetson-orin-nano"
