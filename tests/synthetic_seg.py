"""Tiny synthetic segmentation datasets made by the tests: CamVid (SegNet) and folder layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_pair(rng: np.random.Generator, size: tuple[int, int], num_classes: int,
              ignore: int) -> tuple[np.ndarray, np.ndarray]:
    """An image whose colour follows its mask (learnable), a few ignore pixels included."""
    h, w = size
    mask = np.zeros((h, w), dtype=np.uint8)
    for c in range(1, num_classes):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        mask[y : y + rng.integers(8, h // 2 + 9), x : x + rng.integers(8, w // 2 + 9)] = c
    mask[: 2, : 3] = ignore
    colours = rng.permutation(np.linspace(20, 235, num_classes + 1).astype(np.uint8))[:num_classes]
    base = np.stack([colours, colours[::-1], np.roll(colours, 1)], axis=1)  # (K, 3)
    image = base[np.minimum(mask, num_classes - 1)].astype(np.int16) + rng.integers(-10, 11, (h, w, 3))
    return image.clip(0, 255).astype(np.uint8), mask


def make_camvid(root: Path, counts=(("train", 6), ("val", 3)), size=(64, 96), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in counts:
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image, mask = make_pair(rng, size, 11, 11)
            Image.fromarray(image).save(root / split / f"seq_{i:04d}.png")
            Image.fromarray(mask).save(root / f"{split}annot" / f"seq_{i:04d}.png")
    return root


def make_folder(root: Path, count: int = 4, size=(64, 96), num_classes: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = make_pair(rng, size, num_classes, 255)
        Image.fromarray(image).save(root / "images" / f"img{i}.jpg", quality=95)
        Image.fromarray(mask).save(root / "masks" / f"img{i}.png")
    return root
