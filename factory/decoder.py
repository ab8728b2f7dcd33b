"""The template decoder (method.md §2.5): 7 layers over a growing pool of feature maps, and the head.

Pool index 0 = E0 (24 ch, /4), 1 = E1 (32 ch, /8), 2 + j = output of layer j. Layer ``l`` with inputs
(p1, p2), template (op_a, op_b, merge), ``R`` repeats and stride ``S`` computes, for r = 0..R-1::

    y_r = merge_r(op_a_r(a_r), op_b_r(b_r)),   a_0 = pool[p1], b_0 = pool[p2],   a_{r+1} = b_r, b_{r+1} = y_r

Channels double at repeat 0 when S = 2; every repeat (and every unit of a sep op) applies S; merges output
max(branch channels) at the smaller (layers 0-2) or larger (layers 3-6) spatial size. The outputs no later
layer reads ("loose ends") are upsampled to the finest among them, concatenated and classified.

The wiring is written once, in :func:`walk_decoder`: it hands each step (an op, a merge, a concatenation of
loose ends, the head) to a :class:`Realiser`. :class:`TemplateDecoder` realises a step by building its module;
the latency lookup table (benchmarks/lut/units.py) by cutting it into measured units, taking each op's and
merge's output shape from its module. The module graph is static: everything is decided at construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from segfactory.factory.genotype import NUM_ENCODER_INPUTS, STRIDED_LAYERS, Genotype, Template
from segfactory.factory.ops import get_merge, get_op, resize
from torch import Tensor, nn

Size = tuple[int, int]


class Feature(NamedTuple):
    """A feature map at batch 1: its channels and (H, W); ``size`` is None where only channels matter."""

    channels: int
    size: Size | None = None


@dataclass(frozen=True)
class OpStep:
    """Op ``op`` on branch ``branch`` ("a" or "b") of repeat ``repeat`` of layer ``layer``, from ``x``."""

    layer: int
    repeat: int
    branch: str
    op: str
    x: Feature
    c_out: int
    stride: int


@dataclass(frozen=True)
class MergeStep:
    """Merge ``merge`` of the two branch outputs ``a`` and ``b`` of repeat ``repeat`` of layer ``layer``."""

    layer: int
    repeat: int
    merge: str
    a: Feature
    b: Feature
    shrink: bool  # resize to the smaller input (layers 0-2) rather than the larger


@dataclass(frozen=True)
class CollectStep:
    """The running collection ``out`` concatenated with the next loose end ``x``, giving ``y``."""

    out: Feature
    x: Feature
    y: Feature


@dataclass(frozen=True)
class HeadStep:
    """The head on the concatenated loose ends ``x``."""

    x: Feature


class Realiser(Protocol):
    """What a walk of the wiring does with each step. Ops and merges report their output feature."""

    def op(self, step: OpStep) -> Feature: ...

    def merge(self, step: MergeStep) -> Feature: ...

    def collect(self, step: CollectStep) -> None: ...

    def head(self, step: HeadStep) -> None: ...


def walk_repeat(layer: int, repeat: int, template: Template, stride: int, a: Feature, b: Feature,
                realiser: Realiser) -> tuple[Feature, Feature]:
    """One ``y = merge(op_a(a), op_b(b))`` step of a layer; returns the next step's inputs ``(b, y)``."""
    # Channels double only at repeat 0 of a stride-2 layer; later repeats keep their inputs' channels.
    grow = stride if repeat == 0 else 1
    ya = realiser.op(OpStep(layer, repeat, "a", template.op_a, a, a.channels * grow, stride))
    yb = realiser.op(OpStep(layer, repeat, "b", template.op_b, b, b.channels * grow, stride))
    return b, realiser.merge(MergeStep(layer, repeat, template.merge, ya, yb, shrink=layer < STRIDED_LAYERS))


def concat_size(a: Size, b: Size) -> Size:
    """Loose ends are concatenated at the larger of two sizes (compared as (H, W) tuples)."""
    return max(a, b)


def collect_step(out: Feature, x: Feature) -> CollectStep:
    """The step concatenating ``x`` to the running collection ``out`` (as :func:`collect` does)."""
    size = None if out.size is None or x.size is None else concat_size(out.size, x.size)
    return CollectStep(out, x, Feature(out.channels + x.channels, size))


def walk_decoder(genotype: Genotype, inputs: Sequence[Feature], realiser: Realiser) -> list[Feature]:
    """Hand every step of ``genotype``'s decoder, in execution order, to ``realiser``; returns the pool.

    ``inputs`` are the encoder outputs (E0, E1). The order is also the order modules are built in, so it
    fixes the order in which a seeded build initialises parameters.
    """
    pool = list(inputs)
    for l, spec in enumerate(genotype.layers):
        a, b = pool[spec.input_1], pool[spec.input_2]
        for r in range(spec.repeats):
            a, b = walk_repeat(l, r, genotype.templates[spec.template], spec.stride, a, b, realiser)
        pool.append(b)
    collected = genotype.collected()
    out = pool[collected[0]]
    for i in collected[1:]:
        step = collect_step(out, pool[i])
        realiser.collect(step)
        out = step.y
    realiser.head(HeadStep(out))
    return pool


