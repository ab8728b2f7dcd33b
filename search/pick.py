"""``search pick``: the best candidate of a finished (or running) search under the user's own limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError, RunError
from segfactory.factory.io import read_json
from segfactory.search.trials import best_trial, load_trials


def pick(run_dir: str | Path, *, max_latency_ms: float | None = None, max_params: int | None = None,
         out: str | Path | None = None, max_latency_ratio: float | None = None) -> dict[str, Any]:
    """The best.json of the status-ok trial with the highest reward within the limits; written to ``out`` if given."""
    from segfactory.search.loop import best_json, write_best

    run_dir = Path(run_dir)
    if not (run_dir / "trials.jsonl").is_file():
        raise InputError(f"{run_dir} holds no trials.jsonl: not a search directory")
    run = read_json(run_dir / "run.json", "search run file")
    trials, _ = load_trials(run_dir / "trials.jsonl")
    best = best_trial(trials, max_latency_ms=max_latency_ms, max_params=max_params,
                      max_latency_ratio=max_latency_ratio)
    if best is None:
        ok = sum(1 for t in trials if t.get("status") == "ok")
        limits = ", ".join(x for x in (f"latency <= {max_latency_ms} ms" if max_latency_ms is not None else "",
                                        f"latency <= {max_latency_ratio} x arch0"
                                        if max_latency_ratio is not None else "",
                                        f"params <= {max_params}" if max_params is not None else "") if x)
        raise RunError(f"no status-ok candidate of {ok} in {run_dir}" + (f" meets {limits}" if limits else ""))
    if out is not None:
        write_best(run, best, Path(out))
    return best_json(run, best)
