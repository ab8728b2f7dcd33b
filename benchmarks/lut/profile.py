"""``segfactory profile`` as a library call: enumerate the units, measure them (resumable), fit the overhead."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

from segfactory.benchmarks.lut.table import FORMAT, Lut, fit_overhead, units_by_frequency
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError, RunError
from segfactory.factory.genotype import sample_genotype

FIT_SEED_BASE = 1_000_000  # fitting genotypes come from Random(FIT_SEED_BASE + seed): disjoint from small seeds


def fit_genotypes(count: int, seed: int = 0):
    rng = random.Random(FIT_SEED_BASE + seed)
    return [sample_genotype(rng) for _ in range(count)]


def open_lut(out: Path, config: ModelConfig, input_size: tuple[int, int], threads: int) -> Lut:
    """The table at ``out`` to resume (it must match), or a new one."""
    if out.exists():
        lut = Lut.load(out)
        lut.check(config, input_size, threads=threads, backend="ort")
        from segfactory.benchmarks.runners import cpu_description

        if lut.data.get("device") != cpu_description():
            raise InputError(f"lookup table {out} was measured on {lut.data.get('device')!r}, not on this host; "
                             "choose another --out")
        return lut
    return Lut.new(config, input_size, threads=threads, path=out)


def run_profile(target: str, config: ModelConfig, input_size: tuple[int, int], out: str | Path, *,
                threads: int = 1, fit_models: int = 8, seed: int = 0, minutes: float | None = None,
                runs: int = 15, progress: bool = True, log=None, device_url: str | None = None,
                device_token_file: str | Path | None = None, precision: str = "fp16") -> dict[str, Any]:
    """Measure every unit the search space can produce (most frequent first), then fit the overhead.

    With ``device_url`` (jetson-* targets) the units are measured on that device agent (lut_remote)."""
    from segfactory.benchmarks.targets import ALIASES, TARGET_HELP

    from segfactory.factory.io import check_writable

    log = log or (lambda msg: print(msg, file=sys.stderr))
    check_writable(out, "--out")  # before any unit is measured
    name = ALIASES.get(target, target)
    if name not in TARGET_HELP:
        raise InputError(f"unknown target {target!r}; valid targets: {', '.join(TARGET_HELP)}")
    if threads < 1:
        raise InputError(f"--threads {threads} must be at least 1")
    if device_url is not None:
        if not name.startswith("jetson-"):
            raise InputError(f"target {name} is profiled on this host; --device-url is for jetson-* targets")
        from segfactory.benchmarks.lut.remote import run_remote_profile

        return run_remote_profile(name, config, input_size, out, device_url=device_url,
                                  token_file=device_token_file, precision=precision, threads=threads,
                                  fit_models=fit_models, seed=seed, minutes=minutes, iterations=max(runs, 50),
                                  progress=progress, log=log)
    if name != "cpu":
        raise RunError(f"profiling {name} needs measurements on that device: run 'segfactory agent serve' there "
                       "and give --device-url (and --device-token-file); only --target cpu is profiled locally")
    out = Path(out)
    lut = open_lut(out, config, input_size, threads)
    t0 = time.monotonic()
    sigs = units_by_frequency(config, input_size, seed=seed)
    lut.data["units_total"] = len(sigs)
    todo = lut.missing(sigs)
    log(f"{len(sigs)} unit signatures reachable at {input_size[0]}x{input_size[1]}; "
        f"{len(sigs) - len(todo)} already in {out}, {len(todo)} to measure ({threads} thread(s))")
    deadline = t0 + minutes * 60 if minutes else None
    measured = 0
    bar = task = None
    if progress and todo:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("profiling units"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       console=Console(stderr=True))
        task = bar.add_task("units", total=len(todo))
        bar.start()
    try:
        # chunks keep the deadline checks frequent; the table is saved atomically as bags finish
        chunk = 400
        for i in range(0, len(todo), chunk):
            if deadline and time.monotonic() > deadline:
                log(f"--minutes reached: {len(todo) - measured} units left; run the same command to resume")
                break
            measured += lut.fill(todo[i:i + chunk], config, runs=runs,
                                 on_progress=(lambda n: bar.advance(task, n)) if bar else None)
    finally:
        if bar:
            bar.stop()
        lut.save()
    complete = not lut.missing(sigs)
    overhead = lut.data.get("overhead")
    # Fit once early (the fitting genotypes' missing units are measured on demand, so a partial table that is
    # filled lazily works too), and again when this run completes the table.
    refit = lut.data.get("overhead") is None or (complete and measured > 0)
    if refit and fit_models >= 2:  # --minutes bounds the sweep over the table, not this fixed-size fit
        overhead = fit_lut_overhead(lut, config, input_size, fit_models, seed, log=log)
    lut.save()
    return {"format": FORMAT, "out": str(out), "units_total": len(sigs), "units_measured_now": measured,
            "complete": complete, "overhead": overhead, "threads": threads, "input_size": list(input_size),
            "seconds": time.monotonic() - t0}


def fit_lut_overhead(lut: Lut, config: ModelConfig, input_size: tuple[int, int], count: int, seed: int = 0,
                     log=None, rounds: int = 5) -> dict[str, Any]:
    """Measure ``count`` fitting genotypes (disjoint seeds) whole, interleaved, and fit intercept + scale."""
    from segfactory.benchmarks.lut.units import model_units
    from segfactory.benchmarks.models import measure_genotypes_ort

    genotypes = fit_genotypes(count, seed)
    missing = lut.missing(u for g in genotypes for u in model_units(g, config, input_size))
    if missing:
        lut.fill(missing, config)
    if log:
        log(f"fitting the per-model overhead on {count} genotypes (measured whole, interleaved)")
    results = measure_genotypes_ort(genotypes, config, input_size, threads=lut.threads, rounds=rounds)
    return fit_overhead(lut, genotypes, [r["median_ms"] for r in results], config)
