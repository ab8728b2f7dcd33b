"""The epoch loop of a training run: budget (epochs or wall time), steps, averaging, validation, history."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from segfactory.factory.errors import RunError
from segfactory.factory.training.averaging import PolyakAverage
from segfactory.factory.training.config import TrainConfig
from segfactory.factory.training.data import iterate, set_epoch
from segfactory.factory.training.recipes import Recipe
from segfactory.factory.training.step import NonFiniteLoss, TrainStep, make_optimizer, poly_factor

VAL_KEYS = ("miou", "macc", "fwiou", "score", "pixel_acc", "per_class_iou", "num_images")


def make_step(model, recipe: Recipe, ignore_index: int, planned_steps: int | None,
              amp: str | None = None) -> TrainStep:
    """The :class:`TrainStep` of ``recipe`` for a model with ``encoder`` and ``decoder`` parts (``segfactory
    train``, and the search proxy's end-to-end stage); ``amp`` as :class:`TrainStep`'s."""
    s = recipe
    parts = [list(model.encoder.parameters()), list(model.decoder.parameters())]
    optimizer = make_optimizer(s.optimizer, [{"params": parts[0], "lr": s.encoder_lr},
                                             {"params": parts[1], "lr": s.decoder_lr}], s.weight_decay, s.momentum)
    average = PolyakAverage(model, s.polyak, planned_steps) if s.polyak is not None else None
    forward = (lambda x: model(x, native=True)) if s.loss_at == "native" else model
    lr_factor = (lambda p: poly_factor(p, s.poly_power)) if s.schedule == "poly" else (lambda p: 1.0)
    return TrainStep(forward, parts, optimizer, ignore_index=ignore_index, lr_factor=lr_factor, average=average,
                     averaged=model, grad_clip=s.grad_clip, amp=amp)


class Trainer:
    """Runs the epochs of one training run; :meth:`run` calls ``save(state)`` after each epoch."""

    def __init__(self, model, cfg: TrainConfig, loader, val_ds, ignore_index: int, *, progress: bool = True,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.model, self.cfg, self.loader, self.val_ds = model, cfg, loader, val_ds
        self.steps_per_epoch = len(loader)
        planned = self.steps_per_epoch * cfg.epochs if cfg.epochs else None
        self.step = make_step(model, cfg.settings, ignore_index, planned, amp="fp16" if cfg.amp else None)
        self.progress, self.on_event = progress, on_event or (lambda e: None)
        self.history: list[dict[str, Any]] = []
        self.steps_done, self.epoch, self.spent_s = 0, 0, 0.0  # spent_s: wall time of earlier parts of the run
        self.started = time.monotonic()
        self.trained_now = False
        self.last_val_s = 0.0

    # ---- budget -------------------------------------------------------------------------------------------
    def elapsed_s(self) -> float:
        return self.spent_s + time.monotonic() - self.started

    def fraction(self) -> float:
        """How much of the schedule is done: by steps for an epoch budget, by wall time for a minutes budget."""
        if self.cfg.budget_s is not None:
            return min(1.0, self.elapsed_s() / self.cfg.budget_s)
        return self.steps_done / max(1, self.steps_per_epoch * self.cfg.epochs)

    def time_left(self) -> bool:
        """Minutes budget: is there time for another step and the final validation?"""
        return self.elapsed_s() + self.last_val_s < self.cfg.budget_s

    def done(self) -> bool:
        if self.cfg.budget_s is not None:
            return not self.time_left()
        return self.epoch >= self.cfg.epochs

    # ---- the run ------------------------------------------------------------------------------------------
    def run(self, save: Callable[[dict[str, Any]], None]) -> None:
        while not self.done():
            record = self.train_epoch()
            if record is None:
                break
            last = self.done()
            every = self.cfg.val_every
            if last or self.epoch == 1 or (every and self.epoch % every == 0):
                record["val"] = self.validate()
            record["val_s"] = self.last_val_s if record["val"] is not None else 0.0
            record["elapsed_s"] = self.elapsed_s()
            self.history.append(record)
            self.trained_now = True
            save(self.state_dict())
            self.on_event({"kind": "epoch", "record": record, "fraction": self.fraction()})
            if self.progress:
                _print_epoch(record, self.cfg)
        if self.history and self.history[-1]["val"] is None:  # budget ended between validations
            self.history[-1]["val"] = self.validate()
            self.history[-1]["val_s"] = self.last_val_s
            save(self.state_dict())

    def train_epoch(self) -> dict[str, Any] | None:
        self.model.train()
        set_epoch(self.loader, self.epoch)
        if self.cfg.budget_s is not None and self.step.average is not None and self.steps_done:
            rate = self.steps_done / max(self.elapsed_s(), 1e-6)  # the run's length, as known so far
            self.step.average.set_planned_steps(int(rate * self.cfg.budget_s))
        t0, seen, loss_sum, n = time.perf_counter(), 0, 0.0, 0
        device = self.cfg.device
        with _bar(self.progress, f"epoch {self.epoch + 1}", self.steps_per_epoch) as bar:
            for images, masks in iterate(self.loader):
                if self.cfg.budget_s is not None and n and not self.time_left():
                    break  # the budget ends inside this epoch: what was trained counts
                images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
                try:
                    loss = self.step(images, masks, self.fraction())
                except NonFiniteLoss as e:
                    raise RunError(f"{e} at epoch {self.epoch + 1}; lower the learning rates") from None
                self.steps_done += 1
                seen += images.shape[0]
                loss_sum += loss
                n += 1
                bar(loss_sum / n, seen / (time.perf_counter() - t0))
                self.on_event({"kind": "step", "fraction": self.fraction(), "epoch": self.epoch + 1})
        if n == 0:
            return None
        if self.step.average is not None:
            self.step.put_average()
        self.epoch += 1
        train_s = time.perf_counter() - t0
        return {"epoch": self.epoch, "loss": loss_sum / n, "steps": n, "images": seen, "train_s": train_s,
                "images_per_s": seen / train_s if train_s else 0.0,
                "lr": [g["lr"] for g in self.step.optimizer.param_groups], "val": None}

    def validate(self) -> dict[str, Any]:
        from segfactory.factory.evaluate import TorchPredictor, evaluate

        t = time.monotonic()
        val = evaluate(TorchPredictor(self.model, self.cfg.device), self.val_ds, progress=self.progress)
        self.last_val_s = time.monotonic() - t
        self.model.train()
        return {k: val[k] for k in VAL_KEYS}

    # ---- resume -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "steps_done": self.steps_done, "elapsed_s": self.elapsed_s(),
                "last_val_s": self.last_val_s, "history": self.history, "step": self.step.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.steps_done = int(state["epoch"]), int(state["steps_done"])
        self.spent_s, self.started = float(state["elapsed_s"]), time.monotonic()
        self.last_val_s = float(state.get("last_val_s", 0.0))
        self.history = list(state["history"])
        self.step.load_state_dict(state["step"])


def _print_epoch(record: dict[str, Any], cfg: TrainConfig) -> None:
    from rich.console import Console

    of = f"/{cfg.epochs}" if cfg.epochs else f" ({record['elapsed_s'] / 60:.1f}/{cfg.minutes:g} min)"
    val = record["val"]
    val_text = f"val mIoU {100 * val['miou']:.2f}%  score {100 * val['score']:.2f}%  " if val else ""
    Console(stderr=True).print(f"epoch {record['epoch']}{of}  loss {record['loss']:.4f}  {val_text}"
                               f"({record['train_s']:.0f} s train, {record['images_per_s']:.1f} img/s, "
                               f"{record['val_s']:.0f} s val)", soft_wrap=True)


class _bar:
    """A rich progress bar for one epoch (silent when disabled): ``bar(loss, images_per_s)`` per step."""

    def __init__(self, enabled: bool, description: str, total: int) -> None:
        self.enabled, self.description, self.total = enabled, description, total

    def __enter__(self):
        if not self.enabled:
            return lambda loss, speed: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[speed]:.1f} img/s"),
                                 TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self.progress.start()
        task = self.progress.add_task(self.description, total=self.total, loss=float("nan"), speed=0.0)
        return lambda loss, speed: self.progress.update(task, advance=1, loss=loss, speed=speed)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.stop()


__all__ = ["Trainer", "make_step"]
