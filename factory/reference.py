"""Reference models: torchvision's segmentation networks a user would otherwise pick, as first-class models.

A :class:`Reference` names one; ``build_model(Reference(...), config)`` builds it through the same function as a
genotype, and everything downstream (train, eval, export, bench, build, checkpoints, cards) handles both. They
are trained from scratch here (``weights=None, weights_backbone=None``): torchvision's pretrained weights need the
internet. :class:`segfactory.factory.model.ReferenceModel` gives them the project's model contract: ``forward(x)`` returns one
logits tensor at the input size (not torchvision's dict), ``forward(x, native=True)`` the head's logits at its own
stride (8 for LRASPP and DeepLabV3-MobileNetV3) that training may use, and ``encoder``/``decoder`` name the
backbone and the head, so optimiser groups and per-part gradient clipping treat every model alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from segfactory.factory.errors import InputError
from segfactory.factory.registry import Registry

FORMAT = "segfactory.reference/1"

# name -> builder(num_classes) -> torchvision model (weights=None)
REFERENCES: Registry[Callable[[int], Any]] = Registry("reference model")


@REFERENCES.register("lraspp_mobilenet_v3_large", help="torchvision LR-ASPP, MobileNetV3-Large backbone")
def _lraspp(num_classes: int):
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)


@REFERENCES.register("deeplabv3_mobilenet_v3_large", help="torchvision DeepLabV3, MobileNetV3-Large backbone")
def _deeplab(num_classes: int):
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes,
                                        aux_loss=False)


@dataclass(frozen=True)
class Reference:
    """A reference architecture by name (one of :data:`REFERENCES`)."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in REFERENCES:
            raise InputError(f"unknown reference model {self.name!r} (one of {', '.join(REFERENCES.names())})")

    def key(self) -> str:
        return hashlib.sha256(f"reference:{self.name}".encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "reference": self.name}

    @classmethod
    def from_dict(cls, data: Any) -> Reference:
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("reference"), str):
            raise InputError(f"{data!r} is not a {FORMAT} object")
        return cls(data["reference"])

    def __str__(self) -> str:
        return self.name
