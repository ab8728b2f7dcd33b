"""``TrainConfig``: everything that defines a training run — the architecture, the data, a recipe (with any
settings overridden) and the budget, in epochs or in minutes of wall time counted over every resumed part."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from segfactory.factory.config import RELEASED
from segfactory.factory.errors import InputError
from segfactory.factory.training.recipes import DEFAULT_RECIPE, RECIPES, Recipe

# Settings a resumed run may change; every other one must match the interrupted run's.
RUNTIME_FIELDS = ("epochs", "minutes", "device", "amp", "workers", "val_every", "threads")
RECIPE_FIELDS = tuple(f.name for f in fields(Recipe))
DEFAULT_EPOCHS = 30


@dataclass
class TrainConfig:
    """A training run. Recipe settings left None come from ``recipe``; ``settings`` is the resolved recipe."""

    arch: str
    data: str
    recipe: str = DEFAULT_RECIPE
    epochs: int | None = None  # one of epochs and minutes; neither: DEFAULT_EPOCHS
    minutes: float | None = None  # wall time, validation included, counted across resumes
    # recipe overrides (None: the recipe's)
    optimizer: str | None = None
    encoder_lr: float | None = None
    decoder_lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    schedule: str | None = None
    poly_power: float | None = None
    crop: tuple[int, int] | None = None
    scale: tuple[float, float] | None = None
    flip: bool | None = None
    batch_size: int | None = None
    grad_clip: float | None = None
    loss_at: str | None = None
    polyak: float | None = None
    # the model and the data
    seed: int = 0
    num_classes: int | None = None  # None: the dataset's own (required for folder data)
    ignore_index: int | None = None
    agg_size: int = RELEASED.agg_size
    sep_repeats: int = RELEASED.sep_repeats
    encoder_weights: str = RELEASED.encoder_weights  # a reference model always trains from scratch ("none")
    train_split: str = "train"
    val_split: str = "val"
    val_images: int | None = None  # validate on the first N images of the val split (None: all)
    # runtime
    device: str = "cpu"
    amp: bool = False
    workers: int = 2
    val_every: int = 1  # validate after every N-th epoch (and always at the end); 0: at the end only
    threads: int | None = None  # torch threads (None: torch's default)
    settings: Recipe = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise InputError(f"unknown recipe {self.recipe!r} (one of {', '.join(RECIPES.names())})")
        overrides = {name: getattr(self, name) for name in RECIPE_FIELDS if getattr(self, name) is not None}
        self.settings = RECIPES.get(self.recipe).with_(**overrides)
        for name in RECIPE_FIELDS:  # the resolved values, so that a resumed run compares what was used
            setattr(self, name, getattr(self.settings, name))
        if self.epochs is not None and self.minutes is not None:
            raise InputError("give --epochs or --minutes, not both")
        if self.epochs is None and self.minutes is None:
            self.epochs = DEFAULT_EPOCHS
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int)
                                        or self.epochs < 1):
            raise InputError(f"--epochs {self.epochs!r} must be a positive integer")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise InputError(f"--minutes {self.minutes!r} must be a positive number")
        if self.amp and self.device != "cuda":
            raise InputError("--amp needs a CUDA device (--device cuda)")
        if self.val_images is not None and self.val_images < 1:
            raise InputError(f"--val-images {self.val_images} must be at least 1")

    @property
    def budget_s(self) -> float | None:
        return None if self.minutes is None else 60.0 * self.minutes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("settings")
        d["crop"], d["scale"] = list(self.crop), list(self.scale)
        return d
