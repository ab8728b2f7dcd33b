"""Parity of an exported ONNX model against its PyTorch model, with ONNX Runtime, on real images.

Logits are compared with a relative and an absolute tolerance together (``|onnx - torch| <= atol + rtol *
|torch|``, as ``numpy.allclose``); argmax agreement is counted only at pixels whose PyTorch top-2 margin exceeds
the tolerance at the top logit (elsewhere either answer is right), and also reported over all pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from segfactory.factory.errors import InputError

if TYPE_CHECKING:
    from torch import nn

# (rtol, atol) per precision: FP32 should match to float rounding; FP16 and INT8 are reported, not enforced.
TOLERANCES = {"fp32": (1e-3, 1e-4), "fp16": (1e-2, 1e-2), "int8": (5e-2, 5e-2)}
MIN_AGREEMENT = 0.999
BATCH = 4  # images per parity batch (bounds the memory of a parity check)


def torch_logits(model: nn.Module, images: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
    """Float32 logits (N, K, H, W) of ``model`` on uint8 (N, H, W, 3) images (normalised by its config)."""
    import torch
    from segfactory.factory.transforms import normalize

    model.eval()
    device = next(model.parameters()).device
    outs = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = normalize(images[i:i + batch_size], model.config.mean, model.config.std).to(device)
            outs.append(model(x).float().cpu().numpy())
    return np.concatenate(outs)


def graph_images(images: np.ndarray, predictor: Any, what: str) -> np.ndarray:
    """``images`` checked to be uint8 (N, H, W, 3), N >= 1, and resized to the graph's input size if it has one."""
    from segfactory.factory.transforms import resize_image

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) == 0:
        raise InputError(f"{what} images must be uint8 (N, H, W, 3) with N >= 1, got {images.dtype} {images.shape}")
    if predictor.input_size and images.shape[1:3] != tuple(predictor.input_size):
        images = np.stack([resize_image(im, predictor.input_size) for im in images])
    return images


def check_parity(
    model: nn.Module,
    onnx_path: str | Path,
    images: np.ndarray,
    *,
    precision: str = "fp32",
    rtol: float | None = None,
    atol: float | None = None,
    min_agreement: float | None = MIN_AGREEMENT,
    require_close: bool | None = None,
    min_within: float = MIN_AGREEMENT,
    batch_size: int = BATCH,
) -> dict[str, Any]:
    """Compare ``model`` with the ONNX file on ``images`` (uint8 (N, H, W, 3), resized to the graph's size).

    Returns ``max_abs_diff``, ``max_rel_diff`` (the largest difference relative to the largest PyTorch logit
    magnitude), ``mean_abs_diff``, ``within_tolerance`` (fraction of logits), ``agreement`` (clear-margin
    pixels), ``agreement_all``, pixel counts, the tolerances and ``passed``: agreement >= ``min_agreement`` and,
    where ``require_close`` (default: FP32), a fraction >= ``min_within`` of the logits within tolerance. Logit
    figures are None for an ONNX model whose output is labels.
    """
    from segfactory.export.predictor import OnnxPredictor

    if precision not in TOLERANCES:
        raise InputError(f"precision {precision!r} is not one of {', '.join(TOLERANCES)}")
    d_rtol, d_atol = TOLERANCES[precision]
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    require_close = precision == "fp32" if require_close is None else require_close
    predictor = OnnxPredictor(onnx_path)
    images = graph_images(images, predictor, "parity")

    tally = _Tally(rtol, atol, logits=predictor.output_kind == "logits")
    for i in range(0, len(images), batch_size):
        batch = images[i:i + batch_size]
        tally.add(torch_logits(model, batch, batch_size), predictor.run(predictor.prepare(batch)))
    figures = tally.figures()
    within = figures["within_tolerance"]
    passed = (min_agreement is None or figures["agreement"] >= min_agreement) and (
        not require_close or within is None or within >= min_within)
    return {"precision": precision, "images": len(images), "input_size": list(images.shape[1:3]), **figures,
            "rtol": rtol, "atol": atol, "min_agreement": min_agreement,
            "min_within": min_within if require_close else None, "passed": bool(passed)}


@dataclass
class _Tally:
    """Running sums over the batches of a parity check: logit differences and argmax agreement."""

    rtol: float
    atol: float
    logits: bool  # the ONNX output is logits (else labels: no logit figures)
    max_abs: float = 0.0
    abs_sum: float = 0.0
    ref_max: float = 0.0
    close: int = 0
    n_logits: int = 0
    agree_clear: int = 0
    n_clear: int = 0
    agree_all: int = 0
    n_pixels: int = 0

    def add(self, ref: np.ndarray, out: np.ndarray) -> None:
        """One batch: PyTorch logits ``ref`` (B, K, H, W) and the ONNX output (logits, or labels (B, H, W))."""
        top2 = np.partition(ref, -2, axis=1)[:, -2:]  # (B, 2, H, W): second, first
        clear = top2[:, 1] - top2[:, 0] > self.atol + self.rtol * np.abs(top2[:, 1])
        ref_labels = ref.argmax(axis=1)
        if self.logits:
            labels = self._add_logits(ref, out.astype(np.float32))
        else:
            labels = out.astype(np.int64)
            if labels.shape != ref_labels.shape:
                raise InputError(f"ONNX labels shape {labels.shape} differs from PyTorch's {ref_labels.shape}")
        same = labels == ref_labels
        self.agree_clear += int(same[clear].sum())
        self.n_clear += int(clear.sum())
        self.agree_all += int(same.sum())
        self.n_pixels += same.size

    def _add_logits(self, ref: np.ndarray, out: np.ndarray) -> np.ndarray:
        if out.shape != ref.shape:
            raise InputError(f"ONNX output shape {out.shape} differs from PyTorch's {ref.shape}")
        diff = np.abs(out - ref)
        self.max_abs = max(self.max_abs, float(diff.max()))
        self.abs_sum += float(diff.sum())
        self.ref_max = max(self.ref_max, float(np.abs(ref).max()))
        self.close += int((diff <= self.atol + self.rtol * np.abs(ref)).sum())
        self.n_logits += diff.size
        return out.argmax(axis=1)

    def figures(self) -> dict[str, Any]:
        """The differences (None for labels) and the agreements, as check_parity reports them."""
        logits = self.logits
        return {
            "max_abs_diff": self.max_abs if logits else None,
            "max_rel_diff": (self.max_abs / self.ref_max if self.ref_max > 0 else 0.0) if logits else None,
            "mean_abs_diff": self.abs_sum / self.n_logits if logits else None,
            "within_tolerance": self.close / self.n_logits if logits else None,
            "agreement": self.agree_clear / self.n_clear if self.n_clear else 1.0,
            "agreement_all": self.agree_all / self.n_pixels,
            "pixels": self.n_pixels,
            "pixels_clear": self.n_clear,
        }
