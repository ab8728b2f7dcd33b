"""A readable description of a genotype under a ModelConfig: per layer inputs, ops, sizes and costs."""

from __future__ import annotations

from typing import Any

from segfactory.factory.config import ModelConfig
from segfactory.factory.cost import model_cost
from segfactory.factory.genotype import NUM_ENCODER_INPUTS, Genotype

SHORT = {"sep_conv_3x3": "sep3", "sep_conv_5x5": "sep5", "global_average_pool": "gap", "max_pool_3x3": "max3",
         "sep_conv_5x5_dil6": "sep5d6", "skip_connect": "skip", "psum": "psum", "cat": "cat"}


def _pool_name(i: int) -> str:
    return ("E0", "E1")[i] if i < NUM_ENCODER_INPUTS else f"L{i - NUM_ENCODER_INPUTS}"


def describe(genotype: Genotype, config: ModelConfig, input_size: tuple[int, int]) -> dict[str, Any]:
    """The report ``arch show --json`` prints: cost totals, per-part figures, genotype and config (a reference
    model: its backbone and head, and what it is)."""
    cost = model_cost(genotype, config, input_size)
    report = cost.to_dict()
    if not isinstance(genotype, Genotype):  # a reference model (factory.reference): no decoder layers to describe
        report.update(key=genotype.key(), arch=genotype.to_dict(), model_config=config.to_dict(),
                      config_key=config.key(), name=genotype.name)
        return report
    collected = set(genotype.collected())
    for l, (spec, part) in enumerate(zip(genotype.layers, report["parts"][1:-1])):
        t = genotype.templates[spec.template]
        part.update(
            inputs=[_pool_name(spec.input_1), _pool_name(spec.input_2)],
            template=spec.template, ops=t.to_list(), repeats=spec.repeats, stride=spec.stride,
            collected=(NUM_ENCODER_INPUTS + l) in collected,
            output_stride=round(input_size[0] / part["output_shape"][2], 2),
        )
    report.update(key=genotype.key(), genotype=genotype.to_dict(), model_config=config.to_dict(),
                  config_key=config.key())
    return report


def render(report: dict[str, Any]) -> None:
    """Print the report as a rich table."""
    from rich.console import Console
    from rich.table import Table

    h, w = report["input_size"]
    what = f"reference model {report['name']}" if "name" in report else f"genotype {report['key']}"
    table = Table(title=f"{what} at {h}x{w}", title_justify="left")
    for col in ("part", "in", "template", "xR", "S", "out CxHxW", "/", "params", "MMAC", "out?"):
        table.add_column(col, justify="right" if col in ("params", "MMAC", "xR", "S", "/") else "left",
                         no_wrap=True)
    for p in report["parts"]:
        shape = "x".join(str(s) for s in p["output_shape"][1:])
        if "ops" in p:
            table.add_row(p["name"], ", ".join(p["inputs"]), f"T{p['template']} " + "/".join(SHORT[o] for o in p["ops"]),
                          str(p["repeats"]), str(p["stride"]), shape, f"{p['output_stride']:g}",
                          f"{p['params']:,}", f"{p['macs'] / 1e6:,.1f}", "yes" if p["collected"] else "")
        else:
            table.add_row(p["name"], "", "", "", "", shape, "", f"{p['params']:,}", f"{p['macs'] / 1e6:,.1f}", "")
    console = Console(width=max(Console().width, 100))
    console.print(table)
    cfg = report["model_config"]
    console.print(
        f"params {report['params']:,} (encoder {report['encoder_params']:,}, decoder {report['decoder_params']:,})"
        f"  |  {report['macs'] / 1e9:.3f} GMAC  |  output {report['output_shape']}"
        f"  |  classes {cfg['num_classes']}, agg {cfg['agg_size']}, sep_repeats {cfg['sep_repeats']},"
        f" encoder {cfg['encoder_weights']} ({cfg['encoder_padding']})"
    )
