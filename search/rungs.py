"""Rungs: every feasible candidate trained cheaply, the best of them again on longer schedules (successive halving).

A search with rungs (``--rungs cpu-small,cpu-full``) proxy-trains every candidate at rung 0 (the first preset)
and promotes, asynchronously as ASHA does (Li et al., 2020), a candidate that ranks in the top ``--promote``
fraction of its rung's trained candidates to the next rung, where it is trained again from the start on that
rung's preset. A promotion is its own line in ``trials.jsonl`` (a new index) with::

    "rung": 1, "rung_preset": "cpu-full", "promoted_from": 17, "rung_scores": [0.412, 0.455]

(``rung_scores``: the candidate's score at each rung it reached, cheapest first; a rung-0 line has one.)
Only rung-0 lines count in ``--budget``; promotions cost time, not budget. The best trial is the best of the
highest rung reached (:func:`segfactory.search.trials.best_trial`).

What the strategy learns: a candidate's rung-0 reward when it is scored there, and, when it is promoted, its
reward at the higher rung told again, with the score moved onto rung 0's scale by the mean difference between
the two rungs' scores of the candidates scored at both (so a promoted candidate is not rewarded for the longer
schedule, only for what the longer schedule says about it). Each rung's reward in ``trials.jsonl`` is the
uncalibrated one: rewards are compared within a rung only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from segfactory.factory.errors import InputError

AUTO, OFF = "auto", "off"
CPU_LADDER = ("cpu-small", "cpu-full")  # what ``--rungs auto`` means for a CPU search on a real dataset
# cpu-full trains a candidate about 8x as long as cpu-small (66 s against 8 s on full CamVid, AMD host): promoting
# 1/8 spends about as long on the upper rung as on the cheap one, as Hyperband's brackets give each rung equal time
PROMOTE_DEFAULT = 0.125


@dataclass(frozen=True)
class Rung:
    name: str  # preset
    settings: Any  # ProxySettings

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.name, "proxy_settings": self.settings.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rung:
        from segfactory.search.presets import ProxySettings

        return cls(d["preset"], ProxySettings.from_dict(d["proxy_settings"]))


def parse_rungs(text: str) -> tuple[str, ...] | str:
    """``--rungs``: ``auto``, ``off`` or presets cheapest first (at least two, each once)."""
    from segfactory.search.presets import PRESETS

    text = text.strip()
    if text in (AUTO, OFF):
        return text
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise InputError(f"--rungs: unknown preset {unknown[0]!r} (presets: {', '.join(PRESETS.names())})")
    if len(names) < 2 or len(set(names)) != len(names):
        raise InputError(f"--rungs {text}: give at least two different presets, cheapest first, or auto or off")
    return names


def resolve_rungs(rungs: str, preset: str, device: str, train_images: int | None,
                  overrides: dict[str, Any]) -> tuple[Rung, ...]:
    """The search's rungs; () when off. ``auto``: :data:`CPU_LADDER` for a CPU search with ``--preset auto`` on
    a real dataset (where auto would pick cpu-full), else off. ``overrides`` (``--proxy-set``, ``--crop``, ...)
    apply to rung 0, the rung every candidate is trained at."""
    from segfactory.search.presets import AUTO as AUTO_PRESET
    from segfactory.search.presets import PRESETS, resolve_preset

    wanted = parse_rungs(rungs)
    if wanted == OFF:
        return ()
    if wanted == AUTO:
        if preset != AUTO_PRESET or resolve_preset(AUTO_PRESET, device, train_images)[0] != CPU_LADDER[-1]:
            return ()
        wanted = CPU_LADDER
    elif preset != AUTO_PRESET:
        raise InputError(f"give --preset {preset} or --rungs {rungs}, not both (with rungs, the first rung is the "
                         "preset every candidate is trained with)")
    first = PRESETS[wanted[0]].with_(**overrides) if overrides else PRESETS[wanted[0]]
    return (Rung(wanted[0], first), *(Rung(n, PRESETS[n]) for n in wanted[1:]))


def rung_of(trial: dict[str, Any]) -> int:
    return int(trial.get("rung") or 0)


def _ranked(trials: list[dict[str, Any]], rung: int) -> list[dict[str, Any]]:
    """Rung ``rung``'s scored trials, best reward first (ties: earliest)."""
    done = [t for t in trials if rung_of(t) == rung and t.get("status") == "ok" and t.get("reward") is not None]
    return sorted(done, key=lambda t: (-t["reward"], t["index"]))


def next_promotion(trials: list[dict[str, Any]], rungs: int, fraction: float,
                   busy: set[int]) -> tuple[dict[str, Any], int] | None:
    """ASHA's rule: from the highest rung down, a trial in the top ``fraction`` of its rung (floor of the count)
    not yet promoted nor being promoted (``busy``: indices of trials whose promotion is in flight); returns
    (trial, the rung to train it at) or None."""
    promoted = {t["promoted_from"] for t in trials if t.get("promoted_from") is not None} | busy
    for rung in range(rungs - 2, -1, -1):
        ranked = _ranked(trials, rung)
        for t in ranked[:math.floor(len(ranked) * fraction)]:
            if t["index"] not in promoted:
                return t, rung + 1
    return None


def calibrated_score(trials: list[dict[str, Any]], trial: dict[str, Any]) -> float:
    """A promoted ``trial``'s score on rung 0's scale: its score minus the mean difference between its rung's and
    rung 0's scores over the trials scored at both up to it (itself included; earlier indices only, so that a
    resumed search tells the strategy what the first run told it)."""
    rung = rung_of(trial)
    pairs = [t["rung_scores"] for t in trials if rung_of(t) == rung and t.get("status") == "ok"
             and t["index"] < trial["index"] and None not in (t.get("rung_scores") or [None])]
    pairs.append(trial["rung_scores"])
    shift = sum(p[rung] - p[0] for p in pairs) / len(pairs)
    return trial["rung_scores"][rung] - shift


def rung_counts(trials: list[dict[str, Any]], names: list[str]) -> dict[str, int]:
    """Scored or failed trials per rung, by preset name (``names``: the rungs' presets, cheapest first)."""
    from segfactory.search.trials import TRAINED

    return {name: sum(1 for t in trials if rung_of(t) == k and t.get("status") in TRAINED)
            for k, name in enumerate(names)}
