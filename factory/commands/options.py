"""Flags shared by every command that builds a model from an architecture name or genotype."""

from __future__ import annotations

import click

from segfactory.factory._version import __version__
from segfactory.factory.errors import InputError


def version(f):
    """``--version`` on every command, as on the root."""
    return click.version_option(__version__, prog_name="segfactory")(f)


def model_config_options(f):
    """--num-classes, --agg-size, --sep-repeats, --encoder-weights (defaults: the released CamVid model)."""
    options = [
        click.option("--num-classes", type=click.IntRange(1, 1000), default=11, show_default=True,
                     help="Number of classes."),
        click.option("--agg-size", type=click.IntRange(1, 4096), default=64, show_default=True,
                     help="Channels of the head's 1x1 conv (48 in the paper's search, 64 released)."),
        click.option("--sep-repeats", type=click.IntRange(1, 8), default=2, show_default=True,
                     help="Separable units per sep op (1 in the paper's search, 2 released)."),
        click.option("--encoder-weights", default="bundled", show_default=True,
                     help="bundled | torchvision | none | PATH to a segfactory encoder file."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def config_from_options(num_classes: int, agg_size: int, sep_repeats: int, encoder_weights: str):
    from segfactory.factory.config import ModelConfig

    return ModelConfig.create(num_classes, agg_size, sep_repeats, encoder_weights)


def parse_size_option(ctx, param, value):
    """click callback: ``HxW`` -> (H, W)."""
    if value is None:
        return None
    from segfactory.factory.io import parse_size

    try:
        return parse_size(value, param.opts[0])
    except InputError as e:
        raise click.BadParameter(str(e)) from None


def input_size_option(default: str | None = "360x480", help: str = "Input size HxW (height first)."):
    return click.option("--input-size", default=default, show_default=default is not None,
                        callback=parse_size_option, help=help)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")(f)


def quiet_option(f):
    return click.option("--quiet", "-q", is_flag=True, help="No progress bar.")(f)


def device_option(f):
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                        show_default=True, help="Where the model runs; auto takes CUDA where present.")(f)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA device is available")
    return device

