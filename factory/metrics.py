"""Segmentation metrics from a confusion matrix: IoU, accuracy, mIoU, mean accuracy, fwIoU and the search score.

All values are fractions in [0, 1]. ``cm[t, p]`` counts pixels of ground-truth class ``t`` predicted as ``p``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from segfactory.factory.errors import RunError


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.int64).reshape(-1)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x), dtype=np.int64).reshape(-1))


def confusion_matrix(pred: Any, target: Any, num_classes: int, ignore_index: int) -> torch.Tensor:
    """(K, K) int64 confusion matrix of label maps ``pred`` and ``target`` (same shape; tensors or arrays).

    Pixels whose target is ``ignore_index`` or outside ``0..K-1`` are dropped; counting is exact
    (integer ``bincount``) for any number of pixels.
    """
    p, t = _as_tensor(pred), _as_tensor(target)
    if p.shape != t.shape:
        raise RunError(f"prediction has {p.numel()} pixels but the target has {t.numel()}")
    keep = (t != ignore_index) & (t >= 0) & (t < num_classes)
    p, t = p[keep], t[keep]
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= num_classes):
        bad = int(p[(p < 0) | (p >= num_classes)][0])
        raise RunError(f"prediction holds class id {bad}, outside 0..{num_classes - 1}")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


class ConfusionMatrix:
    """A streaming confusion matrix: ``update(pred, target)`` per batch, then :meth:`summarize`."""

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Any, target: Any) -> None:
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def summarize(self) -> dict[str, Any]:
        return summarize(self.matrix)


def summarize(cm: Any) -> dict[str, Any]:
    """Metrics of confusion matrix ``cm`` (rows: ground truth, columns: prediction).

    - ``per_class_iou[c]`` = TP / (TP + FP + FN), ``None`` for a class absent from both prediction and truth;
    - ``per_class_acc[c]`` = TP / (TP + FN), ``None`` for a class absent from the truth;
    - ``miou``/``macc``: means over the classes that have a value; ``fwiou``: IoU weighted by truth pixels;
    - ``score``: (miou * macc * fwiou) ** (1/3), the paper's search reward (method.md §4), except that a class
      predicted but absent from the truth does not enter ``macc`` (upstream counted it with a sentinel).

    With no labelled pixels at all every summary value is 0.0.
    """
    m = torch.as_tensor(cm).to(torch.float64)
    tp = torch.diagonal(m)
    gt = m.sum(dim=1)
    pr = m.sum(dim=0)
    union = gt + pr - tp
    k = m.shape[0]
    iou = [float(tp[c] / union[c]) if union[c] > 0 else None for c in range(k)]
    acc = [float(tp[c] / gt[c]) if gt[c] > 0 else None for c in range(k)]
    ious = [v for v in iou if v is not None]
    accs = [v for v in acc if v is not None]
    total = float(gt.sum())
    miou = sum(ious) / len(ious) if ious else 0.0
    macc = sum(accs) / len(accs) if accs else 0.0
    fwiou = sum(iou[c] * float(gt[c]) for c in range(k) if iou[c] is not None) / total if total else 0.0
    score = math.prod((miou, macc, fwiou)) ** (1.0 / 3.0)
    return {
        "miou": miou,
        "macc": macc,
        "fwiou": fwiou,
        "score": score,
        "pixel_acc": float(tp.sum()) / total if total else 0.0,
        "per_class_iou": iou,
        "per_class_acc": acc,
        "pixels": int(total),
    }
