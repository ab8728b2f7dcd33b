"""Confusion matrix and metric values on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from segfactory.factory.errors import RunError
from segfactory.factory.metrics import ConfusionMatrix, confusion_matrix, summarize


def test_confusion_matrix_counts_and_ignores():
    target = np.array([[0, 0, 1], [1, 2, 9]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    cm = confusion_matrix(pred, target, 3, ignore_index=9)
    assert cm.dtype == torch.int64
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert confusion_matrix(torch.tensor(pred), torch.tensor(target), 3, 9).equal(cm)


def test_confusion_matrix_is_exact_beyond_float_precision():
    n = 2**24 + 1  # float32 cannot count this far in steps of one
    target = torch.zeros(n, dtype=torch.int64)
    cm = confusion_matrix(target, target, 2, 255)
    assert int(cm[0, 0]) == n


def test_out_of_range_prediction_is_an_error():
    with pytest.raises(RunError, match="class id 5"):
        confusion_matrix(np.array([5]), np.array([0]), 3, 255)


def test_summary_by_hand():
    cm = torch.tensor([[3, 1, 0], [0, 2, 0], [1, 0, 0]])
    s = summarize(cm)
    # IoU: c0 3/(4+4-3)=0.6, c1 2/(2+3-2)=2/3, c2 0/(1+0-0)=0; acc: 3/4, 1, 0
    assert s["per_class_iou"] == pytest.approx([0.6, 2 / 3, 0.0])
    assert s["per_class_acc"] == pytest.approx([0.75, 1.0, 0.0])
    assert s["miou"] == pytest.approx((0.6 + 2 / 3) / 3)
    assert s["macc"] == pytest.approx(1.75 / 3)
    assert s["fwiou"] == pytest.approx((0.6 * 4 + 2 / 3 * 2) / 7)
    assert s["score"] == pytest.approx((s["miou"] * s["macc"] * s["fwiou"]) ** (1 / 3))
    assert s["pixels"] == 7 and s["pixel_acc"] == pytest.approx(5 / 7)


def test_absent_classes():
    # class 1 absent from both -> IoU None; class 2 predicted but not in the truth -> IoU 0, accuracy None
    cm = torch.tensor([[4, 0, 2], [0, 0, 0], [0, 0, 0]])
    s = summarize(cm)
    assert s["per_class_iou"] == pytest.approx([4 / 6, None, 0.0]) and s["per_class_iou"][1] is None
    assert s["per_class_acc"][1] is None and s["per_class_acc"][2] is None
    assert s["miou"] == pytest.approx((4 / 6) / 2)
    assert s["macc"] == pytest.approx(4 / 6)  # no sentinel: the absent class does not enter macc
    assert s["fwiou"] == pytest.approx(4 / 6)


def test_perfect_and_empty():
    s = summarize(torch.diag(torch.tensor([5, 1, 7])))
    assert s["miou"] == s["macc"] == s["fwiou"] == s["score"] == 1.0
    e = summarize(torch.zeros(3, 3, dtype=torch.int64))
    assert e["miou"] == 0.0 and e["per_class_iou"] == [None, None, None]


@pytest.mark.parametrize("seed", range(4))
def test_streaming_equals_one_shot_and_reference(seed):
    rng = np.random.default_rng(seed)
    k = 5
    preds = [rng.integers(0, k, (7, 9)) for _ in range(3)]
    targets = [np.where(rng.random((7, 9)) < 0.1, 255, rng.integers(0, k, (7, 9))) for _ in range(3)]
    acc = ConfusionMatrix(k, 255)
    for p, t in zip(preds, targets):
        acc.update(p, t)
    assert acc.matrix.equal(confusion_matrix(np.stack(preds), np.stack(targets), k, 255))
    p, t = np.concatenate([x.ravel() for x in preds]), np.concatenate([x.ravel() for x in targets])
    keep = t != 255
    p, t = p[keep], t[keep]
    ious = []
    for c in range(k):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        if union:
            ious.append(inter / union)
    assert math.isclose(acc.summarize()["miou"], float(np.mean(ious)), rel_tol=1e-12)
