"""The reward: the paper's score with a latency term and a size term (a pure function).

Two latency terms (``RewardSpec.latency_form``):

- ``mnas`` (MnasNet's soft term): ``score * (latency / T) ** w``. A negative weight (MnasNet uses -0.07) makes a
  model twice as slow as the target lose ``1 - 2 ** -0.07`` = 4.7 % of its reward, and one twice as fast gain as
  much: the search is pushed ever faster, below a limit as well as above it;
- ``absolute`` (TuNAS, Bender et al. 2020): ``score + w * |latency / T - 1|``, highest at the target itself, so a
  search with a limit lands on it instead of below it (``w`` negative: the penalty per unit of relative error).

The size term is always MnasNet's: ``* (params / P) ** w_params``. With both weights 0 the reward is the paper's,
the geometric mean of mIoU, mean accuracy and fwIoU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from segfactory.factory.errors import InputError

DEFAULT_LATENCY_WEIGHT = -0.07
DEFAULT_PARAMS_WEIGHT = 0.0
LATENCY_FORMS = ("mnas", "absolute")


@dataclass(frozen=True)
class RewardSpec:
    """Targets and weights of the soft constraints; a weight of 0 switches its term off."""

    latency_target_ms: float | None = None
    latency_weight: float = DEFAULT_LATENCY_WEIGHT
    params_target: float | None = None
    params_weight: float = DEFAULT_PARAMS_WEIGHT
    latency_form: str = LATENCY_FORMS[0]

    def __post_init__(self) -> None:
        if self.latency_form not in LATENCY_FORMS:
            raise InputError(f"reward latency_form={self.latency_form!r} is not one of {', '.join(LATENCY_FORMS)}")
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
    """The reward of ``score`` at ``latency_ms`` and ``params`` under ``spec`` (module docstring); a term whose
    weight is 0 is left out."""
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        raise InputError(f"score={score!r} must be in [0, 1]")
    reward = float(score)
    latency = _relative(latency_ms, spec.latency_target_ms, spec.latency_weight, "latency_ms")
    if latency is not None and spec.latency_form == "absolute":
        reward += spec.latency_weight * abs(latency - 1.0)
    elif latency is not None:
        reward *= latency ** spec.latency_weight
    size = _relative(params, spec.params_target, spec.params_weight, "params")
    if size is not None:
        reward *= size ** spec.params_weight
    return reward


def _relative(value: float | None, target: float | None, weight: float, what: str) -> float | None:
    """``value / target``, or None for a term whose weight is 0."""
    if weight == 0:
        return None
    if target is None:
        raise InputError(f"a non-zero {what} weight needs a target")
    if value is None or not (math.isfinite(value) and value > 0):
        raise InputError(f"{what}={value!r} must be a positive number when its weight is {weight}")
    return value / target
