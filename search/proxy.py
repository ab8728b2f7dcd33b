"""Proxy training of one candidate (method.md §5): decoder on cached encoder features, then end to end.

:class:`ProxyData` is built once per search run: the held-out part of the train split (contiguous blocks of
frames in name order, since neighbouring video frames are near copies), the validation tensors, the pretrained
encoder's weights, and the stage-1 cache (encoder outputs E0, E1 of augmented crops, labels at E0's size).
:func:`train_candidate` then trains one genotype: stage 1 trains the decoder alone on the cache, stage 2 trains
encoder and decoder end to end on augmented crops; both use Polyak averaging whose average replaces the live
weights at the end of every epoch; after stage 1 and after every stage-2 epoch the model is scored on the
held-out frames and an early-stopping callback may end the candidate (method.md §4).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError
from segfactory.factory.genotype import Genotype
from segfactory.search.presets import ProxySettings
from torch import Tensor

ShouldContinue = Callable[[int, float], bool]


class CandidateFailed(Exception):
    """A candidate that cannot be scored (non-finite loss, out of memory, an error in its model)."""


class _TimeUp(Exception):
    pass


# -- data prepared once per run --------------------------------------------------------------------------------

def heldout_split(names: list[str], fraction: float, blocks: int,
                  max_images: int | None = None) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices): ``blocks`` contiguous runs of frames in name order.

    The sorted frames are cut into ``blocks`` equal chunks and the last ``fraction`` of each chunk is held out,
    so held-out frames have no near-copy neighbours in training except at the few block edges.
    """
    n = len(names)
    order = sorted(range(n), key=lambda i: names[i])
    n_val = max(1, round(n * fraction))
    if max_images is not None:
        n_val = min(n_val, max_images)
    if n_val >= n:
        raise InputError(f"the train split has {n} images: too few to hold out {fraction:.0%} of them")
    blocks = max(1, min(blocks, n_val))
    held: list[int] = []
    for b in range(blocks):
        hi = (b + 1) * n // blocks
        take = n_val // blocks + (1 if b < n_val % blocks else 0)
        held += order[hi - take : hi]
    held_set = set(held)
    return [i for i in order if i not in held_set], sorted(held, key=lambda i: names[i])


class _Subset:
    """Items ``indices`` of a dataset, decoded once and kept in memory (a proxy reads them many times)."""

    def __init__(self, base, indices: list[int]) -> None:
        self.items = [base[i] for i in indices]
        self.ignore_index = base.ignore_index
        self.num_classes = base.num_classes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.items[i]


