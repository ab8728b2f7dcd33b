"""What the strategy hears and what a trial records (issue 11): failures taught as reward 0, repeats of a network
not retrained nor counted, and latency on the cpu target measured beside arch0 in the same rounds."""

from __future__ import annotations

import json

import pytest
import torch
from segfactory.factory.genotype import Genotype
from segfactory.factory.zoo import ZOO
from segfactory.search.loop import run_search
from segfactory.search.options import SearchOptions

TINY = {"data": "camvid-mini", "preset": "test", "encoder_weights": "none", "threads": 1, "input_size": (64, 64), "seed": 0}


pytestmark = pytest.mark.usefixtures("camvid_mini")


def _trials(d):
    return [json.loads(line) for line in (d / "trials.jsonl").read_text().splitlines()]


def _relabelled(g: Genotype) -> Genotype:
    """The same network with its templates renumbered (and so a different genotype as written)."""
    d = g.to_dict()
    d["templates"] = [d["templates"][1], d["templates"][0], d["templates"][2]]
    for layer in d["layers"]:
        layer[2] = {0: 1, 1: 0}.get(layer[2], layer[2])
    return Genotype.from_dict(d)


def test_unused_or_renumbered_templates_share_the_key():
    g = ZOO["arch1"]
    unused = sorted(set(range(3)) - {layer.template for layer in g.layers})
    d = g.to_dict()
    if unused:
        d["templates"][unused[0]] = ["skip_connect", "global_average_pool", "cat"]
    changed = Genotype.from_dict(d)
    assert changed.key() == g.key() and _relabelled(g).key() == g.key() and _relabelled(g) != g
    one_template = Genotype.from_dict({**g.to_dict(), "layers": [[*layer[:2], 0, *layer[3:]]
                                                                 for layer in g.to_dict()["layers"]]})
    d = one_template.to_dict()
    d["templates"][1] = ["skip_connect", "skip_connect", "cat"]  # unused: same network, same key
    assert Genotype.from_dict(d).key() == one_template.key() and Genotype.from_dict(d) != one_template
    from segfactory.factory.config import ModelConfig
    from segfactory.factory.model import build_model

    config = ModelConfig.create(11, 8, 1, "none")
    torch.manual_seed(0)
    a = build_model(g, config, load_weights=False).state_dict()
    torch.manual_seed(0)
    b = build_model(_relabelled(g), config, load_weights=False).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical networks


def test_repeats_are_recorded_not_retrained_not_counted(tmp_path):
    genotypes = [ZOO["arch0"].to_dict(), _relabelled(ZOO["arch0"]).to_dict(), ZOO["arch1"].to_dict()]
    summary = run_search(SearchOptions(out=str(tmp_path / "r"), strategy="list", genotypes=genotypes, budget=2,
                                       target="jetson-orin-nano", **TINY))
    trials = _trials(tmp_path / "r")
    assert [t["status"] for t in trials] == ["ok", "repeat", "ok"] or trials[0]["status"] == "early-stopped"
    repeat = trials[1]
    assert repeat["repeat_of"] == 0 and repeat["key"] == trials[0]["key"] and repeat["score"] == trials[0]["score"]
    assert "steps" not in repeat  # nothing was trained for it
    assert summary["trained"] == 2 and summary["counts"]["repeat"] == 1


def test_failed_candidates_reach_the_strategy_with_reward_zero(tmp_path):
    """A time-limited candidate is failed (never early-stopped with a partial score) and the strategy is told 0."""
    out = tmp_path / "f"
    run_search(SearchOptions(out=str(out), strategy="evolution", budget=2, target="jetson-orin-nano",
                             proxy={"time_limit_s": 1e-6}, **TINY))
    trials = _trials(out)
    assert [t["status"] for t in trials] == ["failed", "failed"]
    assert all("time limit" in t["reason"] and t["score"] is None and t["reward"] is None for t in trials)
    state = torch.load(out / "state.pt", weights_only=True)
    assert [r for _, r in state["strategy"]["population"]] == [0.0, 0.0]


