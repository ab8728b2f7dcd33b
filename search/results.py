"""A search's results: ``best.json`` (rewritten whenever the best changes) and, at the end, the reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segfactory.search.context import RunContext
from segfactory.search.trials import STATUSES, TRAINED, best_trial, trained_count

BEST_FORMAT = "segfactory.search-best/1"


def best_json(ctx_or_run: Any, trial: dict[str, Any]) -> dict[str, Any]:
    """best.json: the genotype (loadable wherever a genotype is), the deployed ModelConfig and the trial."""
    run = ctx_or_run.run_json() if isinstance(ctx_or_run, RunContext) else ctx_or_run
    return {
        "format": BEST_FORMAT,
        "genotype": trial["genotype"],
        "model_config": run["deploy_config"],
        "input_size": run["input_size"],
        "target": run["target"],
        "reward": run["reward"],
        "trial": trial,
    }


def write_best(ctx_or_run: Any, trial: dict[str, Any], path: Path | None = None) -> Path:
    from segfactory.factory.io import atomic_write_json

    if path is None:
        path = ctx_or_run.out / "best.json"
    return atomic_write_json(path, best_json(ctx_or_run, trial))


TRIAL_PARTS = ("check_s", "latency_s", "stage1_s", "stage2_s", "val_s")  # what each trial records it spent


def time_breakdown(trials: list[dict[str, Any]], elapsed_s: float | None = None,
                   run_s: dict[str, float] | None = None) -> dict[str, Any]:
    """Where a search's wall time went: each trial part summed over trials, the rest of the trials' wall time
    (bookkeeping, a failed candidate's partial work), the run's own work (``run_s``: stage-1 cache, arch0's timing,
    the strategy's proposals and updates, saving the state) and what is left of ``elapsed_s`` (start-up, writing
    reports)."""
    parts = {k: sum(float(t.get(k) or 0.0) for t in trials) for k in TRIAL_PARTS}
    walls = sum(float(t.get("wall_s") or 0.0) for t in trials)
    parts["trial_other_s"] = max(0.0, walls - sum(parts.values()))
    parts.update({k: float(v) for k, v in (run_s or {}).items()})
    out: dict[str, Any] = {k: round(v, 1) for k, v in parts.items()}
    if elapsed_s is not None:
        out["unaccounted_s"] = round(max(0.0, elapsed_s - sum(parts.values())), 1)
        out["elapsed_s"] = round(elapsed_s, 1)
    rejected = [t for t in trials if t.get("status") == "rejected"]
    out["rejected_mean_s"] = round(sum(float(t.get("wall_s") or 0) for t in rejected) / len(rejected), 3) \
        if rejected else None
    return out


def finish(ctx: RunContext, trials: list[dict[str, Any]], elapsed_s: float | None = None,
           run_s: dict[str, float] | None = None) -> dict[str, Any]:
    from segfactory.search.report import write_reports

    best = best_trial(trials)
    if best is not None:
        write_best(ctx, best)
    times = time_breakdown(trials, elapsed_s, run_s)
    write_reports(ctx.out, trials, ctx.run_json(), times)
    counts = {s: sum(1 for t in trials if t.get("status") == s) for s in STATUSES}
    wall = [t["wall_s"] for t in trials if t.get("status") in TRAINED and t.get("wall_s") is not None
            and not t.get("rung")]
    trained = trained_count(trials)
    summary = {
        "out": str(ctx.out),
        "trials": len(trials),
        "trained": trained,
        "counts": counts,
        "best": best,
        "seconds_per_candidate": (sum(wall) / len(wall)) if wall else None,  # its own trial's wall time (rung 0)
        "candidates_per_hour": round(3600 * trained / elapsed_s, 1) if elapsed_s else None,  # everything counted
        "time": times,
        "files": sorted(p.name for p in ctx.out.iterdir() if not p.name.startswith(".")),
        "latency_target_ms": ctx.reward_spec.latency_target_ms,
        "input_size": list(ctx.input_size),
    }
    if ctx.rungs:
        from segfactory.search.rungs import rung_counts

        summary["rungs"] = rung_counts(trials, [r.name for r in ctx.rungs])
    return summary
