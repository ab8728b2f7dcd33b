"""``trials.jsonl``: one JSON object per candidate, appended, flushed and fsynced, so a kill loses nothing done.

A process killed while writing leaves at most a torn last line (no newline, or not JSON); :func:`load_trials`
detects it and :meth:`TrialStore.open` truncates the file to the last complete line before appending again.
A malformed line anywhere else means the file was damaged by something else: that is an error, not a repair.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError
from segfactory.search.limits import Limits

STATUSES = ("ok", "early-stopped", "rejected", "failed", "repeat")
TRAINED = ("ok", "early-stopped", "failed")  # what counts toward --budget (a repeat is not retrained)
FIELDS = ("index", "genotype", "key", "miou", "macc", "fwiou", "score", "latency_ms", "latency_source",
          "params", "macs", "reward", "status", "reason", "wall_s")


def load_trials(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """The complete trials in ``path`` and the byte length of the part that holds them (torn tail excluded)."""
    path = Path(path)
    if not path.exists():
        return [], 0
    lines = path.read_bytes().split(b"\n")
    lines.pop()  # what follows the last newline: b"" or a line whose write was interrupted
    trials, good = [], 0
    for i, raw in enumerate(lines):
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict) or not isinstance(obj.get("index"), int):
                raise ValueError("not a trial object")  # noqa: TRY004 - caught below
        except (ValueError, UnicodeDecodeError):
            if i == len(lines) - 1:
                break  # a damaged last line (e.g. zeros after a power cut): drop it as torn
            raise InputError(f"{path}: line {i + 1} is not a trial (the file is damaged)") from None
        trials.append(obj)
        good += len(raw) + 1
    return trials, good


class TrialStore:
    """Appends trials durably. ``open()`` first drops a torn last line, if any."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.trials: list[dict[str, Any]] = []
        self.torn_bytes = 0

    def open(self) -> list[dict[str, Any]]:
        self.trials, good = load_trials(self.path)
        if self.path.exists():
            size = self.path.stat().st_size
            if size > good:
                self.torn_bytes = size - good
                with open(self.path, "r+b") as f:
                    f.truncate(good)
                    f.flush()
                    os.fsync(f.fileno())
        return list(self.trials)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(_clean(record), allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.trials.append(record)


def _clean(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def trained_count(trials: list[dict[str, Any]]) -> int:
    """Candidates trained (what --budget counts): a promotion to a higher rung is not a new candidate."""
    return sum(1 for t in trials if t.get("status") in TRAINED and not t.get("rung"))


def best_trial(trials: list[dict[str, Any]], limits: Limits | None = None) -> dict[str, Any] | None:
    """The status-ok trial with the highest reward within ``limits`` (ties: the earliest), among those of the
    highest rung any such trial reached (rewards of different rungs are not comparable; see search.rungs)."""
    ok = [t for t in trials if t.get("status") == "ok" and t.get("reward") is not None
          and (limits is None or limits.admits(t))]
    if not ok:
        return None
    top = max(int(t.get("rung") or 0) for t in ok)
    return max((t for t in ok if int(t.get("rung") or 0) == top), key=lambda t: (t["reward"], -t["index"]))
