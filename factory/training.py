"""Training: the loss, Polyak averaging, the augmented loader and the resumable run behind ``segfactory train``.

A run directory holds ``model.pt`` (final weights: the averaged ones where Polyak averaging is on),
``last.pt`` (everything ``--resume`` needs: weights, optimiser, scheduler, EMA, RNG state, completed epochs,
history) and ``metrics.json`` (the history). All three are rewritten atomically after every epoch, so a
killed run loses at most the epoch in progress.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from segfactory.factory.errors import InputError, RunError
from torch import Tensor, nn

STATE_FORMAT = "segfactory.train-state/1"
METRICS_FORMAT = "segfactory.train-metrics/1"
# Settings a resumed run may change; every other one must match the interrupted run's.
RUNTIME_FIELDS = ("epochs", "device", "amp", "workers", "val_every")
DEFAULT_LR = {"adam": (5e-4, 2e-3), "adamw": (2e-3, 2e-3), "sgd": (1e-2, 1e-1)}  # (encoder, decoder)
SCHEDULES = ("poly", "constant")


# -- loss and averaging ----------------------------------------------------------------------------------------

def seg_loss(native_logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Pixel-wise cross-entropy at the logits' own resolution (method.md §5).

    ``native_logits`` (N, K, h, w); ``target`` (N, H, W) int64 is nearest-downsampled to (h, w). A batch
    without a single labelled pixel gives a zero loss that still carries the graph.
    """
    if target.shape[-2:] != native_logits.shape[-2:]:
        # nearest on a float copy: exact for label values < 2**24
        target = F.interpolate(target[:, None].float(), size=native_logits.shape[-2:], mode="nearest")[:, 0].long()
    if not (target != ignore_index).any():
        return native_logits.sum() * 0.0
    return F.cross_entropy(native_logits.float(), target, ignore_index=ignore_index)


class PolyakAverage:
    """Exponential moving average of a module's parameters (BN running buffers are not averaged).

    Call :meth:`update` after every optimiser step and :meth:`copy_to` at the end of each epoch, which
    overwrites the live parameters with the average (method.md §5).
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise InputError(f"Polyak decay {decay} must be in [0, 1)")
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in module.named_parameters()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for n, p in module.named_parameters():
            self.shadow[n].mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for n, p in module.named_parameters():
            p.copy_(self.shadow[n])

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "shadow": {n: t.detach().cpu().clone() for n, t in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        for n, t in state["shadow"].items():
            self.shadow[n].copy_(t)


# -- data ------------------------------------------------------------------------------------------------------

class AugmentedDataset(torch.utils.data.Dataset):
    """Items of a :class:`SegDataset` through a :class:`TrainTransform`, seeded by (seed, epoch, index)."""

    def __init__(self, base, transform, seed: int) -> None:
        self.base = base
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, mask = self.base[i]
        return self.transform(image, mask, np.random.default_rng([self.seed, self.epoch, i]))


class EpochSampler(torch.utils.data.Sampler):
    """A shuffled order that depends only on (seed, epoch), so a resumed run sees the same batches."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=g).tolist())


def make_train_loader(dataset, config, crop: tuple[int, int], batch_size: int, workers: int, seed: int,
                      scale: tuple[float, float] = (0.5, 2.0)) -> torch.utils.data.DataLoader:
    """Shuffled, augmented batches ``(images (N, 3, h, w) float, masks (N, h, w) int64)`` of ``dataset``.

    ``config`` (a ModelConfig) gives the normalisation. Call :func:`set_epoch` before each epoch.
    """
    from segfactory.factory.transforms import TrainTransform

    transform = TrainTransform(tuple(crop), tuple(config.mean), tuple(config.std), dataset.ignore_index,
                               tuple(scale))
    data = AugmentedDataset(dataset, transform, seed)
    return torch.utils.data.DataLoader(
        data, batch_size=batch_size, sampler=EpochSampler(len(dataset), seed), num_workers=workers,
        drop_last=len(dataset) >= 2 * batch_size, pin_memory=False,
    )


def set_epoch(loader: torch.utils.data.DataLoader, epoch: int) -> None:
    loader.dataset.epoch = epoch
    loader.sampler.epoch = epoch


