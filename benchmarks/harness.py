"""The one timing loop, after trtexec (anchors.md §3.4, §3.9): warm-up by time, then at least N iterations
and at least T seconds, one inference in flight, thread count fixed by the runner and reported.

:func:`measure` times one runner; :func:`measure_interleaved` times several round by round in a shuffled
order, so that a host that flips between speed states (measuring-here.md) hits every model alike, and it
reports each model's spread over rounds and its per-round ratio to the first model.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from segfactory.benchmarks.runners import Runner
from segfactory.benchmarks.stats import median, summarize
from segfactory.factory.errors import InputError

FORMAT = "segfactory.bench/1"
# trtexec's defaults: --warmUp=200 (ms), --iterations=10, --duration=3 (s)
WARMUP_MS = 200.0
MIN_ITERATIONS = 10
MIN_SECONDS = 3.0


def _check(warmup_ms: float, min_iterations: int, min_seconds: float) -> None:
    if warmup_ms < 0 or min_seconds < 0:
        raise InputError(f"warm-up ({warmup_ms} ms) and duration ({min_seconds} s) must not be negative")
    if min_iterations < 1:
        raise InputError(f"min_iterations={min_iterations} must be at least 1")


def warm_up(runner: Runner, warmup_ms: float) -> int:
    """Run until ``warmup_ms`` of wall time has passed (at least once); returns the count."""
    n = 0
    t_end = time.perf_counter() + warmup_ms / 1000.0
    while True:
        runner.run_once()
        n += 1
        if time.perf_counter() >= t_end:
            return n


def _result(runner: Runner, samples: list[float], warmup_ms: float, wall_s: float) -> dict[str, Any]:
    info = runner.describe()
    out: dict[str, Any] = {"format": FORMAT, "model": runner.name}
    out.update(summarize(samples, batch=int(info.get("batch", 1))))
    out.update(info)
    out.setdefault("timing", "host wall clock per inference, one in flight")
    out.update({"warmup_ms": warmup_ms, "duration_s": wall_s, "latency_source": "measured"})
    return out


def measure(runner: Runner, *, warmup_ms: float = WARMUP_MS, min_iterations: int = MIN_ITERATIONS,
            min_seconds: float = MIN_SECONDS, max_iterations: int | None = None) -> dict[str, Any]:
    """Benchmark JSON (design.md) of ``runner``: warm-up by time, then >= ``min_iterations`` and >= ``min_seconds``."""
    _check(warmup_ms, min_iterations, min_seconds)
    warm_up(runner, warmup_ms)
    samples: list[float] = []
    t0 = time.perf_counter()
    while True:
        samples.append(runner.run_once())
        elapsed = time.perf_counter() - t0
        if len(samples) >= min_iterations and elapsed >= min_seconds:
            break
        if max_iterations is not None and len(samples) >= max_iterations:
            break
    return _result(runner, samples, warmup_ms, time.perf_counter() - t0)


def measure_interleaved(
    runners: Sequence[Runner],
    *,
    warmup_ms: float = WARMUP_MS,
    min_iterations: int = MIN_ITERATIONS,
    min_seconds: float = MIN_SECONDS,
    rounds: int = 10,
    seed: int = 0,
    on_round: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Time several runners round by round, each round in a fresh shuffled order.

    Every runner gets at least ``min_iterations`` iterations and ``min_seconds`` seconds in all, split over
    ``rounds`` rounds. Each result adds ``rounds``, ``round_median_min_ms``/``round_median_max_ms`` (the
    spread of the per-round medians) and ``ratio_to_first`` (median over rounds of this model's round
    median over the first model's).
    """
    _check(warmup_ms, min_iterations, min_seconds)
    if not runners:
        raise InputError("nothing to measure")
    if rounds < 1:
        raise InputError(f"rounds={rounds} must be at least 1")
    rng = random.Random(seed)
    for r in runners:
        warm_up(r, warmup_ms)
    per_round_iters = max(1, -(-min_iterations // rounds))
    per_round_s = min_seconds / rounds
    samples: list[list[float]] = [[] for _ in runners]
    round_medians: list[list[float]] = [[] for _ in runners]
    t0 = time.perf_counter()
    done = 0
    while True:
        order = list(range(len(runners)))
        rng.shuffle(order)
        for i in order:
            runner = runners[i]
            runner.run_once()  # one untimed call after switching models: caches belong to the previous one
            chunk: list[float] = []
            t_start = time.perf_counter()
            while len(chunk) < per_round_iters or time.perf_counter() - t_start < per_round_s:
                chunk.append(runner.run_once())
            samples[i] += chunk
            round_medians[i].append(median(chunk))
        done += 1
        if on_round:
            on_round(done, rounds)
        if done >= rounds and all(len(s) >= min_iterations for s in samples):
            break
    wall = time.perf_counter() - t0
    results = []
    for i, runner in enumerate(runners):
        res = _result(runner, samples[i], warmup_ms, wall)
        ratios = [a / b for a, b in zip(round_medians[i], round_medians[0]) if b > 0]
        res.update({"rounds": done, "round_median_min_ms": min(round_medians[i]),
                    "round_median_max_ms": max(round_medians[i]),
                    "ratio_to_first": median(ratios) if ratios else None})
        results.append(res)
    return results
