"""Training data: augmented, seeded batches of a segmentation dataset, reproducible across resumes and workers."""

from __future__ import annotations

import numpy as np
import torch
from segfactory.factory.errors import InputError, RunError
from torch import Tensor


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
                      scale: tuple[float, float] = (0.5, 2.0), *, flip: bool = True,
                      pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """Shuffled, augmented batches ``(images (N, 3, h, w) float, masks (N, h, w) int64)`` of ``dataset``.

    ``config`` (a ModelConfig) gives the normalisation. Call :func:`set_epoch` before each epoch. ``pin_memory``
    (for CUDA) makes host-to-device copies asynchronous.
    """
    from segfactory.factory.transforms import TrainTransform

    transform = TrainTransform(tuple(crop), tuple(config.mean), tuple(config.std), dataset.ignore_index,
                               tuple(scale), flip)
    data = AugmentedDataset(dataset, transform, seed)
    return torch.utils.data.DataLoader(
        data, batch_size=batch_size, sampler=EpochSampler(len(dataset), seed), num_workers=workers,
        drop_last=len(dataset) >= 2 * batch_size, pin_memory=pin_memory,
    )


def set_epoch(loader: torch.utils.data.DataLoader, epoch: int) -> None:
    loader.dataset.epoch = epoch
    loader.sampler.epoch = epoch


def iterate(loader):
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
