"""Stochastic early stopping of a candidate against the running reward at each checkpoint (method.md §4).

One performer per validation checkpoint keeps ``m``, an exponential moving average (0.99) of the values seen at
that checkpoint, starting at ``maxval``. A value above ``m`` continues; one below survives with probability
``max(0, 1 - (1 - v/m) / delta)``. ``delta`` shrinks by x0.9, 0.8, 0.7, 0.6 at the performer's 100th, 200th,
300th and 400th value. Fixed against upstream: the counter moves once per value (upstream moved it twice when
the value was above ``m`` and so skipped milestones), and the draws come from the stopper's own seeded RNG.
"""

from __future__ import annotations

import random
from typing import Any

DELTA_MILESTONES = {100: 0.9, 200: 0.8, 300: 0.7, 400: 0.6}


class EarlyStopper:
    def __init__(self, checkpoints: int, maxval: float = 0.01, delta: float = 0.9, seed: int = 0,
                 enabled: bool = True) -> None:
        self.enabled = enabled
        self.m = [float(maxval)] * checkpoints
        self.delta = [float(delta)] * checkpoints
        self.steps = [0] * checkpoints
        self.rng = random.Random(seed)

    def should_continue(self, checkpoint: int, value: float) -> bool:
        """Record ``value`` at ``checkpoint`` and decide whether the candidate goes on training."""
        k = checkpoint
        self.steps[k] += 1
        if self.steps[k] in DELTA_MILESTONES:
            self.delta[k] *= DELTA_MILESTONES[self.steps[k]]
        m = self.m[k]
        self.m[k] = 0.99 * m + 0.01 * value
        if not self.enabled or value > self.m[k]:
            return True
        u = self.rng.uniform(0.0, self.delta[k])
        return value > self.m[k] * (1.0 - u)

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {"m": list(self.m), "delta": list(self.delta), "steps": list(self.steps),
                "rng": [version, list(internal), gauss], "enabled": self.enabled}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m, self.delta, self.steps = list(state["m"]), list(state["delta"]), list(state["steps"])
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.enabled = bool(state.get("enabled", True))
