"""``segfactory eval``: metrics of a checkpoint (PyTorch) or of an exported ONNX model (ONNX Runtime).

It lives in export, not beside ``train`` in factory, because ``--model FILE.onnx`` needs export's
:class:`~segfactory.export.predictor.OnnxPredictor`, and factory may not import export (design.md). The
evaluation loop itself is factory's (:func:`segfactory.factory.evaluate.evaluate_model`), handed the opener.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from segfactory.factory.commands.flags import option
from segfactory.factory.commands.options import (
    device_option,
    json_option,
    quiet_option,
    resolve_device,
    version,
)
from segfactory.factory.commands.train import SPEC_HELP
from segfactory.factory.datasets import SPLITS


def open_onnx(path: Path):
    """The predictor of an ONNX model file (ONNX Runtime, imported when a model is opened)."""
    from segfactory.export.predictor import OnnxPredictor

    return OnnxPredictor(path)


@click.command("eval")
@option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="A model.pt from train.")
@option("--model", "model_file", type=click.Path(dir_okay=False), default=None,
              help="An ONNX model (run with ONNX Runtime).")
@option("--data", required=True, help=SPEC_HELP)
@option("--split", type=click.Choice(SPLITS), default="val", show_default=True)
@option("--num-classes", type=click.IntRange(1, 1000), default=None,
              help="Classes of folder: data (default: the model's).")
@option("--ignore-index", type=int, default=None, help="Ignore label of folder: data (default 255).")
@option("--batch-size", type=click.IntRange(1, 256), default=1, show_default=True)
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
                            ignore_index=ignore_index, progress=not (quiet or as_json), open_model=open_onnx)
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
