"""``OnnxPredictor``: label maps from an exported ONNX model with ONNX Runtime (the predictor protocol of
``segfactory.factory.evaluate``: uint8 (N, H, W, 3) RGB in, integer (N, H, W) labels out at the images' size).

It learns what the graph wants from the graph itself (input size and dtype, output kind) and the normalisation
from the ``segfactory.*`` metadata that ``export_onnx`` stores in it, or else from the model card ``FILE.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from segfactory.factory.errors import InputError, RunError

ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


def open_session(path: str | Path, threads: int | None = None, providers: list[str] | None = None):
    """An ONNX Runtime session on ``path`` (CPU unless ``providers`` says otherwise)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX model {path} does not exist")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise InputError(f"ONNX model {path} cannot be loaded by ONNX Runtime: {first}") from None


def _card_metadata(path: Path) -> dict[str, Any]:
    """The model card beside ``path`` (checked against the file: a stale card is an error), or {}."""
    from segfactory.export.card import read_card

    return read_card(path) or {}


class OnnxPredictor:
    """``predictor(images uint8 (N, H, W, 3)) -> int64 labels (N, H, W)`` through ONNX Runtime."""

    def __init__(self, path: str | Path, *, threads: int | None = None, providers: list[str] | None = None) -> None:
        self.path = Path(path)
        self.session = open_session(self.path, threads, providers)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise InputError(f"ONNX model {self.path} has {len(inputs)} inputs and {len(outputs)} outputs; "
                             "a segmentation model has one of each")
        self.input, self.output = inputs[0], outputs[0]
        if len(self.input.shape) != 4 or self.input.shape[1] not in (3, "3"):
            raise InputError(f"ONNX model {self.path} input {self.input.name!r} has shape {self.input.shape}, "
                             "not (N, 3, H, W)")
        if self.input.type not in ORT_TYPES:
            raise InputError(f"ONNX model {self.path} input type {self.input.type} is not float, float16 or uint8")
        self.input_dtype = ORT_TYPES[self.input.type]
        h, w = self.input.shape[2], self.input.shape[3]
        self.input_size = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        batch = self.input.shape[0]
        self.max_batch = batch if isinstance(batch, int) else None  # None: dynamic
        if len(self.output.shape) == 4:
            self.output_kind = "logits"
        elif len(self.output.shape) == 3:
            self.output_kind = "labels"
        else:
            raise InputError(f"ONNX model {self.path} output shape {self.output.shape} is neither logits "
                             "(N, K, H, W) nor labels (N, H, W)")
        meta = self._metadata()
        config = meta.get("model_config") or {}
        self.mean = tuple(config.get("mean", ())) or None
        self.std = tuple(config.get("std", ())) or None
        self.class_names = tuple(config.get("class_names", ()))
        k = self.output.shape[1] if self.output_kind == "logits" else None
        self.num_classes = k if isinstance(k, int) else config.get("num_classes")
        if self.input_dtype != np.uint8 and (self.mean is None or self.std is None):
            raise InputError(f"ONNX model {self.path} takes float input, but neither its metadata nor a model card "
                             f"{self.path.name}.json gives the normalisation (mean, std)")

    def _metadata(self) -> dict[str, Any]:
        custom = self.session.get_modelmeta().custom_metadata_map or {}
        meta = {}
        for key, value in custom.items():
            if key.startswith("segfactory."):
                try:
                    meta[key[len("segfactory."):]] = json.loads(value)
                except json.JSONDecodeError:
                    continue
        if "model_config" not in meta:
            card = _card_metadata(self.path)
            if isinstance(card.get("model_config"), dict):
                meta["model_config"] = card["model_config"]
        return meta

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) at the model's input size -> the graph's input (N, 3, H, W) in its dtype."""
        if self.input_dtype == np.uint8:
            return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        x = images.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(self.input_dtype)

    def run(self, x: np.ndarray) -> np.ndarray:
        """The raw graph output for an input batch ``x``, split to the graph's batch size where it is fixed."""
        step = self.max_batch or len(x)
        outs = []
        for i in range(0, len(x), step):
            try:
                outs.append(self.session.run([self.output.name], {self.input.name: x[i:i + step]})[0])
            except Exception as e:  # noqa: BLE001
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                raise RunError(f"ONNX Runtime failed on {self.path}: {first}") from None
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from segfactory.factory.transforms import resize_image, resize_mask

        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise InputError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        size = images.shape[1:3]
        target = self.input_size or size
        if tuple(size) != tuple(target):
            images = np.stack([resize_image(im, target) for im in images])
        out = self.run(self.prepare(images))
        if self.output_kind == "labels":
            labels = out.astype(np.int64)
            if tuple(size) != tuple(target):
                labels = np.stack([resize_mask(lab, size) for lab in labels])
            return labels
        if tuple(size) != tuple(target):
            import torch
            import torch.nn.functional as F

            logits = torch.from_numpy(out.astype(np.float32))
            out = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False).numpy()
        return out.argmax(axis=1).astype(np.int64)
