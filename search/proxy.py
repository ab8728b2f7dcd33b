"""Proxy training of one candidate (method.md §5): the decoder on cached encoder features, then end to end.

:func:`train_candidate` trains one genotype on a :class:`~segfactory.search.proxy_data.ProxyData` with the
project's one training step (:class:`segfactory.factory.training.TrainStep`): stage 1 trains the decoder alone on
the cached features, stage 2 trains encoder and decoder end to end on augmented crops. Both average their weights
(Polyak, capped by the stage's length so that short schedules keep what they learn) and put the average in place
at every epoch's end. After stage 1 and after every stage-2 epoch the model is scored on the held-out frames with
the project's one evaluation loop, and an early-stopping callback may end the candidate (method.md §4).

The time limit counts this process's CPU time (all threads), so a loaded host does not turn candidates into
failures; a candidate that reaches it has failed, whatever it scored before.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from segfactory.factory.errors import InputError
from segfactory.factory.genotype import Genotype
from segfactory.search.proxy_data import ProxyData, heldout_split

ShouldContinue = Callable[[int, float], bool]


class CandidateFailed(Exception):
    """A candidate that cannot be scored (non-finite loss, out of memory, an error in its model, time limit)."""


@dataclass
class ProxyResult:
    status: str  # ok | early-stopped | failed
    reason: str = ""
    miou: float | None = None
    macc: float | None = None
    fwiou: float | None = None
    score: float | None = None
    checkpoints: list[float] = field(default_factory=list)  # score at each validation
    stage1_s: float = 0.0
    stage2_s: float = 0.0
    val_s: float = 0.0
    steps: int = 0
    cpu_s: float = 0.0  # this process's CPU time spent on the candidate (what the time limit counts)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def validate(model, data: ProxyData, device: str, batch: int) -> dict[str, Any]:
    """Metrics of ``model`` on the held-out frames: the project's evaluation loop (full model, labels at the
    frames' size)."""
    from segfactory.factory.evaluate import TorchPredictor, evaluate

    return evaluate(TorchPredictor(model, device), data.heldout, batch_size=batch, progress=False)


def train_candidate(genotype: Genotype, data: ProxyData, *, seed: int, device: str = "cpu",
                    should_continue: ShouldContinue | None = None) -> ProxyResult:
    """Proxy-train ``genotype`` and score it; never raises for a failure of the candidate itself."""
    result = ProxyResult("ok")
    limit = data.settings.time_limit_s
    cpu0 = time.process_time()
    try:
        with torch.random.fork_rng(devices=[torch.device(device)] if device == "cuda" else []):
            torch.manual_seed(seed)
            _Candidate(genotype, data, seed, device, should_continue, result,
                       cpu0 + limit if limit else math.inf).run()
    except CandidateFailed as e:
        result.status, result.reason = "failed", str(e)
    except InputError:
        raise  # a problem with the data or the settings, not with the candidate: stop the search
    except Exception as e:  # noqa: BLE001 - OOM or an error inside the candidate's model: record and go on
        name = type(e).__name__
        first = (str(e).strip().splitlines() or [""])[0][:300]
        if "out of memory" in first.lower() or name == "OutOfMemoryError":
            name = "out of memory"
        result.status, result.reason = "failed", f"{name}: {first}"
    result.cpu_s = time.process_time() - cpu0
    if result.status == "failed":
        result.miou = result.macc = result.fwiou = result.score = None
    return result


