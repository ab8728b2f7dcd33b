"""Training augmentation (random scale, random crop padded with ignore, horizontal flip) and normalisation.

Every random choice comes from a ``numpy.random.Generator`` the caller passes, so a seed fixes the result
whatever the number of loader workers. Images are uint8 (H, W, 3), masks int64 (H, W).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 (H, W, 3) image to ``size`` (H, W)."""
    from PIL import Image

    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a (H, W, ...) array: each output pixel takes the value under its centre."""
    h, w = mask.shape[:2]
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return mask[rows[:, None], cols[None, :]]


def random_scale(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                 scale: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    s = float(rng.uniform(scale[0], scale[1]))
    h, w = mask.shape
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return resize_image(image, size), resize_mask(mask, size)


def random_crop(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, crop: tuple[int, int],
                ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """A random ``crop`` (H, W) window; smaller inputs are padded (image with 0, mask with ``ignore_index``)."""
    h, w = mask.shape
    ph, pw = max(crop[0] - h, 0), max(crop[1] - w, 0)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=ignore_index)
        h, w = mask.shape
    y = int(rng.integers(0, h - crop[0] + 1))
    x = int(rng.integers(0, w - crop[1] + 1))
    return image[y : y + crop[0], x : x + crop[1]], mask[y : y + crop[0], x : x + crop[1]]


def random_hflip(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if rng.random() < 0.5:
        return image[:, ::-1], mask[:, ::-1]
    return image, mask


def normalize(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (H, W, 3) or (N, H, W, 3) -> float32 (3, H, W) or (N, 3, H, W): ``(x / 255 - mean) / std``."""
    array = np.ascontiguousarray(images)
    if not array.flags.writeable:  # a cached or memory-mapped batch: torch warns on read-only memory
        array = array.copy()
    x = torch.from_numpy(array).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32)
    s = torch.tensor(std, dtype=torch.float32)
    x = (x - m) / s
    return x.movedim(-1, -3).contiguous()


@dataclass(frozen=True)
class TrainTransform:
    """Random scale -> random crop (padded) -> horizontal flip -> normalise; image and mask stay aligned."""

    crop: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ignore_index: int
    scale: tuple[float, float] = (0.5, 2.0)
    flip: bool = True

    def augment(self, image: np.ndarray, mask: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The geometric part alone (uint8 image, int64 mask), for tests and previews."""
        if self.scale != (1.0, 1.0):
            image, mask = random_scale(image, mask, rng, self.scale)
        image, mask = random_crop(image, mask, rng, self.crop, self.ignore_index)
        if self.flip:
            image, mask = random_hflip(image, mask, rng)
        return image, mask

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.augment(image, mask, rng)
        return normalize(image, self.mean, self.std), torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))
