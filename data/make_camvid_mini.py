"""Rebuild data/camvid-mini from the SegNet CamVid copy: python data/make_camvid_mini.py [SRC] [--out DIR].

40 train + 12 val pairs, frames evenly spaced over each split's sorted list (so every video of the split is
represented), downscaled to 180x240 (HxW): images bilinear (antialiased), labels nearest neighbour.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (180, 240)  # H, W
COUNTS = {"train": 40, "val": 12}


def spread(items: list[Path], count: int) -> list[Path]:
    """``count`` items evenly spaced over ``items`` (first and last included)."""
    idx = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in idx]


def main() -> None:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("src", nargs="?", default=str(here.parents[1] / "shared" / "data" / "camvid"))
    parser.add_argument("--out", default=str(here / "camvid-mini"))
    args = parser.parse_args()
    src, out = Path(args.src), Path(args.out)
    for split, count in COUNTS.items():
        frames = spread(sorted((src / split).glob("*.png")), count)
        (out / split).mkdir(parents=True, exist_ok=True)
        (out / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for f in frames:
            img = Image.open(f).convert("RGB").resize((SIZE[1], SIZE[0]), Image.BILINEAR)
            img.save(out / split / f.name, optimize=True)
            lab = Image.open(src / f"{split}annot" / f.name).resize((SIZE[1], SIZE[0]), Image.NEAREST)
            lab.save(out / f"{split}annot" / f.name, optimize=True)
        print(f"{split}: {len(frames)} pairs")


if __name__ == "__main__":
    main()
