"""``segfactory arch show|sample|list``: inspect architectures without training anything."""

from __future__ import annotations

import json
import random

import click
from segfactory.factory.commands.flags import option
from segfactory.factory.commands.options import (
    config_from_options,
    input_size_option,
    json_option,
    model_config_options,
    version,
)


@click.group()
@version
def arch() -> None:
    """Show, sample and inspect decoder architectures."""


@arch.command("show")
@click.argument("architecture")
@model_config_options
@input_size_option()
@json_option
@version
def show(architecture: str, num_classes: int, agg_size: int, sep_repeats: int, encoder_weights: str,
         input_size: tuple[int, int], as_json: bool) -> None:
    """Describe ARCHITECTURE (a zoo name, a reference model, a genotype JSON or a best.json): layers, sizes,
    parameters, MACs."""
    from segfactory.factory.arch_report import describe
    from segfactory.factory.model import config_for
    from segfactory.factory.zoo import resolve_arch

    genotype = resolve_arch(architecture)
    config = config_for(genotype, config_from_options(num_classes, agg_size, sep_repeats, encoder_weights))
    report = describe(genotype, config, input_size)
    if as_json:
        click.echo(json.dumps(report))
        return
    from segfactory.factory.arch_report import render

    render(report)


@arch.command("sample")
@option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@option("--count", type=click.IntRange(1, 10000), default=1, show_default=True,
              help="How many genotypes (one JSON object per line).")
@version
def sample(seed: int, count: int) -> None:
    """Print a random valid genotype as canonical JSON."""
    from segfactory.factory.genotype import sample_genotype

    rng = random.Random(seed)
    for _ in range(count):
        click.echo(sample_genotype(rng).to_json())


@arch.command("list")
@version
def list_() -> None:
    """List the zoo's architectures and the reference models."""
    from segfactory.factory.reference import REFERENCES
    from segfactory.factory.zoo import ZOO

    for name, g in sorted(ZOO.items()):
        click.echo(f"{name}  key={g.key()}")
    for name in REFERENCES.names():
        click.echo(f"{name}  reference model: {REFERENCES.help(name)}, trained from scratch")
