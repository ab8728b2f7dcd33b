"""Entries profiled while the host ran slow: find them by their bag's reference unit, and measure them again.

Every bag times the reference unit beside its units (measure.py), so a bag measured in the host's slow state
(measuring-here.md: 2 threads run no faster than 1 there) shows a reference time far above the fast bags'.
Rescaling by the reference (Lut.unit_ms) puts such bags on one scale only partly, since the slow state does
not slow every kernel alike; so their units are measured again, and a new measurement replaces the old one
when its bag ran faster. The fast level is a low percentile of the bags' reference times, not their median:
a table profiled mostly in the slow state still has a fast level to return to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from segfactory.benchmarks.lut.table import Lut
from segfactory.factory.config import ModelConfig

SLOW_FACTOR = 1.3  # a bag whose reference took 30% longer than the fast level was measured slow
FAST_PERCENTILE = 20


def fast_reference_ms(lut: Lut) -> float | None:
    """The fast level: a low percentile of the reference times, one value per bag (its entries share it)."""
    from segfactory.benchmarks.stats import percentile

    refs = sorted({e["ref_ms"] for e in lut.entries.values() if e.get("ref_ms")})
    return percentile(refs, FAST_PERCENTILE) if refs else None


def slow_entries(lut: Lut, factor: float = SLOW_FACTOR) -> list[str]:
    fast = fast_reference_ms(lut)
    if fast is None:
        return []
    return sorted(s for s, e in lut.entries.items() if e.get("ref_ms") and e["ref_ms"] > factor * fast)


def recheck_slow(lut: Lut, config: ModelConfig, *, runs: int = 15, passes: int = 2, factor: float = SLOW_FACTOR,
                 deadline: float | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure the slow entries again (up to ``passes`` times), keep the faster bag's numbers; a summary.

    Entries still slow after the passes keep ``"slow": true``; the summary goes to ``profile.slow_state``.
    """
    from segfactory.benchmarks.lut.measure import measure_units

    flagged = slow_entries(lut, factor)
    summary: dict[str, Any] = {"factor": factor, "fast_ref_ms": fast_reference_ms(lut), "flagged": len(flagged),
                               "replaced": 0, "passes": 0}
    provider = "cpu" if lut.data["backend"] == "ort" else lut.data["backend"].split("-", 1)[1]
    todo = flagged
    for _ in range(passes):
        if not todo or (deadline is not None and time.monotonic() > deadline):
            break
        if log:
            log(f"{len(todo)} unit(s) were profiled in the host's slow state (their bag's reference unit took "
                f"> {factor:g}x the fast level): measuring them again")
        summary["passes"] += 1
        again = measure_units(todo, config, threads=lut.threads, provider=provider, runs=runs)
        for sig, new in again.items():
            old = lut.entries[sig]
            count = int(old.get("remeasured", 0)) + 1
            if new["ref_ms"] < old["ref_ms"]:
                lut.entries[sig] = {**new, "remeasured": count}
                summary["replaced"] += 1
            else:
                old["remeasured"] = count
        lut.invalidate()
        if lut.path:
            lut.save()  # a pass's numbers are kept even if the next one is cut short
        todo = slow_entries(lut, factor)
    still = set(slow_entries(lut, factor))
    for sig, e in lut.entries.items():
        if sig in still:
            e["slow"] = True
        else:
            e.pop("slow", None)
    summary["still_slow"] = len(still)
    lut.data.setdefault("profile", {})["slow_state"] = summary
    if lut.path:
        lut.save()
    return summary
