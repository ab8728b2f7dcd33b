"""ModelConfig: everything that turns a genotype into a concrete model, besides the genotype itself.

It travels beside the genotype, never inside it (design.md). The encoder's padding mode and input
normalisation belong to its weights, so :meth:`ModelConfig.create` derives them from the weights tag.
This module imports no torch unless asked about a weights file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError

FORMAT = "segfactory.model-config/1"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_MEAN = (0.5, 0.5, 0.5)  # the TFLite MobileNetV2 expects x / 127.5 - 1
TF_STD = (0.5, 0.5, 0.5)

WEIGHT_TAGS = ("bundled", "torchvision", "none")
PADDINGS = ("tf_same", "symmetric")

# What a model config's numbers may be: ModelConfig checks them, the command-line flags offer these ranges.
LIMITS = {"num_classes": (1, 1000), "agg_size": (1, 4096), "sep_repeats": (1, 8)}


@dataclass(frozen=True)
class ConfigDefaults:
    """The model-configuration numbers a use starts from (ModelConfig's fields besides the derived ones)."""

    num_classes: int
    agg_size: int
    sep_repeats: int
    encoder_weights: str


# The one home of the project's model defaults: ModelConfig's fields and ModelConfig.create, the --num-classes,
# --agg-size, --sep-repeats and --encoder-weights flags of every command, and the search's deployed model read
# RELEASED (the published CamVid models); the search's proxies read SEARCH_PROXY (the paper's search trains
# narrower, shallower decoders; a proxy's classes and encoder are always the deployed model's).
RELEASED = ConfigDefaults(num_classes=11, agg_size=64, sep_repeats=2, encoder_weights="bundled")
SEARCH_PROXY = replace(RELEASED, agg_size=48, sep_repeats=1)


@dataclass(frozen=True)
class ModelConfig:
    num_classes: int = RELEASED.num_classes
    agg_size: int = RELEASED.agg_size
    sep_repeats: int = RELEASED.sep_repeats
    encoder_weights: str = RELEASED.encoder_weights  # bundled | torchvision | none | a segfactory encoder file
    # the released weights' conventions (weights_conventions); a test checks ModelConfig() == ModelConfig.create()
    encoder_padding: str = "tf_same"  # tf_same (TensorFlow 'SAME', for TF-trained weights) | symmetric
    mean: tuple[float, float, float] = TF_MEAN
    std: tuple[float, float, float] = TF_STD
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for name, (lo, hi) in LIMITS.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise InputError(f"model config {name}={v!r} is out of range {lo}..{hi}")
        if self.encoder_padding not in PADDINGS:
            raise InputError(f"model config encoder_padding={self.encoder_padding!r} is not one of {PADDINGS}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) != 3 or not all(isinstance(x, (int, float)) for x in v):
                raise InputError(f"model config {name}={v!r} must be three numbers")
        if any(s <= 0 for s in self.std):
            raise InputError(f"model config std={self.std!r} must be positive")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise InputError(
                f"model config class_names has {len(self.class_names)} names for num_classes={self.num_classes}"
            )

    @classmethod
    def create(
        cls,
        num_classes: int = RELEASED.num_classes,
        agg_size: int = RELEASED.agg_size,
        sep_repeats: int = RELEASED.sep_repeats,
        encoder_weights: str = RELEASED.encoder_weights,
        class_names: tuple[str, ...] = (),
    ) -> ModelConfig:
        """A config whose padding and normalisation are those the encoder weights were trained with."""
        padding, mean, std = weights_conventions(encoder_weights)
        return cls(num_classes, agg_size, sep_repeats, str(encoder_weights), padding, mean, std, tuple(class_names))

    def with_(self, **changes: Any) -> ModelConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"], d["class_names"] = list(self.mean), list(self.std), list(self.class_names)
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        if not isinstance(data, dict):
            raise InputError(f"model config must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        fmt = data.pop("format", FORMAT)
        if fmt != FORMAT:
            raise InputError(f"model config format={fmt!r} is not {FORMAT!r}")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InputError(f"model config has unknown field(s): {', '.join(sorted(unknown))}")
        for name in ("mean", "std", "class_names"):
            if name in data:
                data[name] = tuple(data[name])
        return cls(**data)

    def key(self) -> str:
        """A short stable hash of the fields that change the model or its input (class names excluded)."""
        d = self.to_dict()
        d.pop("class_names")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def weights_conventions(tag: str) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """(padding, mean, std) that go with encoder weights ``tag``."""
    if tag == "bundled":
        return "tf_same", TF_MEAN, TF_STD
    if tag in ("torchvision", "none"):
        return "symmetric", IMAGENET_MEAN, IMAGENET_STD
    path = Path(tag)
    if not path.is_file():
        raise InputError(f"encoder weights {tag!r} is neither one of {', '.join(WEIGHT_TAGS)} nor an existing file")
    from segfactory.factory.encoder_weights import read_weights_file

    meta = read_weights_file(path)
    return meta["padding"], tuple(meta["mean"]), tuple(meta["std"])
