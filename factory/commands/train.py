"""``segfactory train``, ``segfactory eval`` and ``segfactory predict``: thin wrappers over the factory's library."""

from __future__ import annotations

import json

import click
from segfactory.factory.commands.options import (
    device_option,
    json_option,
    model_config_options,
    parse_size_option,
    quiet_option,
    resolve_device,
    version,
)

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
              help="Training crop HxW (smaller images are padded with ignore).")
@click.option("--scale", nargs=2, type=float, default=(0.5, 2.0), show_default=True,
              help="Random scale range.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=8, show_default=True)
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


@click.command("eval")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="A model.pt from train.")
@click.option("--model", "model_file", type=click.Path(dir_okay=False), default=None,
              help="An ONNX model (run with ONNX Runtime).")
@click.option("--data", required=True, help=SPEC_HELP)
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="val", show_default=True)
@click.option("--num-classes", type=click.IntRange(1, 1000), default=None,
              help="Classes of folder: data (default: the model's).")
@click.option("--ignore-index", type=int, default=None, help="Ignore label of folder: data (default 255).")
@click.option("--batch-size", type=click.IntRange(1, 256), default=1, show_default=True)
@device_option
@json_option
@quiet_option
@version
def evaluate(checkpoint: str | None, model_file: str | None, data: str, split: str, num_classes: int | None,
             ignore_index: int | None, batch_size: int, device: str, as_json: bool, quiet: bool) -> None:
    """Evaluate a checkpoint or an ONNX model at full resolution: per-class IoU, mIoU, mAcc, fwIoU."""
    from segfactory.factory.evaluate import evaluate_model

    result = evaluate_model(data, split, checkpoint=checkpoint, model_file=model_file,
                            device=resolve_device(device), batch_size=batch_size, num_classes=num_classes,
                            ignore_index=ignore_index, progress=not (quiet or as_json))
    if as_json:
        keys = ("miou", "macc", "fwiou", "score", "pixel_acc", "per_class_iou", "per_class_acc", "num_images",
                "pixels", "class_names", "data", "split", "model")
        click.echo(json.dumps({k: result[k] for k in keys}))
        return
    _render(result)


def _render(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}"

    table = Table(title=f"{result['model']} on {result['data']} {result['split']} ({result['num_images']} images)")
    table.add_column("class")
    table.add_column("IoU %", justify="right")
    table.add_column("acc %", justify="right")
    for name, iou, acc in zip(result["class_names"], result["per_class_iou"], result["per_class_acc"]):
        table.add_row(name, pct(iou), pct(acc))
    table.add_section()
    table.add_row("mIoU", pct(result["miou"]), "")
    table.add_row("mean acc", "", pct(result["macc"]))
    table.add_row("fwIoU", pct(result["fwiou"]), "")
    table.add_row("score (geo. mean)", pct(result["score"]), "")
    Console().print(table)


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
