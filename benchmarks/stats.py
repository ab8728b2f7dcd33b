"""Timing statistics: trtexec's summary (min/max/mean/median/percentiles/std), rank and error measures.

Percentiles interpolate linearly between order statistics (numpy's default, ``method="linear"``), so a
p90 of ten samples lies between the 9th and the 10th. Pure Python: importable without numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from segfactory.factory.errors import InputError


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples``, linear interpolation between order statistics."""
    if not samples:
        raise InputError("percentile of an empty sample")
    if not 0 <= q <= 100:
        raise InputError(f"percentile q={q} is outside 0..100")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples_ms: Sequence[float], batch: int = 1) -> dict[str, float | int]:
    """trtexec-style summary of per-iteration latencies in ms; ``throughput`` is images per second.

    ``std_ms`` is the population standard deviation (as trtexec's coefficient of variance uses);
    ``cov`` = std / mean.
    """
    n = len(samples_ms)
    if n == 0:
        raise InputError("no timing samples to summarize")
    mean = sum(samples_ms) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in samples_ms) / n)
    return {
        "min_ms": min(samples_ms),
        "max_ms": max(samples_ms),
        "mean_ms": mean,
        "median_ms": percentile(samples_ms, 50),
        "p90_ms": percentile(samples_ms, 90),
        "p95_ms": percentile(samples_ms, 95),
        "p99_ms": percentile(samples_ms, 99),
        "std_ms": std,
        "cov": std / mean if mean > 0 else 0.0,
        "iterations": n,
        "throughput": 1000.0 * batch / mean if mean > 0 else 0.0,
    }


def median(xs: Sequence[float]) -> float:
    return percentile(xs, 50)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two paired samples (ties in either handled as in scipy's default)."""
    if len(x) != len(y):
        raise InputError(f"kendall_tau needs paired samples, got {len(x)} and {len(y)} values")
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx = (x[i] > x[j]) - (x[i] < x[j])
            dy = (y[i] > y[j]) - (y[i] < y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else float("nan")


def mape(measured: Sequence[float], predicted: Sequence[float]) -> float:
    """Mean absolute percentage error of ``predicted`` against ``measured``, as a fraction."""
    if len(measured) != len(predicted) or not measured:
        raise InputError("mape needs two non-empty paired samples")
    return sum(abs(p - m) / m for m, p in zip(measured, predicted)) / len(measured)


def share_within(measured: Sequence[float], predicted: Sequence[float], tolerance: float = 0.10) -> float:
    """Fraction of predictions within ``tolerance`` (relative) of the measurement."""
    if len(measured) != len(predicted) or not measured:
        raise InputError("share_within needs two non-empty paired samples")
    return sum(abs(p - m) <= tolerance * m for m, p in zip(measured, predicted)) / len(measured)
