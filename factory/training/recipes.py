"""Training recipes: named sets of optimiser, schedule, augmentation and loss settings, in a registry.

Every recipe decays its learning rates (polynomial, power 0.9, over the epochs or over the time budget): with a
constant rate the final weights swing (arch0, 30 epochs of Adam at constant rates on CamVid: val mIoU between 0.51
and 0.64 over the last 10 epochs), and users deploy the final weights. ``segfactory build`` trains each model with
every recipe of :data:`BUILD_RECIPES` and keeps the better one on val, so no model is handicapped by a recipe that
suits another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from segfactory.factory.errors import InputError
from segfactory.factory.registry import Registry

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("poly", "constant")
LOSS_AT = ("native", "output")
# The poly schedule's power: upstream's, for every recipe and for the search proxy's poly schedule
POLY_POWER = 0.9


@dataclass(frozen=True)
class Recipe:
    """How to train: optimiser, rates, schedule, augmentation, loss. Sizes are (H, W)."""

    optimizer: str = "adam"  # adam (coupled L2, as upstream) | adamw (decoupled) | sgd (momentum)
    encoder_lr: float = 5e-4  # encoder (backbone) group
    decoder_lr: float = 2e-3  # decoder (head) group
    weight_decay: float = 1e-5
    momentum: float = 0.9  # sgd only
    schedule: str = "poly"  # poly: lr * (1 - progress) ** poly_power | constant
    poly_power: float = POLY_POWER
    crop: tuple[int, int] = (256, 256)
    scale: tuple[float, float] = (0.5, 2.0)  # random scale of the image before the crop
    flip: bool = True
    batch_size: int = 8
    grad_clip: float = 3.0  # max gradient norm, encoder and decoder separately (method.md §5); 0: off
    loss_at: str = "native"  # native: the head's own resolution (the paper) | output: the input's resolution
    polyak: float | None = None  # EMA decay per step; None: off

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop", tuple(self.crop))
        object.__setattr__(self, "scale", tuple(self.scale))
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("loss_at", LOSS_AT)):
            if getattr(self, name) not in choices:
                raise InputError(f"{name} {getattr(self, name)!r} is not one of {', '.join(choices)}")
        for name in ("encoder_lr", "decoder_lr"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                raise InputError(f"--{name.replace('_', '-')} {value!r} must be a positive finite number")
        for name in ("weight_decay", "grad_clip", "poly_power", "momentum"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise InputError(f"--{name.replace('_', '-')} {value!r} must be a finite number >= 0")
        if len(self.crop) != 2 or min(self.crop) < 8:
            raise InputError(f"crop {self.crop} must be HxW with sides >= 8")
        if not (len(self.scale) == 2 and _finite(self.scale[0]) and _finite(self.scale[1])
                and 0 < self.scale[0] <= self.scale[1]):
            raise InputError(f"scale range {self.scale} must satisfy 0 < low <= high")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"batch size {self.batch_size!r} must be a positive integer")
        if self.polyak is not None and not (_finite(self.polyak) and 0 <= self.polyak < 1):
            raise InputError(f"--polyak {self.polyak!r} must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop"], d["scale"] = list(self.crop), list(self.scale)
        return d

    def with_(self, **changes: Any) -> Recipe:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise InputError(f"unknown recipe setting(s): {', '.join(sorted(unknown))}")
        return Recipe(**{**self.to_dict(), **changes})


def _finite(x: Any) -> bool:
    import math

    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


RECIPES: Registry[Recipe] = Registry("training recipe")
RECIPES.register("adam-poly", Recipe(), help="the paper's stage-2 Adam (encoder 5e-4, decoder 2e-3, weight decay "
                 "1e-5), polynomial decay, batch 8, scale 0.5-2 then 256x256 crops, clip 3.0, loss at the head's "
                 "resolution")
RECIPES.register("adamw-poly", Recipe(
    optimizer="adamw", encoder_lr=2e-3, decoder_lr=2e-3, weight_decay=1e-4, crop=(240, 320), scale=(0.5, 1.0),
    grad_clip=0.0, loss_at="output",
), help="AdamW 2e-3, weight decay 1e-4, polynomial decay, batch 8, scale 0.5-1 then 240x320 crops, loss at the "
        "input's resolution (torchvision's segmentation recipe; LR-ASPP from scratch reaches ~59% CamVid val mIoU "
        "in 35 CPU minutes with it)")
DEFAULT_RECIPE = "adam-poly"
BUILD_RECIPES = ("adamw-poly", "adam-poly")
