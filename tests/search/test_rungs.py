"""Rungs (successive halving): the promotion rule, the calibrated reward, the best trial of the highest rung, and
a search with rungs run whole, killed in a promotion and resumed, with training replaced by a fake executor."""

from __future__ import annotations

import json

import pytest
from segfactory.factory.errors import InputError
from segfactory.search.context import make_context
from segfactory.search.executors import LocalExecutor
from segfactory.search.loop import Search
from segfactory.search.options import SearchOptions
from segfactory.search.proxy import ProxyResult
from segfactory.search.rungs import CPU_LADDER, calibrated_score, next_promotion, parse_rungs, resolve_rungs
from segfactory.search.trials import best_trial, trained_count

RUNG_GAIN = 0.1  # the fake's longer schedule scores this much higher


def _trial(index, reward, rung=0, **extra):
    return {"index": index, "status": "ok", "reward": reward, "score": reward, "rung": rung, **extra}


def test_promotion_takes_the_top_fraction_not_yet_promoted_highest_rung_first():
    trials = [_trial(i, r) for i, r in enumerate([0.3, 0.9, 0.5, 0.7, 0.1, 0.8, 0.2, 0.6])]
    assert next_promotion(trials[:3], 2, 0.25, set()) is None  # floor(3 x 0.25) = 0
    t, rung = next_promotion(trials[:4], 2, 0.25, set())
    assert (t["index"], rung) == (1, 1)
    assert next_promotion(trials[:4], 2, 0.25, {1}) is None  # in flight
    trials.append(_trial(8, 0.95, rung=1, promoted_from=1))
    t, rung = next_promotion(trials, 2, 0.25, set())  # 8 at rung 0: the top 2 are 1 (done) and 5
    assert (t["index"], rung) == (5, 1)
    trials += [_trial(9, 0.85, rung=1, promoted_from=5), _trial(10, 0.7, rung=1, promoted_from=3),
               _trial(11, 0.6, rung=1, promoted_from=7)]
    t, rung = next_promotion(trials, 3, 0.25, set())  # three rungs: rung 1's best goes up first
    assert (t["index"], rung) == (8, 2)


def test_calibrated_score_moves_a_promotion_onto_rung_0s_scale():
    earlier = [_trial(5, 0.5, rung=1, rung_scores=[0.4, 0.5]), _trial(6, 0.7, rung=1, rung_scores=[0.6, 0.7])]
    later = _trial(9, 0.9, rung=1, rung_scores=[0.3, 0.9])
    # mean shift over 5, 6 and itself: (0.1 + 0.1 + 0.6) / 3
    assert calibrated_score([*earlier, later], later) == pytest.approx(0.9 - 0.8 / 3)
    assert calibrated_score([*earlier, later], earlier[0]) == pytest.approx(0.4)  # only itself: its rung-0 score


def test_best_trial_is_the_best_of_the_highest_rung_and_budget_counts_rung_0():
    trials = [_trial(0, 0.9), _trial(1, 0.5), _trial(2, 0.6, rung=1, promoted_from=1)]
    assert best_trial(trials)["index"] == 2
    assert trained_count(trials) == 2


def test_parse_and_resolve():
    assert parse_rungs("cpu-small, cpu-full") == CPU_LADDER
    for bad in ("cpu-small", "cpu-small,cpu-small", "cpu-small,nope"):
        with pytest.raises(InputError, match="--rungs"):
            parse_rungs(bad)
    ladder = resolve_rungs("auto", "auto", "cpu", 367, {"stage2_steps": 2})
    assert [r.name for r in ladder] == list(CPU_LADDER)
    assert ladder[0].settings.stage2_steps == 2 and ladder[1].settings.stage2_steps != 2  # overrides: rung 0
    assert resolve_rungs("auto", "auto", "cpu", 40, {}) == ()  # camvid-mini: cpu-small alone
    assert resolve_rungs("auto", "auto", "cuda", 367, {}) == ()  # the paper's preset on CUDA, unchanged
    assert resolve_rungs("auto", "cpu-full", "cpu", 367, {}) == ()  # an explicit preset
    with pytest.raises(InputError, match="not both"):
        resolve_rungs("cpu-small,cpu-full", "cpu-full", "cpu", 367, {})


class Interrupted(Exception):
    pass


