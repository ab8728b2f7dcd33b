"""Encoder weight files: the bundled ImageNet weights, torchvision's, or a segfactory encoder file.

A segfactory encoder file is a ``torch.save`` of plain data (loadable with ``weights_only=True``)::

    {"format": "segfactory.encoder-weights/1", "state_dict": {"features.0.0.weight": ..., ...},
     "padding": "tf_same", "mean": [...], "std": [...], "source": "...", "licence": "...", "made_by": {...}}
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError, RunError

FORMAT = "segfactory.encoder-weights/1"
BUNDLED_NAME = "mobilenetv2_imagenet_stages3.pt"


def bundled_path() -> Path:
    return Path(str(resources.files("segfactory.factory.weights").joinpath(BUNDLED_NAME)))


def read_weights_file(path: str | Path) -> dict[str, Any]:
    """Load and check a segfactory encoder weights file."""
    from segfactory.factory.io import load_torch_file

    path = Path(path)
    data = load_torch_file(path, "encoder weights file")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path} is not a segfactory encoder weights file (no {FORMAT!r} format field); make one "
                         "with `segfactory weights import-tflite` or pass bundled, torchvision or none")
    for key in ("state_dict", "padding", "mean", "std"):
        if key not in data:
            raise InputError(f"encoder weights file {path} lacks {key!r}")
    return data


def load_encoder_weights(encoder, tag: str) -> None:
    """Load weights ``tag`` (bundled | torchvision | path) into an :class:`~segfactory.factory.encoder.Encoder`."""
    if tag == "bundled":
        path = bundled_path()
        if not path.is_file():
            raise RunError(f"the bundled encoder weights {path} are missing; run `segfactory weights import-tflite`")
        state = read_weights_file(path)["state_dict"]
    elif tag == "torchvision":
        state = _torchvision_state()
    else:
        state = read_weights_file(tag)["state_dict"]
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing:
        raise InputError(f"encoder weights {tag!r} lack {len(missing)} tensors, e.g. {missing[0]}")
    # A whole-network file may hold later blocks and the classifier: only features[:7] are used.
    del unexpected


def _torchvision_state() -> dict:
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    try:
        model = mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1)
    except Exception as e:  # noqa: BLE001 - network or cache problems
        raise RunError(f"cannot get torchvision's MobileNetV2 weights (no internet?): {str(e).splitlines()[0]}") from None
    return {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
