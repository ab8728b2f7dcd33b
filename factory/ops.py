"""Branch ops and merges of the template decoder, in name-keyed registries (method.md §2.2-2.3).

Every op factory has one signature, ``(c_in, c_out, stride, sep_repeats) -> nn.Module``; every merge factory
``(c_a, c_b, shrink) -> nn.Module`` and its module takes two tensors. The names are those of
:data:`segfactory.factory.genotype.OP_NAMES` and ``MERGE_NAMES``, taken from there (see the end of this module).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from segfactory.factory.genotype import MERGE_NAMES, OP_NAMES
from segfactory.factory.registry import Registry
from torch import Tensor, nn

OpFactory = Callable[[int, int, int, int], nn.Module]
MergeFactory = Callable[[int, int, bool], nn.Module]

OPS: Registry[OpFactory] = Registry("op")
MERGES: Registry[MergeFactory] = Registry("merge")


def register_op(name: str):
    return OPS.register(name)


def register_merge(name: str):
    return MERGES.register(name)


def get_op(name: str) -> OpFactory:
    return OPS.get(name)


def get_merge(name: str) -> MergeFactory:
    return MERGES.get(name)


def resize(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Bilinear resize (align_corners False) to ``size``; a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def conv_bn(c_in: int, c_out: int, relu: bool) -> nn.Sequential:
    """1x1 conv (no bias) -> BN [-> ReLU]."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# ---- branch ops ------------------------------------------------------------------------------------------------
class SepUnit(nn.Sequential):
    """Depthwise kxk (dilation d, 'same' padding, stride s) -> pointwise 1x1 -> BN -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dilation: int = 1) -> None:
        pad = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(c_in, c_in, kernel, stride, pad, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        )


def _sep(kernel: int, dilation: int) -> OpFactory:
    def make(c_in: int, c_out: int, stride: int, sep_repeats: int) -> nn.Module:
        # Every unit applies the stride (upstream behaviour that shapes arch0/arch1, method.md §2.2).
        units = [SepUnit(c_in if i == 0 else c_out, c_out, kernel, stride, dilation) for i in range(sep_repeats)]
        return nn.Sequential(*units)

    return make


class GlobalPoolBranch(nn.Module):
    """Spatial mean -> 1x1 conv -> BN -> ReLU -> upsample back to the input's HxW. Ignores the stride."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.proj = conv_bn(c_in, c_out, relu=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.proj(x.mean(dim=(2, 3), keepdim=True))  # (N, C_out, 1, 1)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _gap(c_in: int, c_out: int, stride: int, sep_repeats: int) -> nn.Module:
    return GlobalPoolBranch(c_in, c_out)


def _max_pool(c_in: int, c_out: int, stride: int, sep_repeats: int) -> nn.Module:
    # 1x1 conv + BN (no ReLU) first, so the channel count can change before pooling.
    return nn.Sequential(conv_bn(c_in, c_out, relu=False), nn.MaxPool2d(3, stride, 1))


class ChannelTile(nn.Module):
    """Identity that repeats the channels ``c_out / c_in`` times. Ignores the stride."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        if c_out % c_in:
            raise ValueError(f"skip_connect needs c_out ({c_out}) to be a multiple of c_in ({c_in})")
        self.times = c_out // c_in

    def forward(self, x: Tensor) -> Tensor:
        return x if self.times == 1 else x.repeat(1, self.times, 1, 1)


def _skip(c_in: int, c_out: int, stride: int, sep_repeats: int) -> nn.Module:
    return ChannelTile(c_in, c_out)


# ---- merges ----------------------------------------------------------------------------------------------------
class Merge(nn.Module):
    """Adapt both branches to ``max(c_a, c_b)`` channels and a common size, then combine them.

    ``shrink`` picks the smaller spatial size (layers 0-2) or the larger one (layers 3-6); sizes are compared
    as (H, W) tuples.
    """

    def __init__(self, c_a: int, c_b: int, shrink: bool) -> None:
        super().__init__()
        self.channels = max(c_a, c_b)
        self.shrink = shrink
        self.adapt_a = conv_bn(c_a, self.channels, relu=True) if c_a != self.channels else nn.Identity()
        self.adapt_b = conv_bn(c_b, self.channels, relu=True) if c_b != self.channels else nn.Identity()

    def align(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self.adapt_a(a), self.adapt_b(b)
        sa, sb = tuple(a.shape[-2:]), tuple(b.shape[-2:])
        size = (min if self.shrink else max)(sa, sb)
        return resize(a, size), resize(b, size)


class ParametricSum(Merge):
    """``alpha * a + beta * b`` with per-channel weights initialised to 1."""

    def __init__(self, c_a: int, c_b: int, shrink: bool) -> None:
        super().__init__(c_a, c_b, shrink)
        self.alpha = nn.Parameter(torch.ones(1, self.channels, 1, 1))
        self.beta = nn.Parameter(torch.ones(1, self.channels, 1, 1))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        a, b = self.align(a, b)
        return self.alpha * a + self.beta * b


class ConcatReduce(Merge):
    """concat -> BN(2C) -> ReLU -> 1x1 conv 2C -> C."""

    def __init__(self, c_a: int, c_b: int, shrink: bool) -> None:
        super().__init__(c_a, c_b, shrink)
        c = self.channels
        self.reduce = nn.Sequential(nn.BatchNorm2d(2 * c), nn.ReLU(), nn.Conv2d(2 * c, c, 1, bias=False))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        a, b = self.align(a, b)
        return self.reduce(torch.cat([a, b], dim=1))


# ---- registration ----------------------------------------------------------------------------------------------
# An op's name and id (its index) are the genotype's format, written once in factory.genotype (which imports no
# torch, so it cannot read this registry): the registries take the names from there, one factory per name in
# that order; zip(strict=True) refuses a name without a factory or a factory without a name.
for _name, _factory in zip(OP_NAMES, (_sep(3, 1), _sep(5, 1), _gap, _max_pool, _sep(5, 6), _skip), strict=True):
    register_op(_name)(_factory)
for _name, _factory in zip(MERGE_NAMES, (ParametricSum, ConcatReduce), strict=True):
    register_merge(_name)(_factory)
