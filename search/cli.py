"""``segfactory search [options]`` runs a search; ``segfactory search pick DIR`` picks from one."""

from __future__ import annotations

import json
import time

import click
from segfactory.factory.commands.options import (
    input_size_option,
    json_option,
    parse_size_option,
    quiet_option,
    version,
)

STRATEGY_CHOICES = ["ppo", "random", "evolution", "list"]
PRESET_CHOICES = ["auto", "paper", "cpu-small", "test"]


@click.group(invoke_without_command=True)
@click.option("--data", default="camvid-mini", show_default=True,
              help="Dataset: camvid-mini, camvid:PATH, cityscapes:PATH or folder:PATH (its train split is used).")
@click.option("--target", default="cpu", show_default=True,
              help="Latency target: cpu, cuda, jetson-orin-nano, jetson-orin-nx, jetson-agx-orin.")
@click.option("--lut", default=None, help="Latency lookup table (from `segfactory profile`) for the target.")
@click.option("--device-url", default=None, help="Device agent URL for a jetson-* target.")
@click.option("--device-token-file", default=None, help="File holding the device agent's token.")
@click.option("--latency-threads", type=click.IntRange(1, 256), default=None,
              help="Threads of the cpu target's latency measurement [default: 1].")
@click.option("--budget", type=click.IntRange(1, 10_000_000), default=8, show_default=True,
              help="Candidates to train (ok, early-stopped or failed; rejected ones do not count).")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Start no new candidate after this many minutes (the run can be resumed later).")
@click.option("--out", default=None, help="Run directory [default: runs/search-<timestamp>].")
@click.option("--strategy", type=click.Choice(STRATEGY_CHOICES), default="ppo", show_default=True)
@click.option("--preset", type=click.Choice(PRESET_CHOICES), default="auto", show_default=True,
              help="Proxy-training schedule: paper (method.md), cpu-small, test (tiny); auto = paper on CUDA, "
                   "else cpu-small.")
@click.option("--genotypes", "genotypes_file", default=None,
              help="--strategy list: a file with one architecture per line (zoo name or genotype JSON).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the interrupted search in --out.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where proxies train (CUDA: mixed precision).")
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Torch threads for proxy training.")
@input_size_option(None, help="Deployment input size HxW for latency and MACs [default: the dataset's size].")
@click.option("--agg-size", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Deployed model's head width (the reward's latency and params use it).")
@click.option("--sep-repeats", type=click.IntRange(1, 8), default=2, show_default=True,
              help="Deployed model's separable units per sep op.")
@click.option("--proxy-agg-size", type=click.IntRange(1, 4096), default=48, show_default=True,
              help="Proxy model's head width (the paper's search: 48).")
@click.option("--proxy-sep-repeats", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Proxy model's separable units per sep op (the paper's search: 1).")
@click.option("--encoder-weights", default="bundled", show_default=True,
              help="bundled | torchvision | none | PATH to a segfactory encoder file.")
@click.option("--latency-target-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Latency target T of the reward [default: arch0's latency on the target].")
@click.option("--latency-weight", type=float, default=-0.07, show_default=True,
              help="Exponent w of (latency/T)^w; 0 drops the term.")
