import pytest
import torch
from segfactory.factory.genotype import MERGE_NAMES, OP_NAMES
from segfactory.factory.ops import MERGES, OPS, get_merge, get_op, register_op


def test_registries_take_the_genotype_names():
    assert list(OPS) == list(OP_NAMES)  # in the genotype's order: a name's index is its id
    assert list(MERGES) == list(MERGE_NAMES)


def test_duplicate_registration_raises_and_lookup_lists_names():
    with pytest.raises(ValueError, match="already registered"):
        register_op("sep_conv_3x3")(lambda *a: None)
    with pytest.raises(KeyError, match="known: sep_conv_3x3"):
        get_op("conv_9x9")
    with pytest.raises(KeyError, match="known: psum, cat"):
        get_merge("sum")


@pytest.mark.parametrize("name", OP_NAMES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("sep_repeats", [1, 2])
def test_op_shape_finite_backward(name, stride, sep_repeats):
    c_in = 8
    c_out = c_in * stride
    op = get_op(name)(c_in, c_out, stride, sep_repeats)
    x = torch.randn(2, c_in, 13, 16, requires_grad=True)
    y = op(x)
    # sep ops apply the stride in every unit; max-pool once; GAP and skip ignore it.
    if name.startswith("sep_conv"):
        h, w = 13, 16
        for _ in range(sep_repeats):
            h, w = -(-h // stride), -(-w // stride)
    elif name == "max_pool_3x3":
        h, w = -(-13 // stride), -(-16 // stride)
    else:
        h, w = 13, 16
    assert y.shape == (2, c_out, h, w)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in op.parameters())


def test_op_parameter_counts():
    # SepUnit: depthwise k*k*C_in + pointwise C_in*C_out + BN 2*C_out, per unit.
    assert sum(p.numel() for p in get_op("sep_conv_3x3")(8, 16, 1, 1).parameters()) == 8 * 9 + 8 * 16 + 32
    assert sum(p.numel() for p in get_op("sep_conv_5x5_dil6")(8, 8, 1, 2).parameters()) == 2 * (8 * 25 + 64 + 16)
    assert sum(p.numel() for p in get_op("max_pool_3x3")(8, 8, 1, 1).parameters()) == 64 + 16
    assert sum(p.numel() for p in get_op("global_average_pool")(8, 16, 1, 1).parameters()) == 128 + 32
    assert sum(p.numel() for p in get_op("skip_connect")(8, 16, 2, 1).parameters()) == 0


def test_skip_tiles_channels_and_gap_is_constant():
    x = torch.randn(1, 4, 5, 6)
    y = get_op("skip_connect")(4, 8, 2, 1)(x)
    assert torch.equal(y[:, :4], x) and torch.equal(y[:, 4:], x)
    g = get_op("global_average_pool")(4, 4, 1, 1).eval()(x)
    assert torch.allclose(g, g[..., :1, :1].expand_as(g))
    with pytest.raises(ValueError, match="multiple"):
        get_op("skip_connect")(4, 6, 1, 1)


@pytest.mark.parametrize("name", MERGE_NAMES)
@pytest.mark.parametrize("shrink", [True, False])
def test_merge_adapts_channels_and_size(name, shrink):
    merge = get_merge(name)(8, 16, shrink)
    a = torch.randn(2, 8, 10, 12, requires_grad=True)
    b = torch.randn(2, 16, 5, 6, requires_grad=True)
    y = merge(a, b)
    assert y.shape == ((2, 16, 5, 6) if shrink else (2, 16, 10, 12))
    assert torch.isfinite(y).all()
    y.sum().backward()
    assert a.grad is not None and b.grad is not None


def test_psum_starts_as_plain_sum():
    merge = get_merge("psum")(4, 4, False)
    a, b = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    assert torch.allclose(merge(a, b), a + b)
    assert sum(p.numel() for p in merge.parameters()) == 8
