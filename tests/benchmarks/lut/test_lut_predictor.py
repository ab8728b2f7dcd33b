"""The predictor (issue 13): disjoint genotype sets checked by key, forms chosen on the selection set, graph
features, tables of format /1, slow-state re-measurement."""

from __future__ import annotations

import json
import math

import pytest
from segfactory.benchmarks.lut import predictor
from segfactory.benchmarks.lut.profile import fit_from_whole
from segfactory.benchmarks.lut.protocol import (
    ANCHOR_SEED,
    EVAL_SEEDS,
    anchor_genotype,
    fit_set,
    parse_seeds,
    seed_set,
    selection_set,
)
from segfactory.benchmarks.lut.table import FORMAT, Lut, assert_unseen, fit_keys, predict_latency
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError, RunError

SIZE = (32, 32)
CFG = ModelConfig.create(11, 48, 1, "none")


def test_the_sets_are_disjoint_by_key_and_selection_skips_taken_keys():
    fit = fit_set(6)
    evaluation = seed_set(*EVAL_SEEDS)
    taken = {g.key() for _, g in fit} | {anchor_genotype().key()}
    sel = selection_set(4, taken)
    keys = [{g.key() for _, g in s} for s in (fit, sel, evaluation)]
    assert len(keys[0]) == 6 and len(keys[1]) == 4 and len(keys[2]) == EVAL_SEEDS[1] - EVAL_SEEDS[0] + 1
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert anchor_genotype().key() not in keys[0] | keys[1] | keys[2]
    # a selection genotype whose key is taken is skipped, the next seed used instead
    first = sel[0][1].key()
    again = selection_set(4, taken | {first})
    assert first not in {g.key() for _, g in again} and again[0][0] == sel[1][0]
    assert parse_seeds("3-5") == (3, 5) and parse_seeds("7") == (7, 7)
    for bad in ("5-3", "a-b", "-1"):
        with pytest.raises(InputError, match="--eval-seeds"):
            parse_seeds(bad)
    assert ANCHOR_SEED not in range(*EVAL_SEEDS)


def _rows(n: int, seed: int):
    """Synthetic rows whose latency is the unit sum plus a cost per reorder and per unfused BN (known truth)."""
    import random

    rng = random.Random(seed)
    rows, y = [], []
    for _ in range(n):
        r = {"units_ms": rng.uniform(5, 20), "unit_nodes": rng.randint(80, 140), "nodes": rng.randint(60, 120),
             "act_mb": rng.uniform(50, 400)}
        r.update({f"k_{c}": float(rng.randint(0, 40)) for c in ("conv", "dwconv", "reorder", "bn", "pool")})
        rows.append(r)
        y.append(0.5 + 1.1 * r["units_ms"] + 0.05 * r["k_reorder"] + 0.03 * r["k_bn"])
    return rows, y


def test_choose_and_fit_prefers_the_graph_forms_when_the_graph_matters():
    fit_rows, fit_y = _rows(24, 1)
    sel_rows, sel_y = _rows(12, 2)
    model = predictor.choose_and_fit(fit_rows, fit_y, sel_rows, sel_y)
    assert model["form"] in predictor.GRAPH_FORMS
    sums = [t for t in model["selection"] if t["form"] == "sum"]
    best = max(model["selection"], key=lambda t: (t["within_10pct"], -t["mape"]))
    assert best["mape"] < sums[0]["mape"]
    test_rows, test_y = _rows(10, 3)
    assert predictor.scores(test_y, predictor.apply(model, test_rows))["mape"] < 0.03
    predictor.validate(json.loads(json.dumps(model)), "lookup table x.json")  # survives JSON
    # too few genotypes for the graph forms, or no selection set: the old forms
    small = predictor.choose_and_fit(fit_rows[:3], fit_y[:3], sel_rows[:2], sel_y[:2])
    assert small["form"] in ("sum", "sum+nodes")
    assert predictor.choose_and_fit(fit_rows[:5], fit_y[:5], [], [])["form"] == "sum+nodes"


@pytest.mark.parametrize("broken, fragment", [
    ({"form": "magic", "coef": [1.0]}, "not a fitted predictor"),
    ({"form": "kernels", "coef": [1.0, float("nan")]}, "not a fitted predictor"),
    ({"form": "ratio", "coef": [1.0, 1.0], "columns": ["a"], "center": [0.0, 1.0], "scale": [1.0]},
     "inconsistent"),
])
def test_a_broken_predictor_is_refused_on_load_in_one_line(tmp_path, broken, fragment):
    path = tmp_path / "lut.json"
    lut = Lut.new(CFG, SIZE, threads=1, path=path)
    lut.data["predictor"] = broken
    lut.save()
    with pytest.raises(InputError, match=fragment) as e:
        Lut.load(path)
    assert "\n" not in str(e.value) and "segfactory profile --out" in str(e.value)


