"""Model cost without running real weights: parameters, multiply-accumulates and activation memory per part.

Costs are counted on the ``meta`` device (shapes only), so even large inputs cost milliseconds. MACs count
convolutions (``out_elements * in_channels / groups * kh * kw``); BN, ReLU, pooling, resizes and
elementwise ops are not multiply-accumulates and are left out, as is customary.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field

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


def _conv_macs(m: nn.Conv2d, out: torch.Tensor) -> int:
    kh, kw = m.kernel_size
    return out.numel() * (m.in_channels // m.groups) * kh * kw


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
    from segfactory.factory.model import build_model

    with torch.device("meta"):
        model = build_model(genotype, config, load_weights=False).eval()
    parts: list[tuple[str, nn.Module]] = [("encoder", model.encoder)]
    if isinstance(genotype, Genotype):
        parts += [(f"layer{l}", layer) for l, layer in enumerate(model.decoder.layers)]
        parts += [("head", model.decoder.head)]
    else:  # a reference model: backbone and head
        parts += [("head", model.decoder)]
    cost = ModelCost(tuple(input_size))
    handles = []
    for name, module in parts:
        pc = PartCost(name, params=sum(p.numel() for p in module.parameters()))
        cost.parts.append(pc)

        def leaf_hook(m, inputs, out, pc=pc):
            if isinstance(out, torch.Tensor):
                pc.activation_bytes += out.numel() * ACT_BYTES
                if isinstance(m, nn.Conv2d):
                    pc.macs += _conv_macs(m, out)

        def part_hook(m, inputs, out, pc=pc):
            last = out[-1] if isinstance(out, tuple) else out
            if isinstance(last, dict):  # a torchvision backbone: its deepest feature map
                last = list(last.values())[-1]
            pc.output_shape = tuple(last.shape)

        for m in module.modules():
            if not list(m.children()):
                handles.append(m.register_forward_hook(leaf_hook))
        handles.append(module.register_forward_hook(part_hook))
    try:
        with torch.no_grad():
            x = torch.empty(batch, 3, *input_size, device="meta")
            native = model(x, native=True)
        cost.native_shape = tuple(native.shape)
        cost.output_shape = (batch, config.num_classes, *input_size)
    finally:
        for h in handles:
            h.remove()
    return cost