@dataclass
class ProxyData:
    """Everything a candidate's proxy training reads; built by :meth:`prepare` once per run."""

    config: ModelConfig
    settings: ProxySettings
    train: Any  # _Subset of the meta-train frames
    val_images: Tensor  # (N, 3, H, W) normalised
    val_masks: Tensor  # (N, H, W) int64
    encoder_state: dict[str, Tensor]
    cache_e0: Tensor  # (M, 24, h/4, w/4)
    cache_e1: Tensor  # (M, 32, h/8, w/8)
    cache_labels: Tensor  # (M, h/4, w/4) int64
    num_classes: int
    ignore_index: int
    heldout_names: list[str] = field(default_factory=list)
    prepare_s: float = 0.0

    @classmethod
    def prepare(cls, dataset, config: ModelConfig, settings: ProxySettings, seed: int,
                device: str = "cpu", heldout=None) -> ProxyData:
        """``heldout``: score on this dataset (e.g. the val split) and train on all of ``dataset`` instead."""
        from segfactory.factory.model import build_model
        from segfactory.factory.transforms import TrainTransform, normalize, resize_image, resize_mask

        t0 = time.monotonic()
        if config.num_classes != dataset.num_classes:
            raise InputError(f"the model has {config.num_classes} classes but {dataset.spec} has "
                             f"{dataset.num_classes}")
        if heldout is None:
            train_idx, val_idx = heldout_split(dataset.names, settings.val_fraction, settings.val_blocks,
                                               settings.val_max_images)
            val = _Subset(dataset, val_idx)
            val_names = [dataset.names[i] for i in val_idx]
        else:
            train_idx = list(range(len(dataset)))
            val = _Subset(heldout, list(range(len(heldout))))
            val_names = list(heldout.names)
        train = _Subset(dataset, train_idx)
        images, masks = [], []
        for image, mask in val.items:
            if settings.val_long_side is not None:
                h, w = mask.shape
                r = settings.val_long_side / max(h, w)
                size = (max(1, round(h * r)), max(1, round(w * r)))
                image, mask = resize_image(image, size), resize_mask(mask, size)
            images.append(image)
            masks.append(mask)
        if len({m.shape for m in masks}) > 1:
            raise InputError(f"{dataset.spec}: held-out images differ in size; set val_long_side in the preset")
        val_images = normalize(np.stack(images), config.mean, config.std)
        val_masks = torch.from_numpy(np.stack(masks).astype(np.int64))

        with torch.random.fork_rng():  # "none" weights: a seeded random encoder, the same in every process
            torch.manual_seed(seed)
            encoder = build_model(_any_genotype(), config, load_weights=True).encoder
        encoder_state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        encoder = encoder.to(device).eval()
        transform = TrainTransform(settings.crop, config.mean, config.std, dataset.ignore_index, settings.scale)
        e0s, e1s, labels = [], [], []
        with torch.no_grad():
            for j in range(settings.cache_size):
                image, mask = train[j % len(train)]
                x, y = transform(image, mask, np.random.default_rng([seed, 7, j]))
                e0, e1 = encoder(x[None].to(device))
                e0s.append(e0.cpu())
                e1s.append(e1.cpu())
                labels.append(torch.from_numpy(resize_mask(y.numpy(), tuple(e0.shape[-2:])).astype(np.int64)))
        e0, e1, lab = torch.cat(e0s), torch.cat(e1s), torch.stack(labels)
        if device == "cuda":  # the cache lives on the GPU (as upstream); validation tensors are pinned
            e0, e1, lab = e0.to(device), e1.to(device), lab.to(device)
            val_images, val_masks = val_images.pin_memory(), val_masks.pin_memory()
        return cls(config, settings, train, val_images, val_masks, encoder_state, e0, e1, lab, dataset.num_classes,
                   dataset.ignore_index, val_names, time.monotonic() - t0)


def _any_genotype() -> Genotype:
    from segfactory.factory.zoo import ZOO

    return ZOO["arch0"]


# -- one candidate ---------------------------------------------------------------------------------------------

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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def validate(model, data: ProxyData, device: str, batch: int) -> dict[str, Any]:
    """Metrics of ``model`` on the held-out frames (full model, logits at the label's size)."""
    from segfactory.factory.metrics import ConfusionMatrix

    cm = ConfusionMatrix(data.num_classes, data.ignore_index)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(data.val_images), batch):
            logits = model(data.val_images[i : i + batch].to(device, non_blocking=True))
            cm.update(logits.argmax(1).cpu(), data.val_masks[i : i + batch])
    return cm.summarize()


def train_candidate(genotype: Genotype, data: ProxyData, *, seed: int, device: str = "cpu",
                    should_continue: ShouldContinue | None = None) -> ProxyResult:
    """Proxy-train ``genotype`` and score it; never raises for a failure of the candidate itself."""
    result = ProxyResult("ok")
    s = data.settings
    deadline = time.monotonic() + s.time_limit_s if s.time_limit_s else math.inf
    try:
        with torch.random.fork_rng(devices=[torch.device(device)] if device == "cuda" else []):
            torch.manual_seed(seed)
            _run(genotype, data, seed, device, should_continue, deadline, result)
    except _TimeUp:
        if result.score is None:
            result.status, result.reason = "failed", f"time limit of {s.time_limit_s:g} s before any validation"
        else:
            result.status = "early-stopped"
            result.reason = f"time limit of {s.time_limit_s:g} s (scored at its last validation)"
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
    if result.status == "failed":
        result.miou = result.macc = result.fwiou = result.score = None
    return result