def test_fit_and_selection_never_see_evaluation_genotypes(tmp_path):
    """The predictor is fitted on the fitting and selection rows only (by key), and an evaluation of a fitted
    genotype is refused; graph features come from the optimised whole graph."""
    lut = Lut.new(CFG, SIZE, threads=1, path=tmp_path / "lut.json")
    fit = fit_set(6)
    sel = selection_set(2, {g.key() for _, g in fit})
    evaluation = seed_set(0, 1)
    lut.fill({u for _, g in fit + sel + evaluation for u in lut.units(g, CFG)}, CFG, runs=3)
    for i, (name, g) in enumerate(fit + sel):  # measured whole (synthetic numbers: the set logic is the point)
        lut.data["whole"][name] = {"key": g.key(), "ms": 1.0 + 0.1 * i, "ratio": 1.0 + 0.1 * i,
                                   "set": "fit" if i < 6 else "selection"}
    # an evaluation row in the same table must not be fitted on: a wild value would move the fit if it were
    lut.data["whole"]["seed0"] = {"key": evaluation[0][1].key(), "ms": 1e6, "ratio": 1e6, "set": "evaluation"}
    model = fit_from_whole(lut, CFG, fit, sel, anchor_ms=1.0)
    assert set(model["fitted_on"]) == {g.key() for _, g in fit + sel}
    assert set(model["fit_keys"]) == {g.key() for _, g in fit}
    assert {g.key() for _, g in evaluation}.isdisjoint(fit_keys(lut))
    assert_unseen(lut, evaluation)
    with pytest.raises(RunError, match="fit0") as e:
        assert_unseen(lut, evaluation + fit[:1])
    assert "\n" not in str(e.value)
    pred = predict_latency(evaluation[1][1], CFG, Lut.load(tmp_path / "lut.json"))
    assert math.isfinite(pred) and pred < 1e3
    feats = lut.features(fit[0][1], CFG)
    assert feats["k_conv"] > 0 and feats["nodes"] > 0 and feats["act_mb"] > 0 and feats["units_ms"] > 0


def test_a_table_of_format_1_predicts_as_before_and_is_upgraded_keeping_its_entries(tmp_path):
    from segfactory.factory.zoo import resolve_arch

    g = resolve_arch("arch0")
    units = sorted(set(Lut.new(CFG, SIZE, threads=1).units(g, CFG)))
    old = {"format": "segfactory.lut/1", "device": "somewhere", "backend": "ort", "threads": 1,
           "precision": "fp32", "batch": 1, "input_size": list(SIZE),
           "config": {"num_classes": 11, "agg_size": 48, "sep_repeats": 1, "encoder_padding": "symmetric"},
           "overhead": {"intercept_ms": 0.5, "scale": 2.0, "per_node_ms": 0.0},
           "entries": {u: {"ms": 0.01, "nodes": 1} for u in units}}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    lut = Lut.load(path)
    n = len(lut.units(g, CFG))
    assert predict_latency(g, CFG, lut) == pytest.approx(0.5 + 2.0 * 0.01 * n)
    lut.save()
    again = json.loads(path.read_text())
    assert again["format"] == FORMAT and again["entries"] == old["entries"]
    assert predict_latency(g, CFG, Lut.load(path)) == pytest.approx(0.5 + 2.0 * 0.01 * n)


def test_entries_profiled_in_the_slow_state_are_measured_again(tmp_path):
    from segfactory.benchmarks.lut.measure import measure_units
    from segfactory.benchmarks.lut.slow import recheck_slow, slow_entries

    lut = Lut.new(CFG, SIZE, threads=1, path=tmp_path / "lut.json")
    fast = ["adapt|24>32|8x8", "resize|32|4x4>8x8"]
    slow = ["psum|32|8x8", "cat|32|8x8"]
    lut.entries.update(measure_units(fast, CFG, threads=1, runs=3))
    taken_slow = measure_units(slow, CFG, threads=1, runs=3)
    for e in taken_slow.values():  # as if the host had been in its slow state for this bag
        e["ref_ms"] *= 4.0
        e["ms"] *= 4.0
    lut.entries.update(taken_slow)
    assert slow_entries(lut) == sorted(slow)
    summary = recheck_slow(lut, CFG, runs=3)
    assert summary["flagged"] == 2 and summary["replaced"] == 2 and summary["still_slow"] == 0
    assert all(lut.entries[s]["remeasured"] == 1 and "slow" not in lut.entries[s] for s in slow)
    saved = Lut.load(tmp_path / "lut.json")
    assert saved.data["profile"]["slow_state"]["replaced"] == 2 and not slow_entries(saved)
