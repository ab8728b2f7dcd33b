"""The training step: ONE implementation used by ``segfactory train``, the search proxy's stage 1 (the decoder on
cached encoder features) and its stage 2 (end to end).

A step is: learning rates for this point of the schedule -> forward (autocast on CUDA) -> loss -> backward ->
per-part gradient-norm clipping (encoder and decoder separately, as upstream) -> optimiser step -> Polyak
averaging. The caller says what a batch is (``forward``) and how progress is counted (``progress``: the fraction
of the schedule done, by steps or by time), so the same object serves epoch- and time-budgeted runs.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from segfactory.factory.training.averaging import PolyakAverage
from torch import Tensor, nn


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite (the caller turns it into a failed run or a failed candidate)."""


def seg_loss(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Pixel-wise cross-entropy at the logits' own resolution (method.md §5).

    ``logits`` (N, K, h, w); ``target`` (N, H, W) int64 is nearest-downsampled to (h, w). A batch without a single
    labelled pixel gives a zero loss that still carries the graph.
    """
    if target.shape[-2:] != logits.shape[-2:]:
        # nearest on a float copy: exact for label values < 2**24
        target = F.interpolate(target[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
    if not (target != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, ignore_index=ignore_index)


def poly_factor(progress: float, power: float) -> float:
    """Polynomial decay ``(1 - progress) ** power`` of the base learning rate, ``progress`` in [0, 1]."""
    return max(0.0, 1.0 - min(max(progress, 0.0), 1.0)) ** power


def make_optimizer(name: str, groups: list[dict[str, Any]], weight_decay: float,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """adam (coupled L2, as upstream), adamw (decoupled weight decay) or sgd (momentum)."""
    if name == "adam":
        return torch.optim.Adam(groups, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, weight_decay=weight_decay)
    return torch.optim.SGD(groups, momentum=momentum, weight_decay=weight_decay)


class TrainStep:
    """One optimisation step; see the module docstring.

    Args:
        forward: batch inputs -> logits (the caller decides native or output resolution).
        parts: parameter lists clipped separately (encoder, decoder); each is also one optimiser group.
        optimizer: over ``parts`` in that order, with the base learning rates in its groups.
        lr_factor: progress in [0, 1] -> multiplier of the base rates (poly decay; constant 1).
        average: Polyak average of ``averaged`` (None: off).
        grad_clip: max gradient norm per part (0: off).
        amp: None, "bf16" (autocast, no scaling) or "fp16" (autocast with a gradient scaler); CUDA only.
        bn_batches: with averaging, the last this many inputs are kept for :meth:`put_average` (BN statistics).
    """

    def __init__(self, forward: Callable[[Any], Tensor], parts: Sequence[Sequence[nn.Parameter]],
                 optimizer: torch.optim.Optimizer, *, ignore_index: int,
                 lr_factor: Callable[[float], float] = lambda p: 1.0, average: PolyakAverage | None = None,
                 averaged: nn.Module | None = None, grad_clip: float = 0.0, amp: str | None = None,
                 loss: Callable[[Tensor, Tensor, int], Tensor] | None = None, bn_batches: int = 4) -> None:
        self.forward, self.parts, self.optimizer = forward, [list(p) for p in parts], optimizer
        self.ignore_index, self.lr_factor, self.grad_clip, self.loss = ignore_index, lr_factor, grad_clip, loss
        self.average, self.averaged = average, averaged
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for g, lr in zip(optimizer.param_groups, self.base_lrs):
            g["initial_lr"] = lr
        self.amp = amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
        self.recent: collections.deque = collections.deque(maxlen=bn_batches if average is not None else 0)

    def set_progress(self, progress: float) -> None:
        factor = self.lr_factor(progress)
        for g, lr in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = lr * factor

    def __call__(self, inputs: Any, target: Tensor, progress: float) -> float:
        """One step at ``progress`` of the schedule; returns the loss (raises :class:`NonFiniteLoss`)."""
        self.set_progress(progress)
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        with torch.autocast(device_type="cuda", dtype=dtype, enabled=self.amp is not None):
            logits = self.forward(inputs)
        loss = (self.loss or seg_loss)(logits.float(), target, self.ignore_index)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"the loss became {float(loss.detach())}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            for params in self.parts:
                nn.utils.clip_grad_norm_(params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.average is not None:
            self.average.update(self.averaged)
            self.recent.append(inputs)
        return float(loss.detach())

    def put_average(self) -> None:
        """Put the averaged weights in place, with BN statistics re-estimated for them on the last batches."""
        if self.average is not None:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16,
                                enabled=self.amp is not None):
                self.average.copy_to(self.averaged, self.forward, list(self.recent))

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "average": self.average.state_dict() if self.average is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.base_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]
        self.scaler.load_state_dict(state["scaler"])
        if self.average is not None and state.get("average") is not None:
            self.average.load_state_dict(state["average"])
