"""``segfactory profile`` as a library call: enumerate the units, measure them (resumable), re-measure those taken
in the host's slow state, then measure the fitting and selection genotypes whole and fit the predictor.

The time each run took is kept in the table (``profile.sessions``): a table profiled in one continuous run
has one session that measured units (``profile.continuous``), which is how the benchmark wants it made.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from segfactory.benchmarks.lut.table import FORMAT, Lut, fit_overhead, units_by_frequency
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError, RunError


def open_lut(out: Path, config: ModelConfig, input_size: tuple[int, int], threads: int) -> Lut:
    """The table at ``out`` to resume (it must match), or a new one."""
    if out.exists():
        lut = Lut.load(out)
        lut.check(config, input_size, threads=threads, backend="ort")
        from segfactory.benchmarks.runners import cpu_description

        if lut.data.get("measured_by") == "agent" or lut.data.get("device") != cpu_description():
            raise InputError(f"lookup table {out} was measured on {lut.data.get('device')!r}, not on this host; "
                             "choose another --out")
        return lut
    return Lut.new(config, input_size, threads=threads, path=out)


def record_session(lut: Lut, started: float, wall_t0: float, **counts: Any) -> None:
    """Append this run's duration and work to ``profile.sessions``; update the totals."""
    prof = lut.data.setdefault("profile", {})
    sessions = prof.setdefault("sessions", [])
    sessions.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(wall_t0)),
                     "seconds": round(time.monotonic() - started, 1), "ended_epoch": round(time.time(), 1),
                     **counts})
    prof["seconds_total"] = round(sum(s["seconds"] for s in sessions), 1)
    unit_sessions = [s for s in sessions if s.get("units_measured")]
    prof["continuous"] = len(unit_sessions) == 1
    if unit_sessions:
        prof["units_seconds"] = unit_sessions[-1]["seconds"] if prof["continuous"] else None


def unit_progress(total: int, label: str):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True))
    task = bar.add_task("units", total=total)
    bar.start()
    return bar, task


def _sweep(lut: Lut, todo: list[str], config: ModelConfig, runs: int, deadline: float | None, progress: bool,
           log) -> int:
    """Measure ``todo`` in chunks (frequent deadline checks; the table is saved as bags finish)."""
    measured = 0
    bar = task = None
    if progress and todo:
        bar, task = unit_progress(len(todo), "profiling units")
    try:
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
    return measured


def run_profile(target: str, config: ModelConfig, input_size: tuple[int, int], out: str | Path, *,
                threads: int = 1, fit_models: int = 24, select_models: int = 16, seed: int = 0,
                minutes: float | None = None, runs: int = 15, rounds: int = 5, min_seconds: float = 2.0,
                progress: bool = True, log=None, device_url: str | None = None,
                device_token_file: str | Path | None = None, precision: str = "fp16") -> dict[str, Any]:
    """Measure every unit the search space can produce (most frequent first), re-measure the slow ones, then
    fit the predictor on ``fit_models`` whole genotypes and choose its form on ``select_models`` more.

    With ``device_url`` (a target measured on a device agent) the units are measured there (lut.remote)."""
    from segfactory.benchmarks.targets import canonical_target, target_class, targets_with
    from segfactory.factory.io import check_writable

    log = log or (lambda msg: print(msg, file=sys.stderr))
    check_writable(out, "--out")  # before any unit is measured
    name = canonical_target(target)
    kind = target_class(name)
    if threads < 1:
        raise InputError(f"--threads {threads} must be at least 1")
    if device_url is not None:
        if not kind.via_agent:
            raise InputError(f"target {name} is profiled on this host; --device-url is for "
                             f"{targets_with('via_agent')}")
        from segfactory.benchmarks.lut.remote import run_remote_profile

        return run_remote_profile(name, config, input_size, out, device_url=device_url,
                                  token_file=device_token_file, precision=precision, threads=threads,
                                  fit_models=fit_models, select_models=select_models, seed=seed, minutes=minutes,
                                  iterations=max(runs, 50), progress=progress, log=log)
    if not kind.profiled_here:
        raise RunError(f"profiling {name} needs measurements on that device: run 'segfactory agent serve' there "
                       "and give --device-url (and --device-token-file); only --target "
                       f"{targets_with('profiled_here')} is profiled locally")
    out = Path(out)
    lut = open_lut(out, config, input_size, threads)
    t0, wall0 = time.monotonic(), time.time()
    deadline = t0 + minutes * 60 if minutes else None
    sigs = units_by_frequency(config, input_size, seed=seed)
    lut.data["units_total"] = len(sigs)
    todo = lut.missing(sigs)
    log(f"{len(sigs)} unit signatures reachable at {input_size[0]}x{input_size[1]}; "
        f"{len(sigs) - len(todo)} already in {out}, {len(todo)} to measure ({threads} thread(s))")
    measured = _sweep(lut, todo, config, runs, deadline, progress, log)
    complete = not lut.missing(sigs)
    slow = None
    if complete and (measured or "slow_state" not in lut.data.get("profile", {})):
        from segfactory.benchmarks.lut.slow import recheck_slow

        slow = recheck_slow(lut, config, runs=runs, deadline=deadline, log=log)
    predictor = lut.data.get("predictor")
    if fit_models >= 2 and (predictor is None or (complete and (measured or (slow or {}).get("replaced")))):
        # Fit once early (the fitting genotypes' missing units are measured on demand, so a partial table that
        # is filled lazily works too), and again when this run completes the table. --minutes bounds the sweep
        # over the table, not this fixed-size fit (a few minutes at 360x480; resumable by group).
        predictor = fit_lut_predictor(lut, config, input_size, fit_models, select_models, seed, log=log,
                                      rounds=rounds, min_seconds=min_seconds)
    record_session(lut, t0, wall0, units_measured=measured, complete=complete)
    lut.save()
    return {"format": FORMAT, "out": str(out), "units_total": len(sigs), "units_measured_now": measured,
            "complete": complete, "overhead": lut.data.get("overhead"), "predictor": predictor_brief(predictor),
            "slow_state": lut.data.get("profile", {}).get("slow_state"), "threads": threads,
            "input_size": list(input_size), "seconds": time.monotonic() - t0,
            "profile_seconds_total": lut.data["profile"].get("seconds_total")}


