"""``segfactory train`` and ``segfactory predict``: thin wrappers over the factory's library.

``segfactory eval`` lives in :mod:`segfactory.export.eval_cli`: it opens ONNX models too, which factory may not.
"""

from __future__ import annotations

import click
from segfactory.factory.commands.flags import option
from segfactory.factory.commands.options import (
    device_option,
    model_config_options,
    parse_size_option,
    quiet_option,
    resolve_device,
    version,
)
from segfactory.factory.commands.types import FLOAT, POSITIVE, Names
from segfactory.factory.memory import BOUNDS_HELP
from segfactory.factory.reference import REFERENCES
from segfactory.factory.zoo import ZOO

SPEC_HELP = "Data: camvid:PATH, cityscapes:PATH, folder:PATH (images/ + masks/) or camvid-mini."


def _explicit(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _recipes():
    """factory.training.recipes, imported when a flag is parsed or its help shown (the training package imports
    torch, which listing the commands should not)."""
    from segfactory.factory.training import recipes

    return recipes


def _recipe_help() -> str:
    recipes = _recipes()
    named = "; ".join(f"{name} = {recipes.RECIPES.help(name)}" for name in recipes.RECIPES)
    return f"Training recipe (its settings are the defaults below): {named}.  [default: {recipes.DEFAULT_RECIPE}]"


def _arch_help() -> str:
    return (f"A zoo name ({', '.join(ZOO)}), a reference model ({', '.join(REFERENCES)}, trained from scratch), "
            "a genotype JSON or a search's best.json.")


@click.command("train")
@option("--arch", required=True, help=_arch_help)
@option("--data", required=True, help=SPEC_HELP)
@option("--epochs", type=click.IntRange(1, 100000), default=None,
              help="Epochs to train [default: 30 unless --minutes].")
@option("--minutes", type=POSITIVE, default=None,
              help="Or a wall-time budget, validation included, counted over every resumed part; the learning "
                   "rate decays on the elapsed fraction of it and the run ends with a validation.")
@option("--out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@model_config_options
@option("--ignore-index", type=int, default=None, help="Ignore label of folder: data (default 255).")
@option("--recipe", type=Names(lambda: _recipes().RECIPES.names()), default=None, help=_recipe_help)
@option("--crop", default=None, callback=parse_size_option,
              help=f"Training crop HxW (smaller images are padded with ignore) [the recipe's]. {BOUNDS_HELP}")
@option("--scale", nargs=2, type=FLOAT, default=None, help="Random scale range [the recipe's].")
@option("--batch-size", type=click.IntRange(1, 4096), default=None,
              help="Crops per step, bounded by memory with --crop [the recipe's: 8].")
@option("--optimizer", type=Names(lambda: _recipes().OPTIMIZERS), default=None,
        help=lambda: "adam (coupled L2), adamw (decoupled weight decay) or sgd (momentum "
                     f"{_recipes().Recipe.momentum:g}) [the recipe's].")
@option("--encoder-lr", type=FLOAT, default=None, help="Encoder (backbone) learning rate [the recipe's].")
@option("--decoder-lr", type=FLOAT, default=None, help="Decoder (head) learning rate [the recipe's].")
@option("--weight-decay", type=FLOAT, default=None, help="[the recipe's]")
@option("--schedule", type=Names(lambda: _recipes().SCHEDULES), default=None,
        help=lambda: f"Learning-rate schedule: poly decay (power {_recipes().POLY_POWER:g}) over the epochs or "
                     "minutes [the recipe's: poly].")
@option("--loss-at", type=Names(lambda: _recipes().LOSS_AT), default=None,
              help="Cross-entropy at the head's resolution or at the input's [the recipe's].")
@option("--grad-clip", type=FLOAT, default=None,
              help="Max gradient norm, encoder and decoder separately, 0: off [the recipe's].")
@option("--polyak", type=FLOAT, default=None,
              help="Polyak averaging: EMA decay per step (e.g. 0.99), capped so it spans at most a quarter of the "
                   "run; weights and BN statistics replaced by the average each epoch.")
@option("--val-every", type=click.IntRange(0, 100000), default=1, show_default=True,
              help="Validate after every N-th epoch (and after the first and the last); 0: the last only.")
@option("--val-images", type=click.IntRange(min=1), default=None,
              help="Validate on the first N images of the val split [all].")
@device_option
@option("--amp", is_flag=True, help="Mixed precision (CUDA only).")
@option("--threads", type=click.IntRange(1, 256), default=None, help="Torch threads [torch's default].")
@option("--seed", type=int, default=0, show_default=True)
@option("--workers", type=click.IntRange(0, 64), default=2, show_default=True, help="Loader processes.")
@option("--resume", is_flag=True, help="Continue the run in --out from its last completed epoch.")
@quiet_option
@version
@click.pass_context
def train(ctx: click.Context, out: str, resume: bool, quiet: bool, device: str, num_classes: int,
          scale, recipe: str | None, **options) -> None:
    """Train ARCH on DATA into OUT: model.pt (final weights), last.pt (for --resume), metrics.json."""
    from segfactory.factory.training import TrainConfig
    from segfactory.factory.training import train as run

    cfg = TrainConfig(**options, recipe=recipe or _recipes().DEFAULT_RECIPE, scale=tuple(scale) if scale else None,
                      device=resolve_device(device),
                      num_classes=num_classes if _explicit(ctx, "num_classes") else None)
    run(cfg, out, resume=resume, progress=not quiet)


@click.command("predict")
@option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="A model.pt from train.")
@option("--input", "inputs", required=True, type=click.Path(), help="An image or a folder of images.")
@option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@option("--overlay", is_flag=True, help="Also write colour overlays to OUT/overlay/STEM.png.")
@device_option
@quiet_option
@version
def predict(checkpoint: str, inputs: str, out: str, overlay: bool, device: str, quiet: bool) -> None:
    """Write OUT/STEM.png label maps (one channel, pixel = class id, input size) for each input image."""
    from segfactory.factory.evaluate import predict_checkpoint

    written = predict_checkpoint(checkpoint, inputs, out, overlay=overlay, device=resolve_device(device),
                                 progress=not quiet)
    if not quiet:
        click.echo(f"wrote {len(written)} label map(s) to {out}", err=True)
