import pytest
import torch
from segfactory.factory.config import ModelConfig
from segfactory.factory.cost import model_cost
from segfactory.factory.encoder import Encoder, tf_same_pads
from segfactory.factory.model import build_model, count_params
from segfactory.factory.zoo import ZOO

from tests.helpers import random_genotypes


def config(num_classes=11, agg=64, sep=2, weights="none"):
    return ModelConfig.create(num_classes, agg, sep, weights)


# Upstream figures (README table, method.md §10) less its 56,576-parameter encoder.
@pytest.mark.parametrize(
    "arch, classes, agg, sep, decoder_params",
    [
        ("arch0", 19, 64, 2, 223_571), ("arch1", 19, 64, 2, 211_659),
        ("arch0", 11, 64, 2, 218_955), ("arch1", 11, 64, 2, 207_043),
        ("arch0", 19, 48, 1, 171_771), ("arch1", 19, 48, 1, 142_011),
        ("arch0", 11, 48, 1, 224_883 - 56_576), ("arch1", 11, 48, 1, 195_123 - 56_576),
    ],
)
def test_decoder_parameter_counts_match_upstream(arch, classes, agg, sep, decoder_params):
    model = build_model(ZOO[arch], config(classes, agg, sep))
    assert count_params(model.encoder) == 55_488
    assert count_params(model.decoder) == decoder_params


@pytest.mark.parametrize("arch", sorted(ZOO))
@pytest.mark.parametrize("size", [(360, 480), (375, 500), (64, 64)])
def test_zoo_output_shape(arch, size):
    model = build_model(ZOO[arch], config()).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 11, *size)


@pytest.mark.parametrize(
    "size, native", [((360, 480), (90, 120)), ((1024, 2048), (256, 512)), ((375, 500), (94, 125)), ((320, 320), (80, 80))]
)
def test_native_logit_shapes_match_method(size, native):
    for arch in ZOO:
        cost = model_cost(ZOO[arch], config(19), size)
        assert cost.native_shape == (1, 19, *native)
        assert cost.output_shape == (1, 19, *size)


def test_arch0_intermediate_resolutions_match_method():
    # method.md §10: arch0 released at 1024x2048: L0 output (64, 32, 64), L4 (64, 256, 512), L6 (32, 256, 512).
    parts = {p.name: p for p in model_cost(ZOO["arch0"], config(19), (1024, 2048)).parts}
    assert parts["layer0"].output_shape == (1, 64, 32, 64)
    assert parts["layer4"].output_shape == (1, 64, 256, 512)
    assert parts["layer6"].output_shape == (1, 32, 256, 512)
    # Search configuration (sep_repeats 1): L0 only reaches /16.
    parts = {p.name: p for p in model_cost(ZOO["arch0"], config(19, 48, 1), (1024, 2048)).parts}
    assert parts["layer0"].output_shape[2:] == (64, 128)


def test_macs_of_zoo_match_reference():
    # measuring-here.md: 1.08 / 1.49 GMAC with the upstream encoder, whose extra expansion conv in the
    # first block costs 32*32*180*240 = 44.2 MMAC at 360x480 that torchvision's block does not have.
    extra = 32 * 32 * 180 * 240
    assert abs((model_cost(ZOO["arch0"], config(), (360, 480)).macs + extra) / 1e9 - 1.08) < 0.01
    assert abs((model_cost(ZOO["arch1"], config(), (360, 480)).macs + extra) / 1e9 - 1.49) < 0.01


@pytest.mark.parametrize("genotype", random_genotypes(50, seed=1), ids=lambda g: g.key())
def test_random_genotype_forward_backward(genotype):
    model = build_model(genotype, config(5, 48, 1))
    x = torch.randn(2, 3, 64, 64)  # batch 2: BN after a global pool needs more than one value in training
    y = model(x)
    assert y.shape == (2, 5, 64, 64) and torch.isfinite(y).all()
    native = model(x, native=True)
    assert native.shape[2] in (2, 4, 8, 16) and native.shape[2] <= 16
    y.mean().backward()
    grads = [p.grad for p in model.decoder.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert model_cost(genotype, config(5, 48, 1), (64, 64)).params == count_params(model)


@pytest.mark.parametrize("n, pads", [(224, (0, 1)), (225, (1, 1)), (1, (1, 1)), (2, (0, 1))])
def test_tf_same_padding(n, pads):
    assert tf_same_pads(n, 3, 2) == pads


def test_encoder_taps_and_frozen_bn():
    enc = Encoder("tf_same")
    e0, e1 = enc(torch.randn(2, 3, 64, 64))
    assert e0.shape == (2, 24, 16, 16) and e1.shape == (2, 32, 8, 8)
    enc.freeze_bn().train()
    bn = next(m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not bn.training and enc.training


def test_odd_input_sizes_with_both_paddings():
    for padding in ("tf_same", "symmetric"):
        enc = Encoder(padding).eval()
        e0, e1 = enc(torch.randn(1, 3, 67, 93))
        assert e0.shape[2:] == (17, 24) and e1.shape[2:] == (9, 12)
