"""Device tables on jetson-* targets (issue 13.4): --lut alone predicts (estimated, warned, where units are
missing), --lut with --device-url fills the table lazily through the agent (loopback, ORT backend), once;
--verify-every logs the error; an unreachable agent or a unit that fails to build falls back, losing nothing."""

from __future__ import annotations

import json
import random

import pytest
from segfactory.benchmarks.agent.client import health
from segfactory.benchmarks.agent.config import AgentConfig
from segfactory.benchmarks.agent.server import BackgroundAgent
from segfactory.benchmarks.lut.remote import run_remote_profile
from segfactory.benchmarks.lut.table import Lut
from segfactory.benchmarks.targets import get_target
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError
from segfactory.factory.genotype import sample_genotype

SIZE = (32, 32)
TOKEN = "lut-device-test-token"
CFG = ModelConfig.create(11, 48, 1, "none")
QUICK = {"iterations": 3, "warmup_ms": 0.0, "duration_s": 0.01, "fit_duration_s": 0.05, "progress": False}


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN)
    config = AgentConfig(host="127.0.0.1", port=0, token=TOKEN, backend="ort",
                         cache_dir=tmp_path_factory.mktemp("agent-cache"))
    with BackgroundAgent(config) as running:
        yield running.url, token_file


@pytest.fixture(scope="module")
def profiled(agent, tmp_path_factory):
    """A device table of the loopback agent with no units yet (its per-call cost measured)."""
    url, token_file = agent
    out = tmp_path_factory.mktemp("profiled") / "orin.lut.json"
    run_remote_profile("jetson-orin-nano", CFG, SIZE, out, device_url=url, token_file=token_file,
                       fit_models=0, max_units=0, log=lambda m: None, **QUICK)
    return out.read_text()


@pytest.fixture()
def empty_table(profiled, tmp_path):
    out = tmp_path / "orin.lut.json"
    out.write_text(profiled)
    return out


def _measurements(agent) -> int:
    return health(*agent)["measurements"]


def test_lut_alone_estimates_a_candidate_with_missing_units_with_a_warning(empty_table, capsys):
    target = get_target("jetson-orin-nano", lut=empty_table)
    res = target.latency(sample_genotype(random.Random(1)), CFG, SIZE)
    assert res.source == "estimated" and res.ms > 0 and "lacks" in res.detail["fallback"]
    err = capsys.readouterr().err
    assert "WARNING" in err and "ESTIMATED" in err
    assert target.describe()["source"] == "lut"


def test_lut_and_agent_fill_exactly_the_missing_units_once(agent, empty_table, capsys):
    url, token_file = agent
    g = sample_genotype(random.Random(2))
    target = get_target("jetson-orin-nano", lut=empty_table, device_url=url, device_token_file=token_file,
                        verify_every=2)
    missing = set(target.lut.units(g, CFG))
    before = _measurements(agent)
    res = target.latency(g, CFG, SIZE)
    assert res.source == "lut" and res.ms > 0 and "verify" not in res.detail
    assert _measurements(agent) - before == len(missing)  # each missing unit once, nothing else
    saved = Lut.load(empty_table)
    assert missing <= set(saved.entries) and saved.data["format"] == "segfactory.lut/2"
    # a genotype sharing units measures only its new ones; the 2nd prediction is verified whole on the device
    g2 = sample_genotype(random.Random(3))
    new = set(target.lut.units(g2, CFG)) - set(saved.entries)
    before = _measurements(agent)
    res2 = target.latency(g2, CFG, SIZE)
    assert _measurements(agent) - before == len(new) + 1
    verify = res2.detail["verify"]
    assert verify["measured_ms"] > 0 and verify["predicted_ms"] == pytest.approx(res2.ms)
    logged = [json.loads(x) for x in (empty_table.parent / f"{empty_table.name}.verify.jsonl").read_text()
              .splitlines()]
    assert logged[-1]["key"] == g2.key() and "error" in logged[-1]
    assert "verify" in capsys.readouterr().err
    # another process with the saved table: nothing measured again (cached on both sides)
    before = _measurements(agent)
    again = get_target("jetson-orin-nano", lut=empty_table, device_url=url, device_token_file=token_file)
    assert again.latency(g, CFG, SIZE).ms == pytest.approx(res.ms)
    assert _measurements(agent) == before


