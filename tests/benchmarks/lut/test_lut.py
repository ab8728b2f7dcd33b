"""The lookup table: unit enumeration covers every genotype, bag profiling, prediction on 64x64, errors."""

from __future__ import annotations

import json
import random

import pytest
from segfactory.benchmarks.lut.measure import build_unit, pack_bags
from segfactory.benchmarks.lut.table import FORMAT, Lut, fit_overhead, predict_latency
from segfactory.benchmarks.lut.units import count_by_kind, enumerate_units, model_units
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError, RunError
from segfactory.factory.genotype import sample_genotype
from segfactory.factory.zoo import resolve_arch

SIZE = (64, 64)
CFG = ModelConfig.create(encoder_weights="none", sep_repeats=1, agg_size=48)


@pytest.fixture(scope="module")
def every_unit():
    return enumerate_units(CFG, SIZE)


def test_enumeration_covers_random_genotypes_and_the_zoo(every_unit):
    every = set(every_unit)
    counts = count_by_kind(every)
    assert set(counts) == {"encoder", "op", "adapt", "resize", "psum", "cat", "concat", "head", "upsample"}
    rng = random.Random(7)
    genotypes = [sample_genotype(rng) for _ in range(300)] + [resolve_arch("arch0"), resolve_arch("arch1")]
    for g in genotypes:
        missing = set(model_units(g, CFG, SIZE)) - every
        assert not missing, (g.key(), missing)


def test_model_units_follow_the_built_model():
    """The walk's shapes agree with the real decoder: every unit builds and the head sees the right channels."""
    import torch
    from segfactory.factory.model import build_model

    for seed in range(3):
        g = sample_genotype(random.Random(seed))
        units = model_units(g, CFG, SIZE)
        model = build_model(g, CFG, load_weights=False).eval()
        head = next(u for u in units if u.startswith("head|"))
        assert int(head.split("|")[1]) == model.decoder.head.pre[1].in_channels
        native = model(torch.zeros(1, 3, *SIZE), native=True)
        assert head.split("|")[2] == f"{native.shape[2]}x{native.shape[3]}"
        for u in units[:6]:
            module, shapes = build_unit(u, CFG)
            module.eval()(*[torch.zeros(s) for s in shapes])


def test_pack_bags_partitions(every_unit):
    bags = pack_bags(every_unit[:500], CFG, max_units=50)
    flat = [s for b in bags for s in b]
    assert sorted(flat) == sorted(every_unit[:500]) and max(len(b) for b in bags) <= 50


def test_fill_fit_predict_on_disjoint_genotypes(tmp_path):
    from segfactory.benchmarks.models import measure_genotypes_ort

    lut = Lut.new(CFG, SIZE, threads=1, path=tmp_path / "lut.json")
    rng = random.Random(11)
    fit = [sample_genotype(rng) for _ in range(2)]
    score = sample_genotype(random.Random(999))
    units = {u for g in fit + [score] for u in model_units(g, CFG, SIZE)}
    assert lut.fill(units, CFG, runs=3) == len(units)
    assert not lut.missing(units)
    saved = json.loads((tmp_path / "lut.json").read_text())
    assert saved["format"] == FORMAT and saved["threads"] == 1 and saved["config"]["sep_repeats"] == 1
    assert all(e["ms"] >= 0 for e in saved["entries"].values())
    measured = measure_genotypes_ort(fit + [score], CFG, SIZE, threads=1, rounds=1, min_seconds=0.1, warmup_ms=10)
    oh = fit_overhead(lut, fit, [m["median_ms"] for m in measured[:2]], CFG)
    assert score.key() not in oh["fit_keys"]
    pred = predict_latency(score, CFG, lut)
    assert pred > 0
    # tiny models on a shared CPU: only a loose sanity bound here; accuracy is benchmarks/latency_predictor.py
    assert 0.2 < pred / measured[2]["median_ms"] < 5
    lut.save()
    again = Lut.load(tmp_path / "lut.json")
    assert predict_latency(score, CFG, again) == pytest.approx(pred)


def test_missing_units_without_fill(tmp_path):
    lut = Lut.new(CFG, SIZE, threads=1, path=tmp_path / "lut.json")
    with pytest.raises(RunError, match="lacks"):
        predict_latency(resolve_arch("arch0"), CFG, lut)


def test_mismatched_and_corrupt_tables(tmp_path):
    lut = Lut.new(CFG, SIZE, threads=1, path=tmp_path / "lut.json")
    lut.save()
    with pytest.raises(InputError, match="sep_repeats=1"):
        predict_latency(resolve_arch("arch0"), CFG.with_(sep_repeats=2), Lut.load(tmp_path / "lut.json"))
    with pytest.raises(InputError, match="input 64x64"):
        lut.check(CFG, (128, 128))
    with pytest.raises(InputError, match="1 thread"):
        lut.check(CFG, SIZE, threads=2)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        Lut.load(bad)
    bad.write_text(json.dumps({"format": "something/1"}))
    with pytest.raises(InputError, match="format"):
        Lut.load(bad)
    data = json.loads((tmp_path / "lut.json").read_text())
    data["entries"] = {"op|x": {"ms": "fast"}}
    bad.write_text(json.dumps(data))
    with pytest.raises(InputError, match="entry"):
        Lut.load(bad)
    with pytest.raises(InputError, match="malformed"):
        build_unit("op|nonsense", CFG)


def test_bags_are_normalised_by_their_reference_unit(tmp_path):
    from segfactory.benchmarks.lut.measure import REFERENCE_UNIT, measure_units

    entries = measure_units(["adapt|24>32|16x16", "resize|32|8x8>16x16"], CFG, threads=1, runs=3)
    assert all(e["ref_ms"] > 0 for e in entries.values()) and REFERENCE_UNIT not in entries
    lut = Lut.new(CFG, SIZE, threads=1)
    # the same unit measured in a bag where the host ran 3x slower counts as in the median bag
    lut.entries.update({"a": {"ms": 3.0, "ref_ms": 3.0}, "b": {"ms": 1.0, "ref_ms": 1.0},
                        "c": {"ms": 2.0, "ref_ms": 2.0}})
    assert lut.reference_ms() == 2.0
    assert lut.unit_ms("a") == pytest.approx(2.0) and lut.unit_ms("b") == pytest.approx(2.0)