def _iterate(loader):
    """Iterate ``loader``, turning a worker's wrapped InputError back into its one-line message."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except Exception as e:
            text = str(e)
            if "Original Traceback" in text:
                last = [line for line in text.strip().splitlines() if line.strip()][-1]
                name, _, message = last.partition(": ")
                if name.endswith("InputError"):
                    raise InputError(message) from None
                raise RunError(f"data loading failed: {last}") from None
            raise
        yield batch


# -- the run ---------------------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in model.pt, last.pt and metrics.json)."""

    arch: str
    data: str
    epochs: int = 30
    crop: tuple[int, int] = (256, 256)
    batch_size: int = 8
    optimizer: str = "adam"  # adam (coupled L2) | adamw (decoupled weight decay) | sgd (momentum)
    schedule: str = "poly"  # poly: lr * (1 - step / total) ** poly_power | constant
    encoder_lr: float | None = None  # None: DEFAULT_LR of the optimiser
    decoder_lr: float | None = None
    weight_decay: float = 1e-5
    momentum: float = 0.9
    poly_power: float = 0.9
    polyak: float | None = None  # EMA decay per step; None: off
    grad_clip: float = 3.0  # max grad norm, encoder and decoder separately (method.md §5); 0: off
    scale: tuple[float, float] = (0.5, 2.0)
    seed: int = 0
    num_classes: int | None = None  # None: the dataset's own (required for folder data)
    ignore_index: int | None = None
    agg_size: int = 64
    sep_repeats: int = 2
    encoder_weights: str = "bundled"
    train_split: str = "train"
    val_split: str = "val"
    device: str = "cpu"
    amp: bool = False
    workers: int = 2
    val_every: int = 1  # validate after every N-th epoch (and always after the last); 0: the last only

    def __post_init__(self) -> None:
        self.crop = tuple(self.crop)
        self.scale = tuple(self.scale)
        if self.optimizer not in DEFAULT_LR:
            raise InputError(f"optimizer {self.optimizer!r} is not one of {', '.join(DEFAULT_LR)}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        enc, dec = DEFAULT_LR[self.optimizer]
        self.encoder_lr = enc if self.encoder_lr is None else self.encoder_lr
        self.decoder_lr = dec if self.decoder_lr is None else self.decoder_lr
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError("epochs and batch size must be positive")
        for name in ("encoder_lr", "decoder_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"--{name.replace('_', '-')} {value!r} must be a positive finite number")
        for name in ("weight_decay", "grad_clip", "poly_power", "momentum"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise InputError(f"--{name.replace('_', '-')} {value!r} must be a finite number >= 0")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise InputError(f"scale range {self.scale} must satisfy 0 < low <= high")
        if self.amp and self.device != "cuda":
            raise InputError("--amp needs a CUDA device (--device cuda)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop"], d["scale"] = list(self.crop), list(self.scale)
        return d


def check_training_memory(genotype, config, cfg: TrainConfig) -> None:
    """Refuse (InputError) a run whose batches would not fit in the device's memory (see factory.memory)."""
    from segfactory.factory.memory import check_fits, training_bytes
    from segfactory.factory.model import SegModel

    need = training_bytes(lambda: SegModel(genotype, config), cfg.crop, cfg.batch_size, cfg.workers)
    check_fits(need, cfg.device, f"training with batches of {cfg.batch_size} crops of {cfg.crop[0]}x{cfg.crop[1]}",
               "lower --crop or --batch-size")


def _run_files(out: Path) -> dict[str, Path]:
    return {"model": out / "model.pt", "last": out / "last.pt", "metrics": out / "metrics.json"}


def _check_resumable(state: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    old = state["train_config"]
    for f in fields(TrainConfig):
        if f.name in RUNTIME_FIELDS:
            continue
        new = cfg.to_dict()[f.name]
        if old.get(f.name) != new:
            raise InputError(
                f"--resume: {path} was trained with {f.name}={old.get(f.name)!r}, this run asks for {new!r}; "
                "repeat the original settings (only --epochs, --device, --amp, --workers and --val-every may change)"
            )


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[speed]:.1f} img/s"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled,
    )


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.arch`` on ``cfg.data`` into run directory ``out``; returns the metrics.json content."""
    from rich.console import Console
    from segfactory.factory.checkpoint import save_checkpoint
    from segfactory.factory.config import ModelConfig
    from segfactory.factory.datasets import open_dataset
    from segfactory.factory.evaluate import TorchPredictor, evaluate
    from segfactory.factory.io import atomic_write, atomic_write_json
    from segfactory.factory.model import build_model
    from segfactory.factory.zoo import resolve_arch

    out = Path(out)
    files = _run_files(out)
    from segfactory.factory.io import check_writable

    check_writable(out, "--out", folder=True)
    present = [p.name for p in files.values() if p.exists()]
    if present and not resume:
        raise InputError(f"{out} already holds a run ({', '.join(present)}); pass --resume to continue it "
                         "or choose another --out")
    if resume and not files["last"].exists():
        raise InputError(f"--resume: {files['last']} does not exist, so there is nothing to resume")

    genotype = resolve_arch(cfg.arch)
    train_ds = open_dataset(cfg.data, cfg.train_split, num_classes=cfg.num_classes, ignore_index=cfg.ignore_index)
    val_ds = open_dataset(cfg.data, cfg.val_split, num_classes=cfg.num_classes, ignore_index=cfg.ignore_index)
    config = ModelConfig.create(train_ds.num_classes, cfg.agg_size, cfg.sep_repeats, cfg.encoder_weights,
                                tuple(train_ds.class_names))
    check_training_memory(genotype, config, cfg)  # before any image is read: a bad --crop must not take the host down
    train_ds.check_sizes()
    val_ds.check_sizes()
    console = Console(stderr=True, quiet=not progress)

    state = None
    if resume:
        from segfactory.factory.io import load_torch_file

        state = load_torch_file(files["last"], "--resume: training state")
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise InputError(f"--resume: {files['last']} is not a {STATE_FORMAT} file")
        _check_resumable(state, cfg, files["last"])
        if state["genotype"] != genotype.to_dict():
            raise InputError(f"--resume: {files['last']} holds another architecture than {cfg.arch!r}")

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    device = torch.device(cfg.device)
    model = build_model(genotype, config, load_weights=state is None).to(device)
    groups = [{"params": list(model.encoder.parameters()), "lr": cfg.encoder_lr},
              {"params": list(model.decoder.parameters()), "lr": cfg.decoder_lr}]
    if cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(groups, weight_decay=cfg.weight_decay)  # coupled L2, as upstream
    elif cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loader = make_train_loader(train_ds, config, cfg.crop, cfg.batch_size, cfg.workers, cfg.seed, cfg.scale)
    steps = len(loader)
    total_steps = max(1, steps * cfg.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: (1.0 - min(it, total_steps - 1) / total_steps) ** cfg.poly_power
        if cfg.schedule == "poly" else 1.0,
    )
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp)
    ema = PolyakAverage(model, cfg.polyak) if cfg.polyak is not None else None
    history: list[dict[str, Any]] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        _set_rng_state(state["rng"])
        history = list(state["history"])
        start = int(state["epoch"])
        console.print(f"resuming {out} after epoch {start}")

    def metrics_doc() -> dict[str, Any]:
        validated = [h for h in history if h["val"] is not None]
        last = (history[-1]["val"] or {}) if history else {}
        best = max(validated, key=lambda h: h["val"]["miou"]) if validated else None
        return {"format": METRICS_FORMAT, "arch": cfg.arch, "genotype_key": genotype.key(),
                "model_config": config.to_dict(), "train_config": cfg.to_dict(), "epochs_done": len(history),
                "final": last, "best_epoch": best["epoch"] if best else None, "history": history}

    with _progress(progress) as bar:
        for epoch in range(start, cfg.epochs):
            model.train()
            set_epoch(loader, epoch)
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps, loss=float("nan"), speed=0.0)
            t0 = time.perf_counter()
            seen, loss_sum, loss_n = 0, 0.0, 0
            for images, masks in _iterate(loader):
                images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=cfg.amp):
                    logits = model(images, native=True)  # (N, K, h, w) at the decoder's finest stride
                loss = seg_loss(logits, masks, train_ds.ignore_index)
                if not torch.isfinite(loss):
                    raise RunError(f"the loss became {float(loss.detach())} at epoch {epoch + 1}; lower the learning rates")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.encoder.parameters(), cfg.grad_clip)
                    nn.utils.clip_grad_norm_(model.decoder.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if ema is not None:
                    ema.update(model)
                seen += images.shape[0]
                loss_sum += float(loss.detach())
                loss_n += 1
                bar.update(task, advance=1, loss=loss_sum / loss_n, speed=seen / (time.perf_counter() - t0))
            train_s = time.perf_counter() - t0
            bar.remove_task(task)
            if ema is not None:
                ema.copy_to(model)
            t1 = time.perf_counter()
            record = {"epoch": epoch + 1, "loss": loss_sum / max(loss_n, 1), "steps": loss_n, "images": seen,
                      "train_s": train_s, "images_per_s": seen / train_s if train_s else 0.0,
                      "lr": [g["lr"] for g in optimizer.param_groups], "val": None}
            last_epoch = epoch + 1 == cfg.epochs
            if last_epoch or (cfg.val_every and (epoch + 1) % cfg.val_every == 0):
                val = evaluate(TorchPredictor(model, str(device)), val_ds, progress=progress)
                record["val"] = {k: val[k] for k in ("miou", "macc", "fwiou", "score", "pixel_acc",
                                                     "per_class_iou", "num_images")}
            record["val_s"] = time.perf_counter() - t1
            history.append(record)
            last = {
                "format": STATE_FORMAT, "epoch": epoch + 1, "train_config": cfg.to_dict(),
                "genotype": genotype.to_dict(), "model_config": config.to_dict(),
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "rng": _rng_state(), "history": history,
            }
            atomic_write(files["last"], lambda p, obj=last: torch.save(obj, p))
            atomic_write_json(files["metrics"], metrics_doc())
            val_text = (f"val mIoU {100 * record['val']['miou']:.2f}%  score {100 * record['val']['score']:.2f}%  "
                        if record["val"] else "")
            console.print(f"epoch {epoch + 1}/{cfg.epochs}  loss {record['loss']:.4f}  {val_text}"
                          f"({train_s:.0f} s train, {record['images_per_s']:.1f} img/s, {record['val_s']:.0f} s val)",
                          soft_wrap=True)

    if not history:
        raise RunError("no epoch was trained")
    doc = metrics_doc()
    final = dict(history[-1]["val"], epoch=history[-1]["epoch"])
    if state is None or start < cfg.epochs or not files["model"].exists():
        save_checkpoint(files["model"], model.cpu(), metrics=final, train_config=cfg.to_dict(),
                        extra={"history": history, "dataset": cfg.data})
    atomic_write_json(files["metrics"], doc)
    return doc
