"""``segfactory search [options]`` runs a search; ``segfactory search pick DIR`` picks from one.

The search's flags are built from :class:`~segfactory.search.options.SearchOptions`, whose fields declare their
flag, help and --help section: adding a field adds its flag.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields

import click
from click.core import ParameterSource
from segfactory.factory.commands.flags import SectionedHelp, option
from segfactory.factory.commands.options import json_option, parse_size_option, quiet_option, version
from segfactory.search.limits import Limits
from segfactory.search.options import (
    GROUPS,
    MAX_BUDGET,
    RUN,
    SearchOptions,
    cli_default,
    declared,
    without_effect,
)

LIMIT_FIELDS = tuple(f.name for f in fields(Limits))  # search pick's flags: SearchOptions' declarations of them
EXPLICIT = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)  # what the user asked for


class SearchGroup(SectionedHelp, click.Group):
    """``segfactory search``: its options in SearchOptions' sections, then ``pick``."""

    sections = GROUPS


def search_options(f=None, *, exclude: tuple[str, ...] = (), only: tuple[str, ...] | None = None):
    """One click option per SearchOptions field (but ``exclude``; or just ``only``), and one per ``proxy`` entry
    with its own flag.

    Usable bare (``@search_options``) or with arguments (``@search_options(exclude=("out",))``: segfactory build).
    """
    if f is None:
        return lambda g: search_options(g, exclude=exclude, only=only)
    options = []
    for fld, opt in declared():
        if fld.name in exclude or (only is not None and fld.name not in only):
            continue
        for part in opt.parts:
            options.append(option(part.flag, part.dest, type=part.type, default=None, help=part.help,
                                  callback=parse_size_option if part.size else None, group=opt.group))
        kw = {"group": opt.group, "help": opt.help, "type": opt.type}
        if opt.flag_value is not None:
            kw["is_flag"] = True
        elif opt.multiple:
            kw.update(multiple=True, metavar=opt.metavar)
        else:
            default = cli_default(fld)
            kw.update(default=default, show_default=default is not None,
                      callback=parse_size_option if opt.size else None)
        options.append(option(opt.flag, *opt.aliases, fld.name, **kw))
    for decorate in reversed(options):
        f = decorate(f)
    return f


def options_from_cli(ctx: click.Context, kw: dict, exclude: tuple[str, ...] = ()) -> tuple[SearchOptions, set[str]]:
    """SearchOptions from the parsed flags (taking them out of ``kw``), and the fields the user gave; fields in
    ``exclude`` (not on this command line) keep their defaults."""
    values, given = {}, set()
    for fld, opt in declared():
        if fld.name in exclude:
            continue
        value = kw.pop(fld.name)
        explicit = ctx.get_parameter_source(fld.name) in EXPLICIT
        if opt.read is not None:
            value = opt.read(value)
        elif opt.flag_value is not None:
            value = opt.flag_value if value else not opt.flag_value
        if opt.parts:
            parts = {p.key: kw.pop(p.dest) for p in opt.parts}
            explicit = explicit or any(ctx.get_parameter_source(p.dest) in EXPLICIT for p in opt.parts)
            value = {**value, **{k: v for k, v in parts.items() if v is not None}}
        values[fld.name] = value
        if explicit:
            given.add(fld.name)
    options = SearchOptions(**values)
    for line in without_effect(options, given):
        click.echo(f"Warning: {line}", err=True)
    return options, given