def collect(out: Tensor, x: Tensor) -> Tensor:
    """Concatenate the running collection with loose end ``x``, both resized to :func:`concat_size`."""
    size = concat_size(tuple(out.shape[-2:]), tuple(x.shape[-2:]))
    return torch.cat([resize(out, size), resize(x, size)], dim=1)


class Repeat(nn.Module):
    """One ``y = merge(op_a(a), op_b(b))`` step of a layer."""

    def __init__(self, op_a: nn.Module, op_b: nn.Module, merge: nn.Module) -> None:
        super().__init__()
        self.op_a, self.op_b, self.merge = op_a, op_b, merge

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.merge(self.op_a(a), self.op_b(b))


class DecoderLayer(nn.Module):
    """A chain of :class:`Repeat` steps with the a <- previous b-input, b <- previous output rule."""

    def __init__(self, repeats: list[Repeat], inputs: tuple[int, int]) -> None:
        super().__init__()
        self.repeats = nn.ModuleList(repeats)
        self.inputs = inputs

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        for step in self.repeats:
            a, b = b, step(a, b)
        return b


class Head(nn.Module):
    """ReLU -> 1x1 conv (sum of collected channels -> agg) -> BN -> ReLU -> 3x3 conv (agg -> classes)."""

    def __init__(self, c_in: int, agg_size: int, num_classes: int) -> None:
        super().__init__()
        self.pre = nn.Sequential(
            nn.ReLU(), nn.Conv2d(c_in, agg_size, 1, bias=False), nn.BatchNorm2d(agg_size), nn.ReLU()
        )
        self.classifier = nn.Conv2d(agg_size, num_classes, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pre(x))


class _Builder:
    """Realises each step by building its module; keeps them by (layer, repeat) until they are assembled."""

    def __init__(self, sep_repeats: int, agg_size: int, num_classes: int) -> None:
        self.sep_repeats, self.agg_size, self.num_classes = sep_repeats, agg_size, num_classes
        self.repeats: dict[tuple[int, int], dict[str, nn.Module]] = {}
        self.head_module: Head | None = None

    def op(self, step: OpStep) -> Feature:
        make = get_op(step.op)
        module = make(step.x.channels, step.c_out, step.stride, self.sep_repeats)
        self.repeats.setdefault((step.layer, step.repeat), {})[f"op_{step.branch}"] = module
        return Feature(step.c_out)

    def merge(self, step: MergeStep) -> Feature:
        module = get_merge(step.merge)(step.a.channels, step.b.channels, step.shrink)
        self.repeats.setdefault((step.layer, step.repeat), {})["merge"] = module
        return Feature(module.channels)

    def collect(self, step: CollectStep) -> None:
        pass  # a concatenation has no module

    def head(self, step: HeadStep) -> None:
        self.head_module = Head(step.x.channels, self.agg_size, self.num_classes)


class TemplateDecoder(nn.Module):
    """Builds the layers of a genotype over encoder outputs with ``encoder_channels``."""

    def __init__(
        self,
        genotype: Genotype,
        encoder_channels: tuple[int, int],
        num_classes: int,
        agg_size: int,
        sep_repeats: int,
    ) -> None:
        super().__init__()
        self.genotype = genotype
        built = _Builder(sep_repeats, agg_size, num_classes)
        pool = walk_decoder(genotype, [Feature(c) for c in encoder_channels], built)
        self.layers = nn.ModuleList(
            DecoderLayer([Repeat(**built.repeats[l, r]) for r in range(spec.repeats)], (spec.input_1, spec.input_2))
            for l, spec in enumerate(genotype.layers)
        )
        self.collected = genotype.collected()
        self.pool_channels = [f.channels for f in pool]
        self.head = built.head_module

    def forward(self, e0: Tensor, e1: Tensor) -> Tensor:
        """Logits at the finest collected resolution (stride 4 for arch0/arch1, up to 32 for others)."""
        pool = [e0, e1]
        for layer in self.layers:
            pool.append(layer(pool[layer.inputs[0]], pool[layer.inputs[1]]))
        out = pool[self.collected[0]]
        for i in self.collected[1:]:
            out = collect(out, pool[i])
        return self.head(out)


__all__ = [
    "NUM_ENCODER_INPUTS",
    "CollectStep",
    "DecoderLayer",
    "Feature",
    "Head",
    "HeadStep",
    "MergeStep",
    "OpStep",
    "Realiser",
    "Repeat",
    "TemplateDecoder",
    "collect",
    "collect_step",
    "concat_size",
    "walk_decoder",
    "walk_repeat",
]