def test_cpu_latency_is_measured_beside_arch0(tmp_path):
    genotypes = [ZOO["arch1"].to_dict(), ZOO["arch0"].to_dict()]
    run_search(SearchOptions(out=str(tmp_path / "c"), strategy="list", genotypes=genotypes, budget=2,
                             target="cpu", **TINY))
    run = json.loads((tmp_path / "c" / "run.json").read_text())
    ref_ms = run["reference"]["latency_ms"]
    trials = [t for t in _trials(tmp_path / "c") if t["status"] in ("ok", "early-stopped", "failed")]
    assert len(trials) == 2
    for t in trials:
        assert t["latency_source"] == "measured"
        assert t["latency_raw_ms"] > 0 and t["latency_reference_ms"] > 0
        assert t["latency_ms"] == pytest.approx(t["latency_ratio"] * ref_ms)
    arch0 = trials[1]
    assert arch0["latency_ratio"] == pytest.approx(1.0, rel=0.25)  # arch0 beside arch0


def test_latency_screen_rejects_clear_cases_untimed(tmp_path):
    """Under a tight --max-latency-ratio, candidates predicted far over it from their multiply-adds are rejected
    without being timed; the rejections reach the strategy (reward 0) and stop the search at --max-rejections."""
    from segfactory.factory.errors import RunError

    with pytest.raises(RunError, match="consecutive"):
        run_search(SearchOptions(out=str(tmp_path / "s"), strategy="random", budget=2, target="cpu",
                                 max_latency_ratio=0.05, max_rejections=3, **TINY))
    trials = _trials(tmp_path / "s")
    assert [t["status"] for t in trials] == ["rejected"] * 3
    assert all("not timed" in t["reason"] and t["latency_ms"] is None for t in trials)


def test_this_hosts_table_times_only_candidates_near_the_limit(tmp_path, monkeypatch):
    """With a table's prediction: clearly under the limit is accepted untimed (source lut), clearly over is
    rejected untimed, near it is timed beside arch0 and records what the table predicted."""
    from segfactory.search.screen import LatencyScreen

    said = iter([0.5, 1.0, 2.0] * 20)  # x arch0, against a limit of 1.0: accept, time, reject, ...
    monkeypatch.setattr(LatencyScreen, "predicted_ratio", lambda self, g: next(said))
    summary = run_search(SearchOptions(out=str(tmp_path / "s"), strategy="random", budget=3, target="cpu",
                                       max_latency_ratio=1.0, latency_screen=100.0, max_rejections=10, **TINY))
    trials = _trials(tmp_path / "s")
    ref_ms = json.loads((tmp_path / "s" / "run.json").read_text())["reference"]["latency_ms"]
    accepted = [t for t in trials if t["latency_source"] == "lut"]
    timed = [t for t in trials if t.get("latency_predicted_ratio") is not None]
    rejected = [t for t in trials if "lookup table" in (t.get("reason") or "")]
    assert accepted and timed and rejected
    assert all(t["latency_ratio"] == 0.5 and t["latency_ms"] == pytest.approx(0.5 * ref_ms)
               and "latency_s" not in t for t in accepted)
    assert all(t["latency_source"] == "measured" and t["latency_s"] > 0 and t["latency_predicted_ratio"] == 1.0
               for t in timed)
    assert all(t["status"] == "rejected" and t["latency_ms"] is None for t in rejected)
    assert "rejected untimed" in summary["latency_screen"]


def test_host_table_is_found_only_for_this_host_and_when_complete(monkeypatch):
    from segfactory.benchmarks.lut.cache import find_host_table, host_table_path
    from segfactory.benchmarks.lut.table import Lut
    from segfactory.benchmarks.runners import cpu_description
    from segfactory.factory.config import ModelConfig

    config, size = ModelConfig.create(11), (64, 64)
    lut, why = find_host_table(config, size, 1)
    assert lut is None and "segfactory profile --target cpu" in why
    table = Lut.new(config, size, threads=1, path=host_table_path(size, 1, config))
    table.data["device"] = "Another CPU (2 logical cores)"
    table.save()
    assert "measured on Another CPU" in find_host_table(config, size, 1)[1]
    table.data["device"] = cpu_description()
    table.save()
    assert "incomplete" in find_host_table(config, size, 1)[1]
    assert "no table of this host" in find_host_table(ModelConfig.create(11, agg_size=48), size, 1)[1]
    assert "no table of this host" in find_host_table(config, size, 2)[1]  # another thread count