def test_unreachable_agent_or_a_unit_that_fails_falls_back_and_keeps_the_table(agent, empty_table, monkeypatch,
                                                                                capsys):
    url, token_file = agent
    g = sample_genotype(random.Random(4))
    kept = empty_table.read_text()
    dead = get_target("jetson-orin-nano", lut=empty_table, device_url="http://127.0.0.1:9",
                      device_token_file=token_file)
    res = dead.latency(g, CFG, SIZE)
    assert res.source == "estimated" and "unreachable" in res.detail["fallback"]
    assert empty_table.read_text() == kept
    from segfactory.benchmarks.lut import remote

    real = remote.unit_onnx
    calls = []

    def flaky(sig, config):
        calls.append(sig)
        if len(calls) > 2:  # two units go through, then one cannot be built
            raise RuntimeError("boom\nsecond line")
        return real(sig, config)

    monkeypatch.setattr(remote, "unit_onnx", flaky)
    target = get_target("jetson-orin-nano", lut=empty_table, device_url=url, device_token_file=token_file)
    res = target.latency(g, CFG, SIZE)
    assert res.source == "estimated" and "could not be built" in res.detail["fallback"]
    assert "\n" not in res.detail["fallback"]
    assert set(calls[:2]) <= set(Lut.load(empty_table).entries)  # what was measured is saved
    assert "ESTIMATED" in capsys.readouterr().err


def test_wrong_agent_and_bad_combinations_are_one_line_input_errors(agent, empty_table):
    url, token_file = agent
    data = json.loads(empty_table.read_text())
    data["device"] = "another board"
    other = empty_table.parent / "other.lut.json"
    other.write_text(json.dumps(data))
    target = get_target("jetson-orin-nano", lut=other, device_url=url, device_token_file=token_file)
    with pytest.raises(InputError, match="give the agent of the table's device"):
        target.latency(sample_genotype(random.Random(5)), CFG, SIZE)
    for kwargs in ({"lut": empty_table}, {"device_url": url}, {}):
        with pytest.raises(InputError, match="--verify-every needs"):
            get_target("jetson-orin-nano", verify_every=3, **kwargs)
    with pytest.raises(InputError, match="--verify-every needs"):
        get_target("cpu", verify_every=3)
    with pytest.raises(InputError, match="at least 1"):
        get_target("jetson-orin-nano", lut=empty_table, device_url=url, verify_every=0)


def test_a_device_table_of_format_1_is_upgraded_by_profile_keeping_its_entries(agent, empty_table):
    """``segfactory profile --device-url`` on a table of today's format: the predictor is fitted from whole models
    measured on the device; no entry is lost or measured again."""
    url, token_file = agent
    target = get_target("jetson-orin-nano", lut=empty_table, device_url=url, device_token_file=token_file)
    target.latency(sample_genotype(random.Random(6)), CFG, SIZE)
    data = json.loads(empty_table.read_text())
    old_entries = data["entries"]
    for k in ("predictor", "sets", "whole", "anchor", "profile"):
        data.pop(k, None)
    data["format"] = "segfactory.lut/1"
    empty_table.write_text(json.dumps(data))
    summary = run_remote_profile("jetson-orin-nano", CFG, SIZE, empty_table, device_url=url, token_file=token_file,
                                 fit_models=2, select_models=1, max_units=0, log=lambda m: None, **QUICK)
    lut = Lut.load(empty_table)
    assert lut.data["format"] == "segfactory.lut/2" and summary["predictor"]["fitted_on"] == 3
    assert all(lut.entries[k] == v for k, v in old_entries.items())
    assert {w["set"] for w in lut.data["whole"].values()} == {"fit", "selection"}
    assert lut.data["profile"]["sessions"][-1]["seconds"] >= 0
