"""``segfactory train`` and ``segfactory predict``: thin wrappers over the factory's library.

``segfactory eval`` lives in :mod:`segfactory.export.eval_cli`: it opens ONNX models too, which factory may not.
"""

from __future__ import annotations

import click
from segfactory.factory.commands.options import (
    device_option,
    model_config_options,
    parse_size_option,
    quiet_option,
    resolve_device,
    version,
)
from segfactory.factory.memory import BOUNDS_HELP

SPEC_HELP = "Data: camvid:PATH, cityscapes:PATH, folder:PATH (images/ + masks/) or camvid-mini."


def _explicit(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


@click.command("train")
@click.option("--arch", required=True, help="A zoo name (arch0, arch1), a genotype JSON or a search's best.json.")
@click.option("--data", required=True, help=SPEC_HELP)
@click.option("--epochs", type=click.IntRange(1, 100000), default=30, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@model_config_options
@click.option("--ignore-index", type=int, default=None, help="Ignore label of folder: data (default 255).")
@click.option("--crop", default="256x256", show_default=True, callback=parse_size_option,
              help=f"Training crop HxW (smaller images are padded with ignore). {BOUNDS_HELP}")
@click.option("--scale", nargs=2, type=float, default=(0.5, 2.0), show_default=True,
              help="Random scale range.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=8, show_default=True,
              help="Crops per step (bounded by memory with --crop).")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True,
              help="Adam (constant rates) or SGD with momentum 0.9 and a poly schedule.")
@click.option("--encoder-lr", type=float, default=None, help="Encoder learning rate [adam 5e-4, sgd 1e-2].")
@click.option("--decoder-lr", type=float, default=None, help="Decoder learning rate [adam 2e-3, sgd 1e-1].")
@click.option("--weight-decay", type=float, default=1e-5, show_default=True)
@click.option("--grad-clip", type=float, default=3.0, show_default=True,
              help="Max gradient norm, encoder and decoder separately (0: off).")
@click.option("--polyak", type=float, default=None,
              help="Polyak averaging: EMA decay per step (e.g. 0.99); weights replaced by the average each epoch.")
@device_option
@click.option("--amp", is_flag=True, help="Mixed precision (CUDA only).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(0, 64), default=2, show_default=True, help="Loader processes.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last completed epoch.")
@quiet_option
@version
@click.pass_context
def train(ctx: click.Context, arch: str, data: str, epochs: int, out: str, num_classes: int, agg_size: int,
          sep_repeats: int, encoder_weights: str, ignore_index: int | None, crop: tuple[int, int],
          scale: tuple[float, float], batch_size: int, optimizer: str, encoder_lr: float | None,
          decoder_lr: float | None, weight_decay: float, grad_clip: float, polyak: float | None, device: str,
          amp: bool, seed: int, workers: int, resume: bool, quiet: bool) -> None:
    """Train ARCH on DATA into OUT: model.pt (final weights), last.pt (for --resume), metrics.json."""
    from segfactory.factory.training import TrainConfig
    from segfactory.factory.training import train as run

    cfg = TrainConfig(
        arch=arch, data=data, epochs=epochs, crop=crop, batch_size=batch_size, optimizer=optimizer,
        encoder_lr=encoder_lr, decoder_lr=decoder_lr, weight_decay=weight_decay, polyak=polyak,
        grad_clip=grad_clip, scale=tuple(scale), seed=seed,
        num_classes=num_classes if _explicit(ctx, "num_classes") else None, ignore_index=ignore_index,
        agg_size=agg_size, sep_repeats=sep_repeats, encoder_weights=encoder_weights,
        device=resolve_device(device), amp=amp, workers=workers,
    )
    run(cfg, out, resume=resume, progress=not quiet)


@click.command("predict")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="A model.pt from train.")
@click.option("--input", "inputs", required=True, type=click.Path(), help="An image or a folder of images.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--overlay", is_flag=True, help="Also write colour overlays to OUT/overlay/STEM.png.")
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