@click.option("--params-target", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Parameter target P of the reward [default: arch0's parameters].")
@click.option("--params-weight", type=float, default=0.0, show_default=True,
              help="Exponent of (params/P); both weights 0 give the paper's reward.")
@click.option("--max-params", type=click.IntRange(min=1), default=None, help="Reject larger candidates.")
@click.option("--max-macs", type=click.IntRange(min=1), default=None,
              help="Reject candidates with more multiply-adds (deployed model at --input-size).")
@click.option("--max-latency-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Reject slower candidates (before training).")
@click.option("--max-rejections", type=click.IntRange(min=1), default=100, show_default=True,
              help="Consecutive rejections that stop the search.")
@click.option("--no-early-stopping", is_flag=True, help="Train every candidate to the end of its schedule.")
@click.option("--action-feedback", is_flag=True, help="PPO controller feeds sampled actions back (ENAS style).")
@click.option("--pg", "pg_algorithm", type=click.Choice(["ppo", "reinforce"]), default="ppo", show_default=True,
              help="Controller update rule.")
@click.option("--controller-lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True)
@click.option("--entropy-coef", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Entropy bonus of the controller update (the paper: 0).")
@click.option("--population", type=click.IntRange(min=1), default=20, show_default=True,
              help="Evolution: population size.")
@click.option("--tournament", type=click.IntRange(min=1), default=5, show_default=True,
              help="Evolution: tournament sample size.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds per candidate [default: the preset's].")
@click.option("--max-proxy-macs", type=click.IntRange(min=1), default=None,
              help="Reject candidates whose proxy needs more multiply-adds per crop [default: the preset's].")
@click.option("--crop", callback=parse_size_option, default=None, help="Proxy crop HxW [default: the preset's].")
@click.option("--stage1-epochs", type=click.IntRange(min=0), default=None, help="[default: the preset's]")
@click.option("--stage2-epochs", type=click.IntRange(min=0), default=None, help="[default: the preset's]")
@click.option("--cache-size", type=click.IntRange(min=1), default=None,
              help="Stage-1 cached crops [default: the preset's].")
@click.option("--loader-workers", "loader_workers", type=click.IntRange(min=0), default=None,
              help="Stage-2 loader processes [default: the preset's].")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where candidates train: one at a time in this process, or in parallel on Ray (the ray extra).")
@click.option("--ray-address", default=None,
              help="Ray cluster to use: auto (the one this machine belongs to) or ray://HOST:PORT "
                   "[default: start a local Ray].")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Candidates trained at once (--executor ray) [default: 2].")
@click.option("--gpus-per-trial", type=click.FloatRange(min=0), default=None,
              help="GPUs per candidate on Ray (fractions share a GPU) [default: 1 if the search runs on CUDA, else 0].")
@click.option("--cpus-per-trial", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="CPUs per candidate on Ray (also its torch threads).")
@click.option("--proxy-set", "proxy_set", multiple=True, metavar="KEY=VALUE",
              help="Any other proxy-training setting, e.g. stage1_lr=0.007, stage2_batch=16, val_fraction=0.1 "
                   "(repeatable; see segfactory.search.presets.ProxySettings).")
@json_option
@quiet_option
@version
@click.pass_context
def search(ctx: click.Context, **kw) -> None:
    """Search for a decoder (PPO, random, evolution). `segfactory search pick DIR` picks from a search."""
    if ctx.invoked_subcommand is not None:
        return
    from segfactory.search.loop import SearchOptions, run_search

    as_json, quiet, resume = kw.pop("as_json"), kw.pop("quiet"), kw.pop("resume")
    if kw["out"] is None:
        if resume:
            raise click.UsageError("--resume needs --out DIR (the search to continue)")
        kw["out"] = f"runs/search-{time.strftime('%Y%m%d-%H%M%S')}"
    proxy = {"time_limit_s": kw.pop("time_limit"), "max_proxy_macs": kw.pop("max_proxy_macs"),
             "crop": kw.pop("crop"), "stage1_epochs": kw.pop("stage1_epochs"),
             "stage2_epochs": kw.pop("stage2_epochs"), "cache_size": kw.pop("cache_size"),
             "workers": kw.pop("loader_workers")}
    _check_executor_flags(kw)
    kw["proxy"] = {**parse_proxy_set(kw.pop("proxy_set")), **{k: v for k, v in proxy.items() if v is not None}}
    kw["early_stopping"] = not kw.pop("no_early_stopping")
    kw["feedback"] = kw.pop("action_feedback")
    kw["genotypes"] = read_genotype_list(kw.pop("genotypes_file"))
    if kw["strategy"] == "list" and not kw["genotypes"] and not resume:
        raise click.UsageError("--strategy list needs --genotypes FILE")
    options = SearchOptions(**kw)
    view = None if (quiet or as_json) else LiveView()
    try:
        summary = run_search(options, resume=resume, on_event=view.event if view else None)
    finally:
        if view:
            view.close()
    if as_json:
        click.echo(json.dumps(summary))
    elif not quiet:
        best = summary["best"]
        click.echo(f"{summary['trained']} candidates trained in {summary['out']}; best: "
                   + (f"trial {best['index']} reward {best['reward']:.4f} score {best['score']:.4f} "
                      f"{best['latency_ms']:.2f} ms -> {summary['out']}/best.json" if best else "none"), err=True)


@search.command("pick")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--max-latency-ms", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--max-params", type=click.IntRange(min=1), default=None)
@click.option("--out", default=None, help="Write the pick as a best.json here.")
@json_option
@version
def pick_cmd(run_dir: str, max_latency_ms: float | None, max_params: int | None, out: str | None,
             as_json: bool) -> None:
    """The best candidate of search RUN_DIR under your limits, as a best.json."""
    from segfactory.search.pick import pick

    best = pick(run_dir, max_latency_ms=max_latency_ms, max_params=max_params, out=out)
    if as_json or out is None:
        click.echo(json.dumps(best, indent=None if as_json else 2))
    else:
        t = best["trial"]
        click.echo(f"trial {t['index']} ({t['key']}): reward {t['reward']:.4f}, score {t['score']:.4f}, "
                   f"{t['latency_ms']:.2f} ms, {t['params']:,} params -> {out}")


def _check_executor_flags(kw: dict) -> None:
    """The Ray flags mean nothing to the local executor: say so rather than ignore them."""
    if kw["executor"] == "local":
        given = [f"--{k.replace('_', '-')}" for k in ("ray_address", "workers", "gpus_per_trial")
                 if kw[k] is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)}: only with --executor ray")


def parse_proxy_set(items: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs -> ProxySettings overrides (values as JSON, or HxW for sizes)."""
    from dataclasses import fields

    from segfactory.search.presets import ProxySettings

    known = {f.name for f in fields(ProxySettings)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(known))}",
                                     param_hint="--proxy-set")
        if "x" in value and key == "crop":
            h, _, w = value.partition("x")
            out[key] = (int(h), int(w))
            continue
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            raise click.BadParameter(f"{item!r}: {value!r} is not a number, null or a JSON list",
                                     param_hint="--proxy-set") from None
    return out


def read_genotype_list(path: str | None) -> list[dict]:
    """One architecture per line: a zoo name or a genotype JSON object; blank lines and # comments skipped."""
    if path is None:
        return []
    from pathlib import Path

    from segfactory.factory.errors import InputError
    from segfactory.factory.genotype import Genotype
    from segfactory.factory.zoo import ZOO

    p = Path(path)
    if not p.is_file():
        raise InputError(f"genotype list {p} does not exist")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line in ZOO:
            out.append(ZOO[line].to_dict())
            continue
        try:
            out.append(Genotype.from_json(line).to_dict())
        except InputError as e:
            raise InputError(f"{p} line {n}: {e}") from None
    return out


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
