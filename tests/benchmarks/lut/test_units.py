"""Lookup-table units follow the decoder's own construction: shapes as the built model has them, new ops included."""

from __future__ import annotations

import random

import pytest
import torch
from segfactory.benchmarks.lut.measure import build_unit
from segfactory.benchmarks.lut.units import UnitCutter, encoder_features, enumerate_units, model_units
from segfactory.factory import genotype as genotypes
from segfactory.factory import ops
from segfactory.factory.config import ModelConfig
from segfactory.factory.decoder import walk_decoder
from segfactory.factory.errors import InputError
from segfactory.factory.genotype import Genotype, sample_genotype
from segfactory.factory.model import build_model
from segfactory.factory.registry import Registry
from segfactory.factory.zoo import resolve_arch
from torch import nn

# 72x88: E0 18x22, E1 9x11, so a stride-2 op that floors odd sizes is told apart from one that ceils them
SIZE = (72, 88)
CFG = ModelConfig.create(encoder_weights="none", sep_repeats=1, agg_size=48)


class _Recorder(UnitCutter):
    """The walk's shapes: (kind, input shapes..., output shape) of every op and merge, the head's input."""

    def __init__(self, config: ModelConfig, size: tuple[int, int]) -> None:
        super().__init__(lambda sig: None, config, size)
        self.seen: list[tuple] = []

    def op(self, step):
        out = super().op(step)
        self.seen.append(("op", (step.x.channels, *step.x.size), (out.channels, *out.size)))
        return out

    def merge(self, step):
        out = super().merge(step)
        self.seen.append(("merge", (step.a.channels, *step.a.size), (step.b.channels, *step.b.size),
                          (out.channels, *out.size)))
        return out

    def head(self, step):
        self.seen.append(("head", (step.x.channels, *step.x.size)))


def walked_shapes(genotype: Genotype, config: ModelConfig, size: tuple[int, int]) -> list[tuple]:
    recorder = _Recorder(config, size)
    walk_decoder(genotype, encoder_features(config, size), recorder)
    return recorder.seen


def built_shapes(genotype: Genotype, config: ModelConfig, size: tuple[int, int]) -> list[tuple]:
    """The same, seen by forward hooks on the modules of the built model, in execution order."""
    model = build_model(genotype, config, load_weights=False).eval()
    seen: list[tuple] = []

    def hook(kind):
        def record(module, inputs, output):
            ins = tuple(tuple(t.shape[1:]) for t in inputs)
            seen.append((kind, *ins) if kind == "head" else (kind, *ins, tuple(output.shape[1:])))

        return record

    for layer in model.decoder.layers:
        for step in layer.repeats:
            step.op_a.register_forward_hook(hook("op"))
            step.op_b.register_forward_hook(hook("op"))
            step.merge.register_forward_hook(hook("merge"))
    model.decoder.head.register_forward_hook(hook("head"))
    with torch.no_grad():
        model(torch.zeros(1, 3, *size))
    return seen


@pytest.mark.parametrize("sep_repeats", [1, 2])
def test_walk_follows_the_built_model(sep_repeats):
    config = CFG.with_(sep_repeats=sep_repeats)
    rng = random.Random(3)
    for g in [resolve_arch("arch0"), resolve_arch("arch1")] + [sample_genotype(rng) for _ in range(3)]:
        assert walked_shapes(g, config, SIZE) == built_shapes(g, config, SIZE), g.key()


def _avg_pool_2x2(c_in: int, c_out: int, stride: int, sep_repeats: int) -> nn.Module:
    # At stride 2 it floors odd sizes (9x11 -> 4x5) where every registered op ceils them (5x6).
    return nn.Sequential(ops.conv_bn(c_in, c_out, relu=False), nn.AvgPool2d(stride, stride))


def _ops_with(name: str, make) -> Registry:
    """A copy of the op registry with one more op (the registry is append-only: the test swaps copies)."""
    extended = Registry(ops.OPS.kind)
    for known in ops.OPS:
        extended.register(known, ops.OPS[known], help=ops.OPS.help(known))
    extended.register(name, make)
    return extended


NEW_OP_GENOTYPE = {
    "templates": [["avg_pool_2x2", "sep_conv_3x3", "psum"], ["sep_conv_3x3", "avg_pool_2x2", "cat"],
                  ["skip_connect", "max_pool_3x3", "psum"]],
    "layers": [[1, 1, 0, 1, 2], [0, 2, 1, 2, 2], [2, 3, 2, 1, 1], [3, 4, 0, 2, 1], [4, 0, 1, 1, 1],
               [5, 6, 2, 1, 1], [7, 1, 0, 2, 1]],
}


def test_a_new_op_needs_no_table_code(monkeypatch):
    """Adding an op is registering its factory and admitting its name; the table code is left as it is."""
    with monkeypatch.context() as patch:
        # what adding an op means: its factory in the registry, its name among those a genotype admits
        patch.setattr(ops, "OPS", _ops_with("avg_pool_2x2", _avg_pool_2x2))
        patch.setattr(genotypes, "OP_NAMES", (*genotypes.OP_NAMES, "avg_pool_2x2"))
        g = Genotype.from_dict(NEW_OP_GENOTYPE)
        units = model_units(g, CFG, SIZE)
        # layer 0 on E1 (32 ch, 9x11) at stride 2: the new op floors, sep_conv_3x3 ceils, the merge shrinks
        assert {"op|avg_pool_2x2|32>64|s2|9x11", "resize|64|5x6>4x5", "psum|64|4x5"} <= set(units)
        assert walked_shapes(g, CFG, SIZE) == built_shapes(g, CFG, SIZE)

        every = set(enumerate_units(CFG, SIZE))
        rng = random.Random(5)
        fitting = 0
        for other in [g] + [sample_genotype(rng) for _ in range(30)]:
            try:
                units = model_units(other, CFG, SIZE)
            except InputError:  # the new op pools a 1x1 map away: the model itself cannot run either
                with pytest.raises(RuntimeError, match="too small"):
                    built_shapes(other, CFG, SIZE)
                continue
            fitting += 1
            missing = set(units) - every
            assert not missing, (other.key(), missing)
        assert fitting >= 20
        assert {u for u in every if u.startswith("op|avg_pool_2x2|")} >= {"op|avg_pool_2x2|32>64|s2|9x11"}

        module, shapes = build_unit("op|avg_pool_2x2|32>64|s2|9x11", CFG)
        with torch.no_grad():
            assert module.eval()(*[torch.zeros(s) for s in shapes]).shape == (1, 64, 4, 5)
    assert "avg_pool_2x2" not in ops.OPS and "avg_pool_2x2" not in genotypes.OP_NAMES
