"""``search pick``: the best candidate of a finished (or running) search under the user's own limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError, RunError
from segfactory.factory.io import read_json
from segfactory.search.limits import Limits
from segfactory.search.results import best_json, write_best
from segfactory.search.trials import best_trial, load_trials

NO_LIMITS = Limits()


def pick(run_dir: str | Path, limits: Limits = NO_LIMITS, *, out: str | Path | None = None,
         on_warning: Any = None) -> dict[str, Any]:
    """The best.json of the status-ok trial with the highest reward within ``limits``; written to ``out`` if given.

    ``on_warning(line)`` hears what the reading skipped (a torn last line of trials.jsonl)."""
    from segfactory.factory.io import check_writable

    run_dir = Path(run_dir)
    if out is not None:
        check_writable(out, "--out")
    if not (run_dir / "trials.jsonl").is_file():
        raise InputError(f"{run_dir} holds no trials.jsonl: not a search directory")
    run = read_json(run_dir / "run.json", "search run file")
    trials, good = load_trials(run_dir / "trials.jsonl")
    torn = (run_dir / "trials.jsonl").stat().st_size - good
    if torn and on_warning is not None:
        on_warning(f"skipped a torn last line of {run_dir / 'trials.jsonl'} ({torn} bytes): a search was killed "
                   "while writing it")
    best = best_trial(trials, limits)
    if best is None:
        ok = sum(1 for t in trials if t.get("status") == "ok")
        raise RunError(f"no status-ok candidate of {ok} in {run_dir}" + (f" meets {limits.describe()}"
                                                                          if limits else ""))
    if out is not None:
        write_best(run, best, Path(out))
    return best_json(run, best)
