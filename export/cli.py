"""``segfactory export``: a thin wrapper over :func:`segfactory.export.api.export_model`."""

from __future__ import annotations

import json

import click
from segfactory.export.api import FORMATS, PRECISIONS, ExportOptions
from segfactory.export.onnx import EXPORTERS, INPUT_DTYPES, OUTPUTS
from segfactory.factory.commands.flags import option
from segfactory.factory.commands.options import (
    MODEL_CONFIG_PARAMS,
    config_from_options,
    explicit,
    input_size_option,
    json_option,
    model_config_options,
    quiet_option,
    version,
)
from segfactory.factory.memory import BOUNDS_HELP


def _default(name: str):
    """ExportOptions' default for field ``name``: the library's and the command line's are one."""
    return ExportOptions.__dataclass_fields__[name].default


SPEC_HELP = "Real images for parity, calibration and mIoU: camvid:PATH, cityscapes:PATH, folder:PATH or camvid-mini " \
            "[default: camvid-mini where the repository has it]."


@click.command("export")
@option("--checkpoint", type=click.Path(dir_okay=True), default=None,
              help="A trained model: DIR/model.pt (or the run DIR).")
@option("--arch", default=None, help="Or an untrained architecture: zoo name, genotype JSON or best.json.")
@option("--format", "fmt", type=click.Choice(FORMATS), default=_default("fmt"), show_default=True,
              help="ONNX file or TensorRT engine.")
@input_size_option(default=None, help="Input size HxW of the exported graph, e.g. 360x480 (required; 8..8192 "
                                      f"per side). {BOUNDS_HELP}")
@model_config_options
@option("--precision", type=click.Choice(PRECISIONS), default=_default("precision"), show_default=True,
              help="fp16: the graph in FP16; int8: Q/DQ calibrated on --data (TensorRT's explicit quantisation).")
@option("--dynamic-batch", is_flag=True, help="A symbolic batch dimension.")
@option("--opset", type=click.IntRange(17, 30), default=_default("opset"), show_default=True, help="ONNX opset.")
@option("--data", default=None, help=SPEC_HELP)
@option("--calib-images", type=click.IntRange(1, 100000), default=_default("calib_images"), show_default=True,
              help="INT8 calibration images (from the train split of --data).")
@option("--output", type=click.Choice(OUTPUTS), default=_default("output"), show_default=True,
              help="labels: argmax in the graph (uint8 N,H,W).")
@option("--input", "input_dtype", type=click.Choice(INPUT_DTYPES), default=_default("input_dtype"),
              show_default=True, help="uint8: RGB input with the normalisation in the graph.")
@option("--exporter", type=click.Choice(EXPORTERS), default=_default("exporter"),
              show_default=True, help="torch.onnx exporter.")
@option("--out", required=True, type=click.Path(), help="Output FILE (model.onnx, or model.engine for trt).")
@json_option
@quiet_option
@version
@click.pass_context
def export(ctx: click.Context, checkpoint: str | None, arch: str | None, fmt: str, input_size, num_classes: int,
           agg_size: int, sep_repeats: int, encoder_weights: str, precision: str, dynamic_batch: bool, opset: int,
           data: str | None, calib_images: int, output: str, input_dtype: str, exporter: str, out: str,
           as_json: bool, quiet: bool) -> None:
    """Export a checkpoint or architecture to ONNX (FP32/FP16/INT8) or a TensorRT engine, with FILE.json beside it.

    FP32 parity against PyTorch must reach 99.9% argmax agreement, or nothing is written (exit 1).
    """
    from segfactory.factory.errors import InputError

    if input_size is None:
        raise click.UsageError("Missing option '--input-size' (HxW, e.g. 360x480).")
    if (checkpoint is None) == (arch is None):
        raise click.UsageError("pass exactly one of --checkpoint and --arch")
    if precision != "int8" and explicit(ctx, "calib_images"):
        raise click.UsageError(f"--calib-images: only with --precision int8 (this export is {precision}: nothing is "
                               "calibrated)")
    config = None
    if checkpoint is not None:
        given = [f"--{n.replace('_', '-')}" for n in MODEL_CONFIG_PARAMS if explicit(ctx, n)]
        if given:
            raise InputError(f"{', '.join(given)} cannot be combined with --checkpoint: the checkpoint holds its "
                             "model configuration")
    else:
        config = config_from_options(num_classes, agg_size, sep_repeats, encoder_weights)

    from segfactory.export.api import ExportOptions, export_model

    options = ExportOptions(input_size=input_size, fmt=fmt, precision=precision, dynamic_batch=dynamic_batch,
                            opset=opset, data=data, calib_images=calib_images, output=output,
                            input_dtype=input_dtype, exporter=exporter)

    def log(message: str) -> None:
        if not quiet:
            click.echo(f"• {message}", err=True)

    result = export_model(out, options, checkpoint=checkpoint, arch=arch, config=config, command=_command(ctx),
                          log=log)
    if as_json:
        click.echo(json.dumps(result))
        return
    _render(result)


def _command(ctx: click.Context) -> str:
    """The command line that reproduces this export (the options given explicitly, in their CLI spelling)."""
    import shlex

    args = ["segfactory", "export"]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or not explicit(ctx, param.name) or param.name == "as_json":
            continue
        value, flag = ctx.params[param.name], param.opts[0]
        if param.is_flag:
            if value:
                args.append(flag)
        elif param.name == "input_size":
            args += [flag, f"{value[0]}x{value[1]}"]
        else:
            args += [flag, str(value)]
    return shlex.join(args)


def _render(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"export -> {result['out']}", show_header=True)
    table.add_column("check")
    table.add_column("agreement", justify="right")
    table.add_column("max |diff|", justify="right")
    table.add_column("max rel", justify="right")

    def row(name: str, p: dict | None) -> None:
        if not p:
            return
        fmt = lambda v: "-" if v is None else f"{v:.2e}"
        table.add_row(name, f"{p['agreement']:.4%}", fmt(p.get("max_abs_diff")), fmt(p.get("max_rel_diff")))

    row("ONNX FP32 vs PyTorch", result.get("parity_fp32"))
    if result["precision"] != "fp32":
        row(f"ONNX {result['precision'].upper()} vs PyTorch", result.get("parity"))
    console = Console()
    console.print(table)
    ev = result.get("evaluation")
    if ev and ev.get("miou") is not None:
        line = f"mIoU on {ev['data']} val: {ev['miou']:.4f}"
        if ev.get("miou_fp32") is not None:
            line += f" (FP32: {ev['miou_fp32']:.4f})"
        console.print(line)
    console.print(f"wrote {result['onnx']} and {result['card']}")
    if result.get("engine"):
        console.print(f"wrote {result['engine']} and {result['engine_card']}")