def fake_train(job, stopper, stop_at_promotion: list[int]) -> ProxyResult:
    """A score from the genotype alone, RUNG_GAIN higher per rung; rung 0 passes the early stopper."""
    if job.rung and stop_at_promotion and stop_at_promotion.pop() == job.index:
        raise Interrupted  # killed while training a promotion
    g = job.proposal.genotype
    score = (sum(layer.repeats * (i + 1) for i, layer in enumerate(g.layers)) % 11 + 1) / 20 + RUNG_GAIN * job.rung
    checkpoints = [score / 2, score]
    if job.rung == 0:
        for k, v in enumerate(checkpoints):
            stopper.should_continue(k, v)
    return ProxyResult("ok", miou=score, macc=score, fwiou=score, score=score, checkpoints=checkpoints)


def run(out, budget: int, resume: bool = False, stop_at_promotion: list[int] | None = None) -> Search:
    from segfactory.factory.datasets import camvid_mini_path

    try:
        camvid_mini_path()
    except InputError as e:
        pytest.skip(str(e))
    options = SearchOptions(out=str(out), budget=budget, seed=3, rungs="test,cpu-small", promote=0.5,
                            encoder_weights="none", target="jetson-orin-nano", input_size=(64, 64), device="cpu",
                            proxy={"stage2_epochs": 1}, strategy="random")
    search = Search(make_context(options, resume), executor_factory=lambda s: LocalExecutor(
        lambda job: fake_train(job, s.stopper, stop_at_promotion or [])))
    search.run()
    return search


def _lines(d):
    return [json.loads(line) for line in (d / "trials.jsonl").read_text().splitlines()]


def test_search_with_rungs_promotes_keeps_both_scores_and_tells_the_strategy(tmp_path, monkeypatch):
    from segfactory.search.strategies import RandomSearch

    told = []  # the strategy hears every trial, promotions included (random's tell records nothing: count calls)
    monkeypatch.setattr(RandomSearch, "tell", lambda self, p, r: told.append((p.genotype.key(), r)))
    search = run(tmp_path / "a", 4)
    trials = _lines(tmp_path / "a")
    assert len(told) == len(trials)
    rung0 = [t for t in trials if t["rung"] == 0 and t["status"] == "ok"]
    promoted = [t for t in trials if t["rung"] == 1]
    assert trained_count(trials) == 4 and len(rung0) == 4
    assert len(promoted) == 3  # ASHA: at 2 rung-0 trials the top 1, at 3 a new top 1, at 4 the second of 2
    for p in promoted:
        source = next(t for t in trials if t["index"] == p["promoted_from"])
        assert p["rung_preset"] == "cpu-small" and source["rung_preset"] == "test"
        assert p["rung_scores"] == [source["score"], pytest.approx(source["score"] + RUNG_GAIN)]
        assert p["key"] == source["key"] and p["latency_ms"] == source["latency_ms"]
        earlier = [t["score"] for t in rung0 if t["index"] < p["index"]]
        assert source["score"] >= sorted(earlier)[-(len(earlier) // 2)]  # in the top half when promoted
    best = json.loads((tmp_path / "a" / "best.json").read_text())["trial"]
    assert best["rung"] == 1 and best["reward"] == max(p["reward"] for p in promoted)
    assert "rungs (top 0.5 promoted): test 4, cpu-small 3" in (tmp_path / "a" / "summary.md").read_text()
    assert search.ctx.rungs[1].name == "cpu-small"


def test_a_search_killed_in_a_promotion_resumes_to_the_same_trials(tmp_path):
    run(tmp_path / "whole", 4)
    whole = _lines(tmp_path / "whole")
    first_promotion = next(t["index"] for t in whole if t["rung"] == 1)
    with pytest.raises(Interrupted):
        run(tmp_path / "cut", 4, stop_at_promotion=[first_promotion])
    assert all(t["index"] < first_promotion for t in _lines(tmp_path / "cut"))
    run(tmp_path / "cut", 4, resume=True)
    cut = _lines(tmp_path / "cut")
    strip = ("wall_s", "cpu_s", "check_s", "latency_s")
    assert [{k: v for k, v in t.items() if k not in strip} for t in cut] == \
        [{k: v for k, v in t.items() if k not in strip} for t in whole]