def _run(genotype: Genotype, data: ProxyData, seed: int, device: str, should_continue: ShouldContinue | None,
         deadline: float, result: ProxyResult) -> None:
    from segfactory.factory.model import SegModel
    from segfactory.factory.ops import resize
    from segfactory.factory.training import PolyakAverage, make_train_loader, seg_loss, set_epoch

    s = data.settings
    amp = device == "cuda"
    model = SegModel(genotype, data.config)
    model.encoder.load_state_dict(data.encoder_state)
    model.to(device)
    checkpoint = 0

    def check(loss: Tensor, stage: int, step: int) -> None:
        if not torch.isfinite(loss):
            raise CandidateFailed(f"non-finite loss in stage {stage} at step {step}")
        if time.monotonic() > deadline:
            raise _TimeUp

    def score_now() -> bool:
        nonlocal checkpoint
        t = time.monotonic()
        m = validate(model, data, device, s.val_batch)
        result.val_s += time.monotonic() - t
        result.miou, result.macc, result.fwiou, result.score = m["miou"], m["macc"], m["fwiou"], m["score"]
        result.checkpoints.append(m["score"])
        go_on = should_continue is None or should_continue(checkpoint, m["score"])
        checkpoint += 1
        if not go_on:
            result.status = "early-stopped"
            result.reason = f"early stopping at checkpoint {checkpoint - 1} (score {m['score']:.4f})"
        if time.monotonic() > deadline:
            raise _TimeUp
        return go_on

    # Stage 1: the decoder alone, on the cached encoder features.
    t = time.monotonic()
    decoder = model.decoder
    decoder.train()
    opt = torch.optim.Adam(decoder.parameters(), lr=s.stage1_lr, weight_decay=s.weight_decay)
    avg = PolyakAverage(decoder, s.stage1_polyak)
    g = torch.Generator().manual_seed(seed)
    n = len(data.cache_labels)
    for _epoch in range(s.stage1_epochs):
        order = torch.randperm(n, generator=g)
        for start in range(0, max(n - s.stage1_batch, 0) + 1, s.stage1_batch):  # drop the last partial batch
            idx = order[start : start + s.stage1_batch]
            e0, e1 = data.cache_e0[idx].to(device), data.cache_e1[idx].to(device)
            target = data.cache_labels[idx].to(device)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                logits = decoder(e0, e1)
            # Upstream resizes the logits to the cached label's size (E0's) in this stage.
            loss = seg_loss(resize(logits.float(), target.shape[-2:]), target, data.ignore_index)
            check(loss, 1, result.steps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), s.grad_clip)
            opt.step()
            avg.update(decoder)
            result.steps += 1
        avg.copy_to(decoder)
    result.stage1_s = time.monotonic() - t
    if not score_now() or s.stage2_epochs == 0:
        return

    # Stage 2: encoder and decoder end to end.
    t = time.monotonic()
    enc_params, dec_params = list(model.encoder.parameters()), list(model.decoder.parameters())
    opt = torch.optim.Adam([{"params": enc_params, "lr": s.stage2_enc_lr},
                            {"params": dec_params, "lr": s.stage2_dec_lr}], weight_decay=s.weight_decay)
    avg = PolyakAverage(model, s.stage2_polyak)
    loader = make_train_loader(data.train, data.config, s.crop, s.stage2_batch, s.workers, seed, s.scale)
    for epoch in range(s.stage2_epochs):
        model.train()
        set_epoch(loader, epoch)
        for step, (images, masks) in enumerate(loader):
            if s.stage2_steps is not None and step >= s.stage2_steps:
                break
            images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                logits = model(images, native=True)
            loss = seg_loss(logits.float(), masks, data.ignore_index)
            check(loss, 2, result.steps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(enc_params, s.grad_clip)
            torch.nn.utils.clip_grad_norm_(dec_params, s.grad_clip)
            opt.step()
            avg.update(model)
            result.steps += 1
        avg.copy_to(model)
        result.stage2_s += time.monotonic() - t
        go_on = score_now()
        t = time.monotonic()
        if not go_on:
            return
