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


def finish(ctx: RunContext, trials: list[dict[str, Any]]) -> dict[str, Any]:
    from segfactory.search.report import write_reports

    best = best_trial(trials)
    if best is not None:
        write_best(ctx, best)
    write_reports(ctx.out, trials, ctx.run_json())
    counts = {s: sum(1 for t in trials if t.get("status") == s) for s in STATUSES}
    wall = [t["wall_s"] for t in trials if t.get("status") in TRAINED and t.get("wall_s") is not None]
    return {
        "out": str(ctx.out),
        "trials": len(trials),
        "trained": trained_count(trials),
        "counts": counts,
        "best": best,
        "seconds_per_candidate": (sum(wall) / len(wall)) if wall else None,
        "files": sorted(p.name for p in ctx.out.iterdir() if not p.name.startswith(".")),
        "latency_target_ms": ctx.reward_spec.latency_target_ms,
        "input_size": list(ctx.input_size),
    }
