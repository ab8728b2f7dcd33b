"""Polyak averaging (an exponential moving average of the weights) that keeps the training at any schedule length.

Upstream averages with a fixed decay per step (0.9 in the search's stage 1, 0.99 in stage 2, tuned for 31 and 83
steps per epoch on Cityscapes), starts the average at the stage's initial weights and copies it into the live
weights at every epoch's end. On a short schedule that keeps almost nothing: after 8 steps at 0.99 the average is
still 92% the initial weights (it kept 4.5% of the live model's loss reduction on a toy model, measured).

Here the decay is capped by the schedule: ``decay_eff = min(decay, 1 - HORIZON / planned_steps)``, i.e. the
average never reaches back over more than about 1/HORIZON of the stage. Where the stage is long enough
(``planned_steps >= HORIZON / (1 - decay)``: 40 steps at 0.9, 400 at 0.99) the cap does not bind and the
averaging is exactly upstream's — the ``paper`` preset on Cityscapes-sized data (155 and 415 steps) is unchanged.
On short schedules it follows the training: 8 steps at 0.99 average at 0.5, and the averaged model (with its BN
statistics re-estimated, below) reached 122% of the live model's loss reduction on the same toy model
(tests/factory/test_training.py), against 4.5% for upstream's averaging. Measured alternatives, same toy: TensorFlow's warm-up ``min(d, (1 + t) / (10 + t))`` kept 90%
after 8 steps but does not reach 0.99 until step 890, so it changes the ``paper`` preset over its whole 415-step
stage 2; a warm-up short enough to fade within that stage's first epoch (83 steps) kept only ~50% after 8 steps.

BatchNorm running statistics must belong to the weights they normalise. Averaging them like the weights (timm's
ModelEmaV3) lags twice (they are already a moving average), and on a toy model they ended further from the averaged
weights' true statistics than the last step's were; so after the average is put in place they are re-estimated for
it (:func:`recompute_bn`, as SWA does) on the stage's last few training batches: forward passes only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from segfactory.factory.errors import InputError
from torch import nn

HORIZON = 4  # the average spans at most ~1/HORIZON of the planned steps


def effective_decay(decay: float, planned_steps: int | None) -> float:
    """``min(decay, 1 - HORIZON / planned_steps)`` (0 when the stage is shorter than HORIZON steps)."""
    if not planned_steps:
        return decay
    return max(0.0, min(decay, 1.0 - HORIZON / planned_steps))


class PolyakAverage:
    """EMA of a module's floating-point state (parameters and BN running statistics).

    Call :meth:`update` after every optimiser step and :meth:`copy_to` where the averaged model should take over
    (upstream: at the end of every epoch). ``planned_steps`` is the length of the schedule being averaged.
    """

    def __init__(self, module: nn.Module, decay: float, planned_steps: int | None = None) -> None:
        if not 0.0 <= decay < 1.0:
            raise InputError(f"Polyak decay {decay} must be in [0, 1)")
        self.decay = decay
        self.rate = effective_decay(decay, planned_steps)
        self.shadow = {n: p.detach().clone() for n, p in module.named_parameters()}
        self.updates = 0

    def set_planned_steps(self, planned_steps: int | None) -> None:
        """Re-cap the decay (a time-budgeted run learns its length as it goes)."""
        self.rate = effective_decay(self.decay, planned_steps)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = self.rate
        for name, p in module.named_parameters():
            self.shadow[name].mul_(d).add_(p.detach(), alpha=1.0 - d)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module, forward: Callable[[Any], Any] | None = None,
                batches: Sequence[Any] = ()) -> None:
        """Replace the live parameters by their averages; with ``forward`` and ``batches``, re-estimate the BN
        statistics for them (:func:`recompute_bn`)."""
        for name, p in module.named_parameters():
            p.copy_(self.shadow[name])
        if forward is not None and batches and self.rate > 0:
            recompute_bn(module, forward, batches)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "rate": self.rate, "updates": self.updates,
                "shadow": {n: t.detach().cpu().clone() for n, t in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.rate = float(state["decay"]), float(state.get("rate", state["decay"]))
        self.updates = int(state.get("updates", 0))
        for name, value in state["shadow"].items():
            if name in self.shadow:
                self.shadow[name].copy_(value)


@torch.no_grad()
def recompute_bn(module: nn.Module, forward: Callable[[Any], Any], batches: Sequence[Any]) -> None:
    """Re-estimate every BatchNorm's running statistics of ``module`` for its current weights: a cumulative
    average over ``batches`` (inputs of ``forward``) in training mode, as torch.optim.swa_utils.update_bn does."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = {m: m.momentum for m in norms}
    was_training = module.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches
    module.train()
    for inputs in batches:
        forward(inputs)
    for m, momentum in momenta.items():
        m.momentum = momentum
    module.train(was_training)
