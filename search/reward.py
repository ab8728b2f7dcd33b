"""The reward: the paper's score times MnasNet-style soft constraints on latency and size (a pure function).

``reward = score * (latency / T) ** w_lat * (params / P) ** w_params``. With both weights 0 it is the paper's
reward, the geometric mean of mIoU, mean accuracy and fwIoU. A negative weight (MnasNet uses -0.07) makes a
model twice as slow as the target lose ``1 - 2 ** -0.07`` = 4.7 % of its reward, and one twice as fast gain as much.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from segfactory.factory.errors import InputError

DEFAULT_LATENCY_WEIGHT = -0.07
DEFAULT_PARAMS_WEIGHT = 0.0


@dataclass(frozen=True)
class RewardSpec:
    """Targets and weights of the soft constraints; a weight of 0 switches its term off."""

    latency_target_ms: float | None = None
    latency_weight: float = DEFAULT_LATENCY_WEIGHT
    params_target: float | None = None
    params_weight: float = DEFAULT_PARAMS_WEIGHT

    def __post_init__(self) -> None:
        for name in ("latency_target_ms", "params_target"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise InputError(f"reward {name}={v!r} must be a positive number")
        for name in ("latency_weight", "params_weight"):
            v = getattr(self, name)
            if not math.isfinite(v):
                raise InputError(f"reward {name}={v!r} must be a finite number")

    def to_dict(self) -> dict:
        return asdict(self)


def compute_reward(score: float, latency_ms: float | None, params: float | None, spec: RewardSpec) -> float:
    """``score * (latency_ms / T) ** w_lat * (params / P) ** w_params``; a term with weight 0 is 1."""
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        raise InputError(f"score={score!r} must be in [0, 1]")
    reward = float(score)
    for value, target, weight, what in (
        (latency_ms, spec.latency_target_ms, spec.latency_weight, "latency_ms"),
        (params, spec.params_target, spec.params_weight, "params"),
    ):
        if weight == 0:
            continue
        if target is None:
            raise InputError(f"a non-zero {what} weight needs a target")
        if value is None or not (math.isfinite(value) and value > 0):
            raise InputError(f"{what}={value!r} must be a positive number when its weight is {weight}")
        reward *= (value / target) ** weight
    return reward