@click.group(cls=SearchGroup, invoke_without_command=True)
@search_options
@option("--resume", is_flag=True, help="Continue the interrupted search in --out.", group=RUN)
@json_option
@quiet_option
@version
@click.pass_context
def search(ctx: click.Context, **kw) -> None:
    """Search for a decoder (PPO, random, evolution). `segfactory search pick DIR` picks from a search."""
    if ctx.invoked_subcommand is not None:
        return
    from segfactory.search.loop import run_search

    as_json, quiet, resume = kw.pop("as_json"), kw.pop("quiet"), kw.pop("resume")
    if kw["out"] is None:
        if resume:
            raise click.UsageError("--resume needs --out DIR (the search to continue)")
        kw["out"] = f"runs/search-{time.strftime('%Y%m%d-%H%M%S')}"
    _check_executor_flags(kw)
    options, given = options_from_cli(ctx, kw)
    if options.max_minutes is not None and "budget" not in given:
        options.budget = MAX_BUDGET  # --minutes alone bounds the search (as build's --search-minutes does)
    if options.strategy == "list" and not options.genotypes and not resume:
        raise click.UsageError("--strategy list needs --genotypes FILE")
    view = None if (quiet or as_json) else LiveView()
    try:
        summary = run_search(options, resume=resume, on_event=view.event if view else None, given=given)
    finally:
        if view:
            view.close()
    if as_json:
        click.echo(json.dumps(summary))
    elif not quiet:
        best = summary["best"]
        if summary.get("stopped"):
            click.echo(f"stopped early: {summary['stopped']}", err=True)
        click.echo(_time_line(summary["time"]), err=True)
        rungs = summary.get("rungs")
        click.echo(f"{summary['trained']} candidates trained in {summary['out']}"
                   + (f" (per rung: {', '.join(f'{k} {v}' for k, v in rungs.items())})" if rungs else "") + "; best: "
                   + (f"trial {best['index']} reward {best['reward']:.4f} score {best['score']:.4f} "
                      f"{best['latency_ms']:.2f} ms -> {summary['out']}/best.json" if best else "none"), err=True)


@search.command("pick")
@click.argument("run_dir", type=click.Path(file_okay=False))
@search_options(only=LIMIT_FIELDS)
@option("--out", default=None, help="Write the pick as a best.json here.")
@json_option
@version
def pick_cmd(run_dir: str, out: str | None, as_json: bool, **limits) -> None:
    """The best candidate of search RUN_DIR under your limits, as a best.json."""
    from segfactory.search.pick import pick

    best = pick(run_dir, Limits(**limits), out=out, on_warning=lambda line: click.echo(f"Warning: {line}", err=True))
    if as_json or out is None:
        click.echo(json.dumps(best, indent=None if as_json else 2))
    else:
        t = best["trial"]
        click.echo(f"trial {t['index']} ({t['key']}): reward {t['reward']:.4f}, score {t['score']:.4f}, "
                   f"{t['latency_ms']:.2f} ms, {t['params']:,} params -> {out}")


def _time_line(times: dict) -> str:
    """One line of where the wall time went (summary.md has the table)."""
    from segfactory.search.report import TIME_LABELS

    total = times.get("elapsed_s") or 1.0
    parts = sorted(((v, k) for k, v in times.items() if k in TIME_LABELS and v), reverse=True)
    return f"time: {total / 60:.1f} min: " + ", ".join(f"{TIME_LABELS[k]} {100 * v / total:.0f}%" for v, k in parts)


def _check_executor_flags(kw: dict) -> None:
    """The Ray flags mean nothing to the local executor: say so rather than ignore them."""
    if kw["executor"] == "local":
        given = [f"--{k.replace('_', '-')}" for k in ("ray_address", "workers", "gpus_per_trial")
                 if kw[k] is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)}: only with --executor ray")


class LiveView:
    """A rich live view on stderr: candidates done, best so far, time per candidate, estimated time left."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"), console=Console(stderr=True), transient=False,
        )
        self.task = None
        self.progress.start()
        self.status = ""

    def event(self, e: dict) -> None:
        kind = e["kind"]
        if self.task is None:
            self.task = self.progress.add_task("search", total=e.get("budget") or 1, info="")
        if kind == "status":
            self.progress.update(self.task, info=e["message"])
        elif kind == "start":
            self.progress.update(self.task, total=e["budget"], completed=e["trained"], info="")
        elif kind == "candidate":
            self.progress.update(self.task, info=f"training #{e['index']} {e['key']}")
        elif kind == "trial":
            t, best = e["trial"], e.get("best")
            eta = e.get("eta_s")
            info = (f"last #{t['index']} {t['status']} {_num(t.get('score'))} in {_num(t.get('wall_s'), '.0f')} s"
                    f" | best #{best['index']} reward {best['reward']:.4f} ({best['latency_ms']:.1f} ms)"
                    if best else f"last #{t['index']} {t['status']}")
            if eta is not None:
                info += f" | ~{eta / 60:.1f} min left"
            self.progress.update(self.task, completed=e["trained"], info=info)

    def close(self) -> None:
        self.progress.stop()


def _num(v, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)
