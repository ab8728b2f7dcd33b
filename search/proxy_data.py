"""What a search's proxy training reads, prepared once per run (method.md §5).

:class:`ProxyData` is built once per search run: the held-out frames (blocks of contiguous frames from every
recording, see :func:`heldout_split`), the rest for training, the pretrained encoder's weights, and the stage-1
cache (encoder outputs E0, E1 of augmented crops drawn at random, with a seed, from the whole training part, so
every recording contributes). Candidates are trained by :mod:`segfactory.search.proxy`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError
from segfactory.search.presets import ProxySettings
from torch import Tensor

# -- data prepared once per run --------------------------------------------------------------------------------

def heldout_split(names: list[str], sequences: list[str], fraction: float, blocks: int,
                  max_images: int | None = None, gap: int = 1) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices): ``blocks`` contiguous runs of frames from every recording.

    Each recording (``sequences``: its label per frame) holds out about ``fraction`` of its frames, in
    ``blocks`` runs spread evenly over it (at least one frame per run), so the score covers every recording and
    every part of it rather than one burst of near-identical frames. ``gap`` frames on each side of a run are
    used for neither side: they are near copies of the held-out frames.
    """
    n = len(names)
    n_val = max(1, round(n * fraction))
    if max_images is not None:
        n_val = min(n_val, max_images)
    if n_val >= n:
        raise InputError(f"the train split has {n} images: too few to hold out {fraction:.0%} of them")
    groups: dict[str, list[int]] = {}
    for i in sorted(range(n), key=lambda i: names[i]):
        groups.setdefault(sequences[i], []).append(i)
    held: list[int] = []
    unused: set[int] = set()
    for seq, take in _quotas(n_val, {seq: len(frames) for seq, frames in groups.items()}).items():
        frames = groups[seq]
        runs = max(1, min(blocks, take))
        for b in range(runs if take else 0):
            size = take // runs + (1 if b < take % runs else 0)
            end = round((b + 1) * len(frames) / runs)  # each run ends at the end of its slice of the recording
            start = max(0, end - size)
            held += frames[start:end]
            unused.update(frames[max(0, start - gap):start] + frames[end:end + gap])
    held_set = set(held)
    train = [i for i in sorted(range(n), key=lambda i: names[i]) if i not in held_set and i not in unused]
    if not train:
        raise InputError(f"the train split has {n} images: none is left for training after holding out {len(held)}")
    return train, sorted(held, key=lambda i: names[i])


