"""``state.pt``: the strategy, the early stopper and the proposals in flight, written atomically.

It is saved after each proposal and each trial, so ``kill -9`` loses at most the candidate in progress, which a
resume re-runs with the same genotype and seed. ``controller.pt`` (PPO) holds the controller's weights alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError
from segfactory.search.early_stop import EarlyStopper

STATE_FORMAT = "segfactory.search-state/1"


def save_state(out: Path, strategy, stopper: EarlyStopper, next_index: int, pending: dict[int, dict],
               elapsed_s: float = 0.0, run_s: dict[str, float] | None = None) -> None:
    """``elapsed_s``: the search's wall time over every part so far (what --minutes counts); ``run_s``: seconds of
    the run's own work outside any trial (preparing the stage-1 cache, timing arch0), by part."""
    import torch
    from segfactory.factory.io import atomic_write

    state = {"format": STATE_FORMAT, "strategy": strategy.state_dict(), "stopper": stopper.state_dict(),
             "next_index": next_index, "pending": {str(k): v for k, v in pending.items()}, "elapsed_s": elapsed_s,
             "run_s": dict(run_s or {})}
    atomic_write(out / "state.pt", lambda p: torch.save(state, p))
    if getattr(strategy, "name", "") == "ppo":
        atomic_write(out / "controller.pt", lambda p: torch.save(
            {"format": "segfactory.controller/1", "feedback": strategy.controller.feedback,
             "state_dict": strategy.controller.state_dict()}, p))


def load_state(out: Path) -> dict[str, Any] | None:
    path = out / "state.pt"
    if not path.is_file():
        return None
    from segfactory.factory.io import load_torch_file

    try:
        state = load_torch_file(path, "search state file")
    except InputError as e:
        raise InputError(f"{e}; delete it to rebuild the state from trials.jsonl") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise InputError(f"{path} is not a {STATE_FORMAT} file")
    return state
