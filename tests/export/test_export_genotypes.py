"""50 seeded random genotypes (and the zoo) export to ONNX with the TorchScript-based exporter and match PyTorch
in ONNX Runtime (relative + absolute tolerance, clear-margin argmax agreement). Also issue 2's acceptance."""

from __future__ import annotations

import random

import numpy as np
import pytest
from segfactory.export.onnx import export_onnx, graph_io
from segfactory.export.parity import check_parity
from segfactory.factory.config import ModelConfig
from segfactory.factory.genotype import sample_genotype
from segfactory.factory.model import build_model
from segfactory.factory.zoo import ZOO

# A small configuration keeps 50 exports cheap; the graph's structure (ops, merges, strides) is the genotype's.
SMALL = ModelConfig.create(num_classes=5, agg_size=8, sep_repeats=1, encoder_weights="none")
SIZE = (64, 96)
RTOL, ATOL = 1e-3, 1e-5


def sharpen(model, gain: float = 50.0):
    """Scale the classifier so that random weights give logits with real top-2 margins (not all near-ties)."""
    import torch

    last = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(gain)
    return model.eval()


def images(n: int = 2, size=SIZE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, *size, 3), dtype=np.uint8)


def assert_parity(model, path):
    result = check_parity(model, path, images(), rtol=RTOL, atol=ATOL, require_close=True)
    assert result["within_tolerance"] == 1.0, result
    assert result["agreement"] >= 0.999, result
    assert result["pixels_clear"] > 0.5 * result["pixels"], result  # the agreement is not vacuous
    assert result["passed"], result
    return result


@pytest.mark.parametrize("seed", range(50))
def test_random_genotype_exports_and_matches(seed, tmp_path):
    import torch

    genotype = sample_genotype(random.Random(seed))
    torch.manual_seed(seed)
    model = sharpen(build_model(genotype, SMALL))
    path = export_onnx(model, tmp_path / "g.onnx", input_size=SIZE, simplify=False)
    io = graph_io(path)
    assert io["inputs"] == [{"name": "image", "shape": [1, 3, *SIZE], "dtype": "float32"}]
    assert io["outputs"] == [{"name": "logits", "shape": [1, 5, *SIZE], "dtype": "float32"}]
    assert_parity(model, path)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_released_config_exports_and_matches(name, tmp_path):
    import torch

    torch.manual_seed(0)
    config = ModelConfig.create(encoder_weights="none")  # released agg 64 / sep_repeats 2, 11 classes
    model = sharpen(build_model(ZOO[name], config))
    path = export_onnx(model, tmp_path / f"{name}.onnx", input_size=SIZE)  # simplified, as the CLI does
    assert_parity(model, path)
