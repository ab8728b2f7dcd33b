"""The genotype sets of a lookup table and the one protocol whole models are measured with here.

Sets (genotype = ``sample_genotype(random.Random(seed))``, except the fitting set, which is the existing
``fit_genotypes``: the first draws of ``Random(1_000_000 + seed)``), kept disjoint by genotype key:

    fit         FIT_SEED_BASE        fits the predictor (and the segfactory.lut/1 overhead)
    selection   seeds 2,000,000+     chooses the predictor's form (predictor.choose_and_fit)
    evaluation  seeds 0-39 default   scored only: ``segfactory profile --check``, benchmarks/scripts/latency_predictor.py
    anchor      seed 9,000,000       timed beside every group (below); never scored

The protocol (the floor, the fitting, the evaluation and ``--check`` all use it): groups of :data:`GROUP`
genotypes, each group with the anchor first, timed interleaved in shuffled rounds (harness.measure_interleaved).
Each result keeps its median, its spread over rounds and its ratio to the anchor, so that groups measured
while the host ran faster or slower (measuring-here.md) can be put on one scale: ``ratio * anchor_ms``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError
from segfactory.factory.genotype import Genotype, sample_genotype

FIT_SEED_BASE = 1_000_000  # fitting genotypes come from Random(FIT_SEED_BASE + seed): disjoint from small seeds
SELECTION_SEED_BASE = 2_000_000
ANCHOR_SEED = 9_000_000
EVAL_SEEDS = (0, 39)  # inclusive; the default of profile --check and of the latency-predictor benchmark
GROUP = 9  # genotypes per interleaved group (plus the anchor): the state is saved after each group

Named = list[tuple[str, Genotype]]


def seed_genotype(seed: int) -> Genotype:
    return sample_genotype(random.Random(seed))


def fit_genotypes(count: int, seed: int = 0) -> list[Genotype]:
    rng = random.Random(FIT_SEED_BASE + seed)
    return [sample_genotype(rng) for _ in range(count)]


def anchor_genotype() -> Genotype:
    return seed_genotype(ANCHOR_SEED)


def fit_set(count: int, seed: int = 0) -> Named:
    return [(f"fit{i}", g) for i, g in enumerate(fit_genotypes(count, seed))]


def selection_set(count: int, exclude: set[str]) -> Named:
    """``count`` genotypes of seeds SELECTION_SEED_BASE, +1, ... whose keys are not in ``exclude``."""
    out: Named = []
    seed = SELECTION_SEED_BASE
    while len(out) < count:
        g = seed_genotype(seed)
        if g.key() not in exclude:
            out.append((f"seed{seed}", g))
            exclude = exclude | {g.key()}
        seed += 1
    return out


def seed_set(first: int, last: int) -> Named:
    return [(f"seed{s}", seed_genotype(s)) for s in range(first, last + 1)]


def parse_seeds(text: str, what: str = "--eval-seeds") -> tuple[int, int]:
    """``A-B`` (inclusive, A <= B) or ``A``."""
    first, sep, last = str(text).strip().partition("-")
    try:
        a, b = int(first), int(last) if sep else int(first)
    except ValueError:
        raise InputError(f"{what} {text!r} is not a seed range A-B (e.g. 0-39)") from None
    if a < 0 or b < a:
        raise InputError(f"{what} {text!r}: need 0 <= A <= B")
    return a, b


def describe_sets(fit_count: int, seed: int, selection: Named) -> dict[str, Any]:
    seeds = [int(n[4:]) for n, _ in selection]
    return {"fit": {"rule": f"first {fit_count} draws of random.Random({FIT_SEED_BASE + seed})"},
            "selection": {"rule": "first draw of random.Random(s)",
                          "seeds": [min(seeds), max(seeds)] if seeds else []},
            "evaluation": {"rule": "first draw of random.Random(s)", "seeds": list(EVAL_SEEDS)},
            "anchor": {"rule": "first draw of random.Random(s)", "seed": ANCHOR_SEED,
                       "key": anchor_genotype().key()}}


def measure_groups(named: Named, config: ModelConfig, input_size: tuple[int, int], *, threads: int,
                   done: dict[str, dict[str, Any]], save: Callable[[], None] | None = None, rounds: int = 5,
                   min_seconds: float = 2.0, warmup_ms: float = 200.0, deadline: float | None = None,
                   log: Callable[[str], None] | None = None) -> bool:
    """Measure the genotypes of ``named`` not yet in ``done`` with the protocol; True when all are done.

    ``done[name]`` gets ``key``, ``ms`` (median), ``ratio`` (to the group's anchor), ``anchor_ms``,
    ``round_min_ms``/``round_max_ms``, ``group`` and ``at`` (epoch seconds); ``save`` runs after each group.
    """
    from segfactory.benchmarks.models import measure_genotypes_ort

    anchor = anchor_genotype()
    if any(g.key() == anchor.key() for _, g in named):
        raise InputError(f"the anchor genotype (seed {ANCHOR_SEED}) cannot be measured as a set member")
    pending = [(n, g) for n, g in named if done.get(n, {}).get("key") != g.key()]  # a stale name is redone
    for i in range(0, len(pending), GROUP):
        if deadline is not None and time.monotonic() > deadline:
            return False
        group = pending[i:i + GROUP]
        stamp = time.time()
        results = measure_genotypes_ort([anchor] + [g for _, g in group], config, input_size, threads=threads,
                                        rounds=rounds, min_seconds=min_seconds, warmup_ms=warmup_ms,
                                        seed=len(done) + i)
        a = results[0]
        for (name, g), r in zip(group, results[1:]):
            done[name] = {"key": g.key(), "ms": r["median_ms"], "ratio": r["ratio_to_first"],
                          "anchor_ms": a["median_ms"], "round_min_ms": r["round_median_min_ms"],
                          "round_max_ms": r["round_median_max_ms"], "group": f"{stamp:.0f}", "at": stamp}
        if save:
            save()
        if log:
            log(f"measured {sum(n in done for n, _ in named)}/{len(named)} genotypes whole "
                f"({threads} thread(s), anchor {a['median_ms']:.2f} ms)")
    return all(done.get(n, {}).get("key") == g.key() for n, g in named)


def anchored_ms(row: dict[str, Any], anchor_ms: float | None) -> float:
    """A protocol measurement on the scale of ``anchor_ms`` (its raw median where there is no anchor)."""
    if anchor_ms and row.get("ratio"):
        return float(row["ratio"]) * anchor_ms
    return float(row["ms"])


def anchor_scale(rows: Sequence[dict[str, Any]]) -> float | None:
    """The median anchor time over the groups of ``rows`` (one value per group)."""
    from segfactory.benchmarks.stats import median

    per_group = {r.get("group"): r["anchor_ms"] for r in rows if r.get("anchor_ms")}
    return median(list(per_group.values())) if per_group else None
