"""Model cost without running real weights: parameters, multiply-accumulates and activation memory per part.

Costs are counted on the ``meta`` device (shapes only), so even large inputs cost milliseconds. MACs count
convolutions (``out_elements * in_channels / groups * kh * kw``); BN, ReLU, pooling, resizes and
elementwise ops are not multiply-accumulates and are left out, as is customary.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from segfactory.factory.config import ModelConfig
from segfactory.factory.genotype import Genotype
from segfactory.factory.reference import Reference
from torch import nn

ACT_BYTES = 4  # float32


@dataclass
class PartCost:
    name: str
    params: int = 0
    macs: int = 0
    activation_bytes: int = 0  # bytes of every leaf module's output, float32
    output_shape: tuple[int, ...] = ()


@dataclass
class ModelCost:
    input_size: tuple[int, int]
    parts: list[PartCost] = field(default_factory=list)
    output_shape: tuple[int, ...] = ()
    native_shape: tuple[int, ...] = ()

    def total(self, attr: str, prefix: str = "") -> int:
        return sum(getattr(p, attr) for p in self.parts if p.name.startswith(prefix))

    @property
    def params(self) -> int:
        return self.total("params")

    @property
    def macs(self) -> int:
        return self.total("macs")

    def to_dict(self) -> dict:
        return {
            "params": self.params,
            "encoder_params": self.total("params", "encoder"),
            "decoder_params": self.params - self.total("params", "encoder"),
            "macs": self.macs,
            "activation_bytes": self.total("activation_bytes"),
            "input_size": list(self.input_size),
            "output_shape": list(self.output_shape),
            "native_logits_shape": list(self.native_shape),
            "parts": [
                {"name": p.name, "params": p.params, "macs": p.macs, "activation_bytes": p.activation_bytes,
                 "output_shape": list(p.output_shape)}
                for p in self.parts
            ],
        }


def _conv_macs(m: nn.Conv2d, out_shape: torch.Size) -> int:
    kh, kw = m.kernel_size
    return out_shape.numel() * (m.in_channels // m.groups) * kh * kw


def model_cost(genotype: Genotype | Reference, config: ModelConfig, input_size: tuple[int, int],
               batch: int = 1) -> ModelCost:
    """Cost of ``build_model(genotype, config)`` on a ``batch x 3 x H x W`` input (a reference model too).

    Meta-device kernels run through Python decompositions (about a second per model), and a search asks for
    the same candidate's cost more than once, so results are memoised (copies are returned).
    """
    return copy.deepcopy(_model_cost(genotype, config, tuple(input_size), batch))


@functools.lru_cache(maxsize=256)
def _model_cost(genotype: Genotype | Reference, config: ModelConfig, input_size: tuple[int, int],
                batch: int) -> ModelCost:
    if isinstance(genotype, Genotype):
        return _genotype_cost(genotype, config, input_size, batch)
    from segfactory.factory.model import build_model

    with torch.device("meta"):
        model = build_model(genotype, config, load_weights=False).eval()
    cost = ModelCost(tuple(input_size))
    x = torch.empty(batch, 3, *input_size, device="meta")
    cost.native_shape = _count(cost, [("encoder", model.encoder), ("head", model.decoder)],
                               lambda: model(x, native=True), batch)
    cost.output_shape = (batch, config.num_classes, *input_size)
    return cost


@functools.lru_cache(maxsize=16)
def _encoder_cost(padding: str, input_size: tuple[int, int], batch: int) -> tuple[PartCost, list[tuple[int, ...]]]:
    """The fixed encoder's cost and its outputs' shapes (the same for every genotype: counted once)."""
    from segfactory.factory.encoder import Encoder

    with torch.device("meta"):
        encoder = Encoder(padding).eval()
    cost = ModelCost(tuple(input_size))
    shapes: list[tuple[int, ...]] = []
    x = torch.empty(batch, 3, *input_size, device="meta")
    _count(cost, [("encoder", encoder)], lambda: encoder(x), batch, collect=shapes)
    return cost.parts[0], shapes


def _genotype_cost(genotype: Genotype, config: ModelConfig, input_size: tuple[int, int], batch: int) -> ModelCost:
    """The encoder's cached cost, then the decoder run on empty (batch-0) CPU features: the real kernels give
    every shape without computing an element, in milliseconds (meta tensors take about a second a model)."""
    from segfactory.factory.decoder import TemplateDecoder
    from segfactory.factory.encoder import Encoder

    encoder, shapes = _encoder_cost(config.encoder_padding, tuple(input_size), batch)
    decoder = TemplateDecoder(genotype, Encoder.out_channels, config.num_classes, config.agg_size,
                              config.sep_repeats).eval()
    cost = ModelCost(tuple(input_size), parts=[copy.copy(encoder)])
    parts = [(f"layer{l}", layer) for l, layer in enumerate(decoder.layers)] + [("head", decoder.head)]
    empty = [torch.zeros(0, *s[1:]) for s in shapes]
    cost.native_shape = _count(cost, parts, lambda: decoder(*empty), batch)
    cost.output_shape = (batch, config.num_classes, *input_size)
    return cost


def _count(cost: ModelCost, parts: list[tuple[str, nn.Module]], run: Callable[[], Any], batch: int,
           collect: list | None = None) -> tuple[int, ...]:
    """``run()`` the model (on a batch of ``batch``, or of 0: then every count is per sample times ``batch``) with
    hooks adding each part's params, MACs and activation bytes to ``cost``; returns the output's shape at
    ``batch`` (``collect``: the shapes of every output, when the model returns several)."""
    handles = []
    for name, module in parts:
        pc = PartCost(name, params=sum(p.numel() for p in module.parameters()))
        cost.parts.append(pc)

        def leaf_hook(m, inputs, out, pc=pc):
            if isinstance(out, torch.Tensor):
                pc.activation_bytes += _at(out.shape, batch).numel() * ACT_BYTES
                if isinstance(m, nn.Conv2d):
                    pc.macs += _conv_macs(m, _at(out.shape, batch))

        def part_hook(m, inputs, out, pc=pc):
            last = out[-1] if isinstance(out, tuple) else out
            if isinstance(last, dict):  # a torchvision backbone: its deepest feature map
                last = list(last.values())[-1]
            pc.output_shape = tuple(_at(last.shape, batch))

        for m in module.modules():
            if not list(m.children()):
                handles.append(m.register_forward_hook(leaf_hook))
        handles.append(module.register_forward_hook(part_hook))
    try:
        with torch.no_grad():
            out = run()
    finally:
        for h in handles:
            h.remove()
    outs = out if isinstance(out, (tuple, list)) else [out]
    if collect is not None:
        collect.extend(tuple(_at(o.shape, batch)) for o in outs)
    return tuple(_at(outs[-1].shape, batch))


def _at(shape: torch.Size, batch: int) -> torch.Size:
    """``shape`` with its batch dimension set to ``batch`` (outputs of a batch-0 run)."""
    return torch.Size((batch, *shape[1:]))
