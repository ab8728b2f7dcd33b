"""``segfactory build``: a thin command over :func:`segfactory.search.pipeline.run.run_build`.

Its flags are the search's (built from SearchOptions' declarations, so every search option works here) and the
build's own: budgets, precisions, baselines, recipes, resume.
"""

from __future__ import annotations

import json

import click
from segfactory.factory.commands.flags import SectionedHelp, option
from segfactory.factory.commands.options import json_option, quiet_option, version
from segfactory.factory.commands.types import POSITIVE
from segfactory.search.cli import options_from_cli, search_options
from segfactory.search.options import GROUPS, MAX_BUDGET

EXCLUDED = ("out", "max_minutes")  # the build's --out is the build's; --search-minutes is its search budget
BUILD = "Build"


def _parse_set(items: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` recipe overrides (values as JSON; HxW for crop)."""
    from dataclasses import fields

    from segfactory.factory.commands.options import parse_settings
    from segfactory.factory.training.recipes import Recipe

    return parse_settings(items, {f.name for f in fields(Recipe)}, "--train-set")


def _recipes_help() -> str:  # from the registry, read when --help is shown (it imports torch)
    from segfactory.factory.training.recipes import BUILD_RECIPES, RECIPES

    return (f"Training recipes, comma-separated, of {', '.join(RECIPES.names())}: every model is trained with each "
            f"and keeps its better one on val [default: {','.join(BUILD_RECIPES)}].")


def _recipes(text: str | None) -> tuple[str, ...]:
    from segfactory.factory.training.recipes import BUILD_RECIPES

    return BUILD_RECIPES if text is None else tuple(r.strip() for r in text.split(",") if r.strip())


def _build_option(*args, **kw):
    return option(*args, group=BUILD, **kw)


class BuildCommand(SectionedHelp, click.Command):
    """--help in sections: the build's own options first, then the search's."""

    sections = (BUILD, *GROUPS)


@click.command("build", cls=BuildCommand)
@_build_option("--out", required=True, type=click.Path(file_okay=False),
               help="The build directory (empty, or a build to --resume).")
@_build_option("--search-minutes", type=POSITIVE, default=None,
               help="Search budget in wall minutes, over every resumed part [default: --budget candidates].")
@_build_option("--train-minutes", type=POSITIVE, default=None,
               help="Training budget per model and recipe, in wall minutes, validation included.")
@_build_option("--epochs", type=click.IntRange(min=1), default=None,
               help="Or epochs per model and recipe [default: 30].")
@_build_option("--precision", "precisions", default="fp32,int8", show_default=True,
               help="Exported precisions, comma-separated: fp32, fp16, int8 (fp32 always).")
@_build_option("--from-search", type=click.Path(file_okay=False), default=None,
               help="Use this finished search instead of searching.")
@_build_option("--baselines", is_flag=True,
               help="Also train arch0 and LR-ASPP (from scratch) with the same data, minutes and recipes.")
@_build_option("--baselines-from", type=click.Path(file_okay=False), default=None, metavar="DIR",
               help="Reuse the baselines (trainings, exports, val figures) of the earlier build DIR, made with the "
                    "same data, recipes, training budget and seed (refused otherwise); implies --baselines.")
@_build_option("--recipes", default=None, help=lambda: _recipes_help())
@_build_option("--train-set", multiple=True, metavar="KEY=VALUE",
               help="A recipe setting for every training, e.g. crop=128x128 (repeatable).")
@_build_option("--val-every", type=click.IntRange(min=0), default=None,
               help="Validate every N-th epoch while training [1 with --epochs, 2 with --train-minutes].")
@_build_option("--train-threads", type=click.IntRange(1, 256), default=None,
               help="Torch threads while training [torch's default].")
@_build_option("--train-workers", type=click.IntRange(0, 64), default=1, show_default=True,
               help="Loader processes while training.")
@_build_option("--resume", is_flag=True, help="Continue the build in --out at its first unfinished stage.")
@search_options(exclude=EXCLUDED)
@json_option
@quiet_option
@version
@click.pass_context
def build(ctx: click.Context, out: str, search_minutes, train_minutes, epochs, precisions: str, from_search,
          baselines: bool, baselines_from, recipes: str, train_set, val_every, train_threads, train_workers, resume: bool,
          as_json: bool, quiet: bool, **kw) -> None:
    """From a dataset to a deployable, verified model: search, pick, train, export, check, evaluate, bench, report.

    Writes DIR/model.onnx and DIR/model.int8.onnx (with their model cards), DIR/report.md and DIR/report.html.
    """
    from segfactory.search.pipeline.options import BuildOptions
    from segfactory.search.pipeline.run import BuildView, run_build

    search, given = options_from_cli(ctx, kw, exclude=EXCLUDED)
    if search_minutes is not None and "budget" not in given:
        search.budget = MAX_BUDGET  # --search-minutes alone bounds the search
    options = BuildOptions(out=out, search=search, search_minutes=search_minutes, train_minutes=train_minutes,
                           epochs=epochs, precisions=tuple(p.strip() for p in precisions.split(",") if p.strip()),
                           from_search=from_search, baselines=baselines, baselines_from=baselines_from,
                           recipes=_recipes(recipes),
                           train_set=_parse_set(train_set), val_every=val_every, train_threads=train_threads,
                           workers=train_workers)
    view = BuildView(enabled=not (quiet or as_json))
    result = run_build(options, resume=resume, view=view, given=given)
    if as_json:
        click.echo(json.dumps(result))
    elif not quiet:
        _render(result)


def _render(result: dict) -> None:
    m = result["model"]
    lines = [f"built {result['out']}: " + ", ".join(
        f"{p} val mIoU {100 * v['miou']:.1f}% ({v['latency_ms']:.1f} ms) -> {v['file']}" for p, v in m.items()
        if v.get("latency_ms") is not None)]
    for name, by_precision in result["baselines"].items():
        lines.append(f"  {name}: " + ", ".join(f"{p} {100 * v:.1f}%" for p, v in by_precision.items()))
    lines.append(f"report: {result['out']}/{result['report']['markdown']} and {result['report']['html']}")
    click.echo("\n".join(lines), err=True)
