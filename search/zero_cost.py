"""Zero-cost scores: how promising a candidate looks at initialisation, from one pass, in about a second.

``synflow`` (Tanaka et al. 2020; as a NAS proxy, Abdelfattah et al., ICLR 2021): with every parameter replaced
by its absolute value and an all-ones input, ``R = sum(model(1))``; the score is ``sum |theta * dR/dtheta|`` over
the decoder's parameters (the pretrained encoder is the same for every candidate). It runs in float64, BN in eval
mode (at initialisation an identity up to its affine terms), so that products of many layers neither underflow
nor overflow. ``decoder_params`` and ``decoder_macs`` are the naive baselines every zero-cost score must beat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from segfactory.factory.registry import Registry

# name -> score(genotype, config, input_size, seed) -> float (higher: more promising)
SCORES: Registry[Callable[..., float]] = Registry("zero-cost score")


@SCORES.register("synflow", help="sum |theta x dR/dtheta| of the decoder, |theta|, all-ones input, float64")
def synflow(genotype: Any, config: Any, input_size: tuple[int, int], seed: int = 0) -> float:
    import torch
    from segfactory.factory.model import build_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(genotype, config).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad()
    model(torch.ones(1, 3, *input_size, dtype=torch.float64), native=True).sum().backward()
    return float(sum((p * p.grad).abs().sum().item() for p in model.decoder.parameters() if p.grad is not None))


@SCORES.register("decoder_params", help="the decoder's parameters (a naive baseline)")
def decoder_params(genotype: Any, config: Any, input_size: tuple[int, int], seed: int = 0) -> float:
    from segfactory.factory.cost import model_cost

    cost = model_cost(genotype, config, input_size)
    return float(cost.params - cost.total("params", "encoder"))


@SCORES.register("decoder_macs", help="the decoder's multiply-adds (a naive baseline)")
def decoder_macs(genotype: Any, config: Any, input_size: tuple[int, int], seed: int = 0) -> float:
    from segfactory.factory.cost import model_cost

    cost = model_cost(genotype, config, input_size)
    return float(cost.macs - cost.total("macs", "encoder"))
