"""Flags shared by every command that builds a model from an architecture name or genotype."""

from __future__ import annotations

import click
from segfactory.factory._version import __version__
from segfactory.factory.commands.flags import option
from segfactory.factory.config import LIMITS, RELEASED, SEARCH_PROXY, WEIGHT_TAGS, ModelConfig
from segfactory.factory.errors import InputError


def version(f):
    """``--version`` on every command, as on the root."""
    return click.version_option(__version__, prog_name="segfactory")(f)


# --encoder-weights' help, shared with the search's flag of the same name
ENCODER_WEIGHTS_HELP = f"{' | '.join(WEIGHT_TAGS)} | PATH to a segfactory encoder file."


def model_config_options(f):
    """--num-classes, --agg-size, --sep-repeats, --encoder-weights (defaults: the released CamVid model)."""
    options = [
        option("--num-classes", type=click.IntRange(*LIMITS["num_classes"]), default=RELEASED.num_classes,
                     show_default=True, help="Number of classes."),
        option("--agg-size", type=click.IntRange(*LIMITS["agg_size"]), default=RELEASED.agg_size,
                     show_default=True, help=f"Channels of the head's 1x1 conv ({SEARCH_PROXY.agg_size} in the "
                                             f"paper's search, {RELEASED.agg_size} released)."),
        option("--sep-repeats", type=click.IntRange(*LIMITS["sep_repeats"]), default=RELEASED.sep_repeats,
                     show_default=True, help=f"Separable units per sep op ({SEARCH_PROXY.sep_repeats} in the "
                                             f"paper's search, {RELEASED.sep_repeats} released)."),
        option("--encoder-weights", default=RELEASED.encoder_weights, show_default=True,
                     help=ENCODER_WEIGHTS_HELP),
    ]
    for decorate in reversed(options):
        f = decorate(f)
    return f


# The parameters model_config_options adds, by their names in the command's function
MODEL_CONFIG_PARAMS = ("num_classes", "agg_size", "sep_repeats", "encoder_weights")


def explicit(ctx: click.Context, name: str) -> bool:
    """Whether the user gave parameter ``name`` (command line or environment) rather than leaving its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def config_from_options(num_classes: int, agg_size: int, sep_repeats: int, encoder_weights: str) -> ModelConfig:
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
    return option("--input-size", default=default, show_default=default is not None,
                        callback=parse_size_option, help=help)


def json_option(f):
    return option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")(f)


def quiet_option(f):
    return option("--quiet", "-q", is_flag=True, help="No progress bar.")(f)


# Where torch runs: not a registry (torch names the devices), but one list that every --device flag reads.
DEVICES = ("cpu", "cuda")
AUTO_DEVICE = "auto"  # CUDA where present (resolve_device)
DEVICE_CHOICES = (AUTO_DEVICE, *DEVICES)


def device_option(f):
    return option("--device", type=click.Choice(DEVICE_CHOICES), default=AUTO_DEVICE,
                        show_default=True, help="Where the model runs; auto takes CUDA where present.")(f)


def resolve_device(device: str) -> str:
    import torch

    if device == AUTO_DEVICE:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA device is available")
    return device


def parse_settings(items: tuple[str, ...], known: set[str], flag: str, sizes: tuple[str, ...] = ("crop",)) -> dict:
    """``KEY=VALUE`` pairs -> {KEY: value} for the setting names ``known`` (values as JSON; ``HxW`` for the
    ``sizes`` keys); a bad pair is a click usage error naming ``flag``."""
    import json

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(known))}",
                                     param_hint=flag)
        if key in sizes and "x" in value:
            h, _, w = value.partition("x")
            try:
                out[key] = (int(h), int(w))
            except ValueError:
                raise click.BadParameter(f"{item!r}: {value!r} is not HxW", param_hint=flag) from None
            continue
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            raise click.BadParameter(f"{item!r}: {value!r} is not a number, null or a JSON list",
                                     param_hint=flag) from None
    return out
