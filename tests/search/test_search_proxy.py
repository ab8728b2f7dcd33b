"""Proxy training of one candidate on a tiny synthetic dataset: outcomes and their statuses."""

from __future__ import annotations

import numpy as np
import pytest
from segfactory.factory.config import ModelConfig
from segfactory.factory.zoo import ZOO
from segfactory.search.presets import PRESETS
from segfactory.search.proxy import ProxyData, train_candidate


class TinyData:
    spec = "synthetic"
    num_classes = 3
    ignore_index = 255
    class_names = ("a", "b", "c")

    def __init__(self, n: int = 10) -> None:
        rng = np.random.default_rng(0)
        self.items = []
        for _ in range(n):
            mask = np.zeros((48, 64), np.int64)
            mask[:, 20:] = 1
            mask[30:, 40:] = 2
            mask[0, 0] = 255
            image = (rng.random((48, 64, 3)) * 40 + mask[..., None] * 70).clip(0, 255).astype(np.uint8)
            self.items.append((image, mask))

    @property
    def names(self):
        return [f"f{i:03d}" for i in range(len(self.items))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(scope="module")
def data() -> ProxyData:
    settings = PRESETS["test"].with_(crop=(32, 32), val_long_side=None)
    config = ModelConfig.create(3, 48, 1, "none")
    return ProxyData.prepare(TinyData(), config, settings, seed=0)


def test_prepare_holds_out_blocks_and_caches_features(data):
    assert len(data.heldout) == 2 and [m.shape for _, m in data.heldout.items] == [(48, 64)] * 2
    assert data.cache_e0.shape == (8, 24, 8, 8) and data.cache_e1.shape == (8, 32, 4, 4)
    assert data.cache_labels.shape == (8, 8, 8)
    assert len(data.train) == 8 and data.heldout_names == ["f001", "f006"]


def test_a_candidate_trains_and_is_scored(data):
    r = train_candidate(ZOO["arch1"], data, seed=0)
    assert r.status == "ok", r.reason
    assert 0 <= r.score <= 1 and len(r.checkpoints) == 2 and r.checkpoints[-1] == r.score
    again = train_candidate(ZOO["arch1"], data, seed=0)
    assert again.score == pytest.approx(r.score, abs=1e-6)  # seeded


def test_early_stopping_ends_the_candidate(data):
    calls = []
    r = train_candidate(ZOO["arch0"], data, seed=0, should_continue=lambda k, v: calls.append(k) or False)
    assert r.status == "early-stopped" and calls == [0] and "checkpoint 0" in r.reason
    assert r.score is not None and r.stage2_s == 0


def test_non_finite_loss_fails_the_candidate(data, monkeypatch):
    import torch
    from segfactory.factory.training import step

    monkeypatch.setattr(step, "seg_loss", lambda logits, target, ignore: logits.sum() * torch.nan)
    r = train_candidate(ZOO["arch0"], data, seed=0)
    assert r.status == "failed" and "non-finite loss" in r.reason and r.score is None


def test_an_error_inside_the_candidate_is_recorded(data, monkeypatch):
    from segfactory.factory import model

    def broken(*a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    from segfactory.factory import decoder

    monkeypatch.setattr(model.SegModel, "forward", broken)

    monkeypatch.setattr(decoder.TemplateDecoder, "forward", broken)
    r = train_candidate(ZOO["arch0"], data, seed=0)
    assert r.status == "failed" and r.reason.startswith("out of memory")


def test_time_limit(data):
    tiny = ProxyData(**{**data.__dict__, "settings": data.settings.with_(time_limit_s=1e-9)})
    r = train_candidate(ZOO["arch0"], tiny, seed=0)
    assert r.status == "failed" and "time limit" in r.reason