def _quotas(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """``total`` split over the recordings in proportion to their sizes (largest remainders), at least one
    each where ``total`` allows, never more than a recording has."""
    n = sum(sizes.values())
    exact = {k: total * v / n for k, v in sorted(sizes.items())}
    quota = {k: int(x) for k, x in exact.items()}
    if total >= len(sizes):
        quota = {k: max(1, q) for k, q in quota.items()}
    for k in sorted(exact, key=lambda k: exact[k] - int(exact[k]), reverse=True):
        if sum(quota.values()) >= total:
            break
        quota[k] += 1
    while sum(quota.values()) > total:  # the minimum of one each overshot: take from the largest
        k = max(quota, key=lambda k: quota[k])
        quota[k] -= 1
    return {k: min(q, sizes[k] - 1 if sizes[k] > 1 else q) for k, q in quota.items()}


class _Subset:
    """Items ``indices`` of a dataset, decoded once and kept in memory (a proxy reads them many times)."""

    def __init__(self, base, indices: list[int], long_side: int | None = None) -> None:
        from segfactory.factory.transforms import resize_image, resize_mask

        self.items = []
        for i in indices:
            image, mask = base[i]
            if long_side is not None:
                h, w = mask.shape
                r = long_side / max(h, w)
                size = (max(1, round(h * r)), max(1, round(w * r)))
                image, mask = resize_image(image, size), resize_mask(mask, size)
            self.items.append((image, mask))
        self.names = [base.names[i] for i in indices]
        self.ignore_index, self.num_classes = base.ignore_index, base.num_classes
        self.class_names = tuple(getattr(base, "class_names", ()))
        self.spec, self.split = getattr(base, "spec", "data"), "held-out"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.items[i]


def _sequences(dataset) -> list[str]:
    from segfactory.factory.datasets import sequence_labels

    labels = getattr(dataset, "sequences", None)
    return list(labels) if labels is not None else sequence_labels(getattr(dataset, "spec", ""), dataset.names)


@dataclass
class ProxyData:
    """Everything a candidate's proxy training reads; built by :meth:`prepare` once per run."""

    config: ModelConfig
    settings: ProxySettings
    train: Any  # _Subset of the training frames
    heldout: Any  # _Subset of the held-out frames (resized to settings.val_long_side)
    encoder_state: dict[str, Tensor]
    cache_e0: Tensor  # (M, 24, h/4, w/4)
    cache_e1: Tensor  # (M, 32, h/8, w/8)
    cache_labels: Tensor  # (M, h/4, w/4) int64
    num_classes: int
    ignore_index: int
    cache_sources: list[str] = field(default_factory=list)  # the frame each cached crop was cut from
    prepare_s: float = 0.0

    @property
    def heldout_names(self) -> list[str]:
        return list(self.heldout.names)

    @classmethod
    def prepare(cls, dataset, config: ModelConfig, settings: ProxySettings, seed: int,
                device: str = "cpu", heldout=None) -> ProxyData:
        """``heldout``: score on this dataset (e.g. the val split) and train on all of ``dataset`` instead."""
        t0 = time.monotonic()
        if config.num_classes != dataset.num_classes:
            raise InputError(f"the model has {config.num_classes} classes but {dataset.spec} has "
                             f"{dataset.num_classes}")
        if heldout is None:
            train_idx, val_idx = heldout_split(dataset.names, _sequences(dataset), settings.val_fraction,
                                               settings.val_blocks, settings.val_max_images, settings.val_gap)
            held = _Subset(dataset, val_idx, settings.val_long_side)
        else:
            train_idx = list(range(len(dataset)))
            held = _Subset(heldout, list(range(len(heldout))), settings.val_long_side)
        if len({m.shape for _, m in held.items}) > 1:
            raise InputError(f"{dataset.spec}: held-out images differ in size; set val_long_side in the preset")
        train = _Subset(dataset, train_idx)
        encoder_state, (e0, e1, labels, sources) = _encoder_and_cache(train, config, settings, seed, device)
        return cls(config, settings, train, held, encoder_state, e0, e1, labels, dataset.num_classes,
                   dataset.ignore_index, sources, time.monotonic() - t0)


def _encoder_and_cache(train: _Subset, config: ModelConfig, settings: ProxySettings, seed: int, device: str):
    """The pretrained encoder's weights and the stage-1 cache of ``settings.cache_size`` augmented crops."""
    from segfactory.factory.model import build_model
    from segfactory.factory.transforms import TrainTransform, resize_mask
    from segfactory.factory.zoo import ZOO

    with torch.random.fork_rng():  # "none" weights: a seeded random encoder, the same in every process
        torch.manual_seed(seed)
        encoder = build_model(ZOO["arch0"], config, load_weights=True).encoder
    encoder_state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    encoder = encoder.to(device).eval()
    transform = TrainTransform(settings.crop, config.mean, config.std, train.ignore_index, settings.scale)
    # a seeded random sample of the training frames, without replacement while it lasts
    rng = np.random.default_rng([seed, 11])
    rounds = -(-settings.cache_size // len(train))
    picks = np.concatenate([rng.permutation(len(train)) for _ in range(rounds)])[: settings.cache_size]
    e0s, e1s, labels = [], [], []
    with torch.no_grad():
        for j, i in enumerate(picks):
            image, mask = train[int(i)]
            x, y = transform(image, mask, np.random.default_rng([seed, 7, j]))
            e0, e1 = encoder(x[None].to(device))
            e0s.append(e0.cpu())
            e1s.append(e1.cpu())
            labels.append(torch.from_numpy(resize_mask(y.numpy(), tuple(e0.shape[-2:])).astype(np.int64)))
    e0, e1, lab = torch.cat(e0s), torch.cat(e1s), torch.stack(labels)
    if device == "cuda":  # the cache lives on the GPU, as upstream
        e0, e1, lab = e0.to(device), e1.to(device), lab.to(device)
    return encoder_state, (e0, e1, lab, [train.names[int(i)] for i in picks])
