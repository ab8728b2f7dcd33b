"""Parity of an exported ONNX model against its PyTorch model, with ONNX Runtime, on real images.

Logits are compared with a relative and an absolute tolerance together (``|onnx - torch| <= atol + rtol *
|torch|``, as ``numpy.allclose``); argmax agreement is counted only at pixels whose PyTorch top-2 margin exceeds
the tolerance at the top logit (elsewhere either answer is right), and also reported over all pixels.
"""

from __future__ import annotations

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
    where ``require_close`` (default: FP32), a fraction >= ``min_within`` of the logits within tolerance. Logit figures are None for an ONNX
    model whose output is labels.
    """
    from segfactory.export.predictor import OnnxPredictor
    from segfactory.factory.transforms import resize_image

    if precision not in TOLERANCES:
        raise InputError(f"precision {precision!r} is not one of {', '.join(TOLERANCES)}")
    d_rtol, d_atol = TOLERANCES[precision]
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    require_close = precision == "fp32" if require_close is None else require_close
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) == 0:
        raise InputError(f"parity images must be uint8 (N, H, W, 3) with N >= 1, got {images.dtype} {images.shape}")
    predictor = OnnxPredictor(onnx_path)
    if predictor.input_size and images.shape[1:3] != tuple(predictor.input_size):
        images = np.stack([resize_image(im, predictor.input_size) for im in images])

    max_abs = mean_abs_sum = 0.0
    ref_max = 0.0
    close = n_logits = 0
    agree_clear = n_clear = agree_all = n_pixels = 0
    for i in range(0, len(images), batch_size):
        batch = images[i:i + batch_size]
        ref = torch_logits(model, batch, batch_size)  # (B, K, H, W)
        out = predictor.run(predictor.prepare(batch))
        top2 = np.partition(ref, -2, axis=1)[:, -2:]  # (B, 2, H, W): second, first
        margin = top2[:, 1] - top2[:, 0]
        clear = margin > atol + rtol * np.abs(top2[:, 1])
        ref_labels = ref.argmax(axis=1)
        if predictor.output_kind == "logits":
            out = out.astype(np.float32)
            if out.shape != ref.shape:
                raise InputError(f"ONNX output shape {out.shape} differs from PyTorch's {ref.shape}")
            diff = np.abs(out - ref)
            max_abs = max(max_abs, float(diff.max()))
            mean_abs_sum += float(diff.sum())
            ref_max = max(ref_max, float(np.abs(ref).max()))
            close += int((diff <= atol + rtol * np.abs(ref)).sum())
            n_logits += diff.size
            labels = out.argmax(axis=1)
        else:
            labels = out.astype(np.int64)
            if labels.shape != ref_labels.shape:
                raise InputError(f"ONNX labels shape {labels.shape} differs from PyTorch's {ref_labels.shape}")
        same = labels == ref_labels
        agree_clear += int(same[clear].sum())
        n_clear += int(clear.sum())
        agree_all += int(same.sum())
        n_pixels += same.size

    logits = predictor.output_kind == "logits"
    agreement = agree_clear / n_clear if n_clear else 1.0
    within = close / n_logits if logits else None
    passed = (min_agreement is None or agreement >= min_agreement) and (
        not require_close or within is None or within >= min_within)
    return {
        "precision": precision,
        "images": len(images),
        "input_size": list(images.shape[1:3]),
        "max_abs_diff": max_abs if logits else None,
        "max_rel_diff": (max_abs / ref_max if ref_max > 0 else 0.0) if logits else None,
        "mean_abs_diff": mean_abs_sum / n_logits if logits else None,
        "within_tolerance": within,
        "agreement": agreement,
        "agreement_all": agree_all / n_pixels,
        "pixels": n_pixels,
        "pixels_clear": n_clear,
        "rtol": rtol,
        "atol": atol,
        "min_agreement": min_agreement,
        "min_within": min_within if require_close else None,
        "passed": bool(passed),
    }