class _Candidate:
    """The two stages of one candidate (see the module docstring)."""

    def __init__(self, genotype: Genotype, data: ProxyData, seed: int, device: str,
                 should_continue: ShouldContinue | None, result: ProxyResult, cpu_deadline: float) -> None:
        from segfactory.factory.model import SegModel

        self.data, self.s, self.seed, self.device = data, data.settings, seed, device
        self.should_continue, self.result, self.cpu_deadline = should_continue, result, cpu_deadline
        self.model = SegModel(genotype, data.config)
        self.model.encoder.load_state_dict(data.encoder_state)
        self.model.to(device)
        self.amp = "bf16" if device == "cuda" else None
        self.checkpoint = 0

    def run(self) -> None:
        t = time.monotonic()
        self.stage1()
        self.result.stage1_s = time.monotonic() - t
        if not self.score() or self.s.stage2_epochs == 0:
            return
        self.stage2()

    def step_made(self, stage: int) -> None:
        self.result.steps += 1
        if time.process_time() > self.cpu_deadline:
            raise CandidateFailed(f"time limit of {self.s.time_limit_s:g} CPU-seconds reached in stage {stage} "
                                  f"after {self.result.steps} steps")

    def train_step(self, step, inputs, target, progress: float, stage: int) -> None:
        from segfactory.factory.training import NonFiniteLoss

        try:
            step(inputs, target, progress)
        except NonFiniteLoss:
            raise CandidateFailed(f"non-finite loss in stage {stage} at step {self.result.steps}") from None
        self.step_made(stage)

    def stage1(self) -> None:
        """The decoder alone, on the cached encoder features (logits resized to the cached labels, as upstream)."""
        from segfactory.factory.ops import resize
        from segfactory.factory.training import PolyakAverage, TrainStep, make_optimizer

        s, data, decoder = self.s, self.data, self.model.decoder
        decoder.train()
        params = list(decoder.parameters())
        n = len(data.cache_labels)
        per_epoch = max(1, (n - s.stage1_batch) // s.stage1_batch + 1) if n >= s.stage1_batch else 1
        average = PolyakAverage(decoder, s.stage1_polyak, planned_steps=per_epoch * s.stage1_epochs)
        size = tuple(data.cache_labels.shape[-2:])
        step = TrainStep(lambda x: resize(decoder(*x), size), [params],
                         make_optimizer("adam", [{"params": params, "lr": s.stage1_lr}], s.weight_decay),
                         ignore_index=data.ignore_index, average=average, averaged=decoder, grad_clip=s.grad_clip,
                         amp=self.amp)
        g = torch.Generator().manual_seed(self.seed)
        for _epoch in range(s.stage1_epochs):
            order = torch.randperm(n, generator=g)
            for start in range(0, max(n - s.stage1_batch, 0) + 1, s.stage1_batch):  # drop the last partial batch
                idx = order[start : start + s.stage1_batch]
                inputs = (data.cache_e0[idx].to(self.device), data.cache_e1[idx].to(self.device))
                self.train_step(step, inputs, data.cache_labels[idx].to(self.device), 0.0, 1)
            step.put_average()

    def stage2(self) -> None:
        """Encoder and decoder end to end on augmented crops; scored after every epoch."""
        from segfactory.factory.training import Recipe, make_train_loader, set_epoch
        from segfactory.factory.training.loop import make_step

        s, data, model = self.s, self.data, self.model
        loader = make_train_loader(data.train, data.config, s.crop, s.stage2_batch, s.workers, self.seed, s.scale,
                                   pin_memory=self.device == "cuda")
        per_epoch = min(len(loader), s.stage2_steps) if s.stage2_steps is not None else len(loader)
        planned = per_epoch * s.stage2_epochs
        # segfactory train's step, with the proxy's settings as its recipe (Adam, loss at the head's resolution;
        # the poly schedule's power is the recipes')
        recipe = Recipe(optimizer="adam", encoder_lr=s.stage2_enc_lr, decoder_lr=s.stage2_dec_lr,
                        weight_decay=s.weight_decay, schedule=s.stage2_schedule, grad_clip=s.grad_clip,
                        loss_at="native", polyak=s.stage2_polyak)
        step = make_step(model, recipe, data.ignore_index, planned, amp=self.amp)
        done = 0
        for epoch in range(s.stage2_epochs):
            t = time.monotonic()
            model.train()
            set_epoch(loader, epoch)
            for i, (images, masks) in enumerate(loader):
                if i >= per_epoch:
                    break
                images = images.to(self.device, non_blocking=True)
                self.train_step(step, images, masks.to(self.device, non_blocking=True), done / planned, 2)
                done += 1
            step.put_average()
            self.result.stage2_s += time.monotonic() - t
            if not self.score():
                return

    def score(self) -> bool:
        """Validate on the held-out frames; record the score; ask the early stopper whether to go on."""
        t = time.monotonic()
        m = validate(self.model, self.data, self.device, self.s.val_batch)
        self.result.val_s += time.monotonic() - t
        r = self.result
        r.miou, r.macc, r.fwiou, r.score = m["miou"], m["macc"], m["fwiou"], m["score"]
        r.checkpoints.append(m["score"])
        go_on = self.should_continue is None or self.should_continue(self.checkpoint, m["score"])
        self.checkpoint += 1
        if not go_on:
            r.status = "early-stopped"
            r.reason = f"early stopping at checkpoint {self.checkpoint - 1} (score {m['score']:.4f})"
        if time.process_time() > self.cpu_deadline:
            raise CandidateFailed(f"time limit of {self.s.time_limit_s:g} CPU-seconds reached at validation "
                                  f"{self.checkpoint - 1}")
        return go_on


__all__ = ["CandidateFailed", "ProxyData", "ProxyResult", "heldout_split", "train_candidate", "validate"]
