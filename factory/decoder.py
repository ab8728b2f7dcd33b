"""The template decoder (method.md §2.5): 7 layers over a growing pool of feature maps, and the head.

Pool index 0 = E0 (24 ch, /4), 1 = E1 (32 ch, /8), 2 + j = output of layer j. Layer ``l`` with inputs
(p1, p2), template (op_a, op_b, merge), ``R`` repeats and stride ``S`` computes, for r = 0..R-1::

    y_r = merge_r(op_a_r(a_r), op_b_r(b_r)),   a_0 = pool[p1], b_0 = pool[p2],   a_{r+1} = b_r, b_{r+1} = y_r

Channels double at repeat 0 when S = 2; every repeat (and every unit of a sep op) applies S; merges output
max(branch channels) at the smaller (layers 0-2) or larger (layers 3-6) spatial size. The outputs no later
layer reads ("loose ends") are upsampled to the finest among them, concatenated and classified.
The module graph is static: everything is decided here, at construction.
"""

from __future__ import annotations

from torch import Tensor, nn

from segfactory.factory.genotype import NUM_ENCODER_INPUTS, STRIDED_LAYERS, Genotype
from segfactory.factory.ops import get_merge, get_op, resize

import torch


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
        channels = list(encoder_channels)
        layers = []
        for l, spec in enumerate(genotype.layers):
            t = genotype.templates[spec.template]
            make_a, make_b, make_merge = get_op(t.op_a), get_op(t.op_b), get_merge(t.merge)
            shrink = l < STRIDED_LAYERS
            c_a, c_b = channels[spec.input_1], channels[spec.input_2]
            steps = []
            for r in range(spec.repeats):
                # Channels double only at repeat 0 of a stride-2 layer; later repeats keep their inputs' channels.
                grow = spec.stride if r == 0 else 1
                op_a = make_a(c_a, c_a * grow, spec.stride, sep_repeats)
                op_b = make_b(c_b, c_b * grow, spec.stride, sep_repeats)
                merge = make_merge(c_a * grow, c_b * grow, shrink)
                steps.append(Repeat(op_a, op_b, merge))
                c_a, c_b = c_b, merge.channels
            layers.append(DecoderLayer(steps, (spec.input_1, spec.input_2)))
            channels.append(c_b)
        self.layers = nn.ModuleList(layers)
        self.collected = genotype.collected()
        self.pool_channels = channels
        self.head = Head(sum(channels[i] for i in self.collected), agg_size, num_classes)

    def forward(self, e0: Tensor, e1: Tensor) -> Tensor:
        """Logits at the finest collected resolution (stride 4 for arch0/arch1, up to 32 for others)."""
        pool = [e0, e1]
        for layer in self.layers:
            pool.append(layer(pool[layer.inputs[0]], pool[layer.inputs[1]]))
        out = pool[self.collected[0]]
        for i in self.collected[1:]:
            x = pool[i]
            size = max(tuple(out.shape[-2:]), tuple(x.shape[-2:]))
            out = torch.cat([resize(out, size), resize(x, size)], dim=1)
        return self.head(out)


__all__ = ["TemplateDecoder", "DecoderLayer", "Repeat", "Head", "NUM_ENCODER_INPUTS"]