def predictor_brief(predictor: dict[str, Any] | None) -> dict[str, Any] | None:
    if not predictor:
        return None
    chosen = [s for s in predictor.get("selection", [])
              if s["form"] == predictor["form"] and s["hyper"] == predictor["hyper"]]
    return {"form": predictor["form"], "hyper": predictor["hyper"], "fitted_on": len(predictor.get("fitted_on", [])),
            "selection_score": chosen[0] if chosen else None}


def whole_rows(lut: Lut, names: list[str]) -> list[dict[str, Any]]:
    return [lut.data["whole"][n] for n in names]


def fit_lut_predictor(lut: Lut, config: ModelConfig, input_size: tuple[int, int], count: int, select: int,
                      seed: int = 0, log=None, deadline: float | None = None, rounds: int = 5,
                      min_seconds: float = 2.0) -> dict[str, Any] | None:
    """Measure the fitting and selection genotypes whole (the protocol, resumable), then fit the predictor.

    Returns the predictor, or None when ``deadline`` came first (the measurements so far are in the table)."""
    from segfactory.benchmarks.lut.protocol import (
        anchor_genotype,
        anchor_scale,
        describe_sets,
        fit_set,
        measure_groups,
        selection_set,
    )

    fit = fit_set(count, seed)
    sel = selection_set(select, {g.key() for _, g in fit} | {anchor_genotype().key()})
    named = fit + sel
    lut.fill({u for _, g in named for u in lut.units(g, config)}, config)
    whole = lut.data.setdefault("whole", {})
    if log:
        log(f"measuring {len(fit)} fitting and {len(sel)} selection genotypes whole (interleaved, beside an anchor)")
    if not measure_groups(named, config, input_size, threads=lut.threads, done=whole, save=lut.save,
                          rounds=rounds, min_seconds=min_seconds, deadline=deadline, log=log):
        return None
    for name, _ in fit:
        whole[name]["set"] = "fit"
    for name, _ in sel:
        whole[name]["set"] = "selection"
    scale = anchor_scale(whole_rows(lut, [n for n, _ in named]))
    lut.data["anchor"] = {"key": anchor_genotype().key(), "ms": scale}
    lut.data["sets"] = describe_sets(count, seed, sel)
    lut.data["sets"]["fit"]["keys"] = [g.key() for _, g in fit]
    lut.data["sets"]["selection"]["keys"] = [g.key() for _, g in sel]
    return fit_from_whole(lut, config, fit, sel, scale)


def fit_from_whole(lut: Lut, config: ModelConfig, fit, sel, anchor_ms: float | None) -> dict[str, Any]:
    """Fit the overhead (format /1's numbers) and the predictor from the whole-model rows of ``fit``/``sel``."""
    from segfactory.benchmarks.lut.predictor import choose_and_fit
    from segfactory.benchmarks.lut.protocol import anchored_ms

    whole = lut.data["whole"]
    y_fit = [anchored_ms(whole[n], anchor_ms) for n, _ in fit]
    y_sel = [anchored_ms(whole[n], anchor_ms) for n, _ in sel]
    fit_overhead(lut, [g for _, g in fit], y_fit, config)
    rows_fit = [lut.features(g, config, fill=True) for _, g in fit]
    rows_sel = [lut.features(g, config, fill=True) for _, g in sel]
    predictor = choose_and_fit(rows_fit, y_fit, rows_sel, y_sel)
    predictor.update(fitted_on=[g.key() for _, g in fit + sel], fit_keys=[g.key() for _, g in fit],
                     selection_keys=[g.key() for _, g in sel], graph_level=lut.graph_level,
                     fitted_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    lut.data["predictor"] = predictor
    if lut.path:
        lut.save()
    return predictor
