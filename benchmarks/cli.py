"""``segfactory bench`` and ``segfactory profile``: thin commands over benchmarks.bench and benchmarks.lut.profile."""

from __future__ import annotations

import json

import click
from segfactory.benchmarks.agent.options import device_agent_options
from segfactory.benchmarks.models import DEFAULT_BACKEND, TRTEXEC, bench_backend_help, bench_backends
from segfactory.benchmarks.targets import DEFAULT_TARGET, target_help, target_names
from segfactory.export.api import PRECISIONS
from segfactory.factory.commands.flags import option
from segfactory.factory.commands.options import (
    DEVICES,
    MODEL_CONFIG_PARAMS,
    config_from_options,
    explicit,
    input_size_option,
    json_option,
    model_config_options,
    quiet_option,
    version,
)
from segfactory.factory.commands.types import NON_NEGATIVE, Names
from segfactory.factory.memory import BOUNDS_HELP
from segfactory.factory.reference import REFERENCES
from segfactory.factory.zoo import ZOO


# The help texts below read the registries when shown, so that a name registered later is listed too
def _named(names, help_of) -> str:
    return "; ".join(f"{name}: {help_of(name)}" for name in names)


@click.command()
@click.argument("models", nargs=-1)
@option("--arch", "archs", multiple=True, help=lambda: f"A zoo name ({', '.join(ZOO)}); repeatable.")
@option("--checkpoint", "checkpoints", multiple=True, help="A model.pt; repeatable.")
@model_config_options
@option("--backend", type=Names(bench_backends), default=DEFAULT_BACKEND, show_default=True,
        help=lambda: _named(bench_backends(), bench_backend_help) + ".")
@input_size_option()
@option("--batch", type=click.IntRange(1, 1024), default=1, show_default=True,
              help=f"Images per inference. {BOUNDS_HELP}")
@option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads (ort: intra-op, inter-op 1; torch: set_num_threads). Default: 1 for ort.")
@option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Engine precision for trt/trtexec (default fp16); ort/torch run the graph as it is.")
@option("--device", type=click.Choice(DEVICES), default=DEVICES[0], show_default=True,
              help="Where the torch backend runs.")
@option("--reference", is_flag=True, help=lambda: f"Add the reference models: {_named(REFERENCES, REFERENCES.help)}.")
@option("--rounds", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Interleaved rounds (each in a shuffled model order).")
@option("--min-seconds", type=NON_NEGATIVE, default=3.0, show_default=True,
              help="At least this much timed work per model (trtexec --duration).")
@option("--warmup-ms", type=NON_NEGATIVE, default=200.0, show_default=True,
              help="Warm-up per model, by time (trtexec --warmUp).")
@device_agent_options("Measure on a device agent (segfactory agent serve) at this URL, with its backend, one model "
                      "after another (--backend, --threads, --rounds do not apply).")
@json_option
@quiet_option
@version
def bench(models, archs, checkpoints, num_classes, agg_size, sep_repeats, encoder_weights, backend, input_size,
          batch, threads, precision, device, reference, rounds, min_seconds, warmup_ms, device_url, device_token_file,
          as_json, quiet) -> None:
    """Measure latency the way trtexec does: MODEL.onnx | MODEL.engine | GENOTYPE.json, --arch, --checkpoint.

    Several models are measured interleaved, round by round, and shown side by side with ratios to the first.
    """
    from segfactory.benchmarks.bench import bench_json, render, resolve_specs, run_bench

    config = config_from_options(num_classes, agg_size, sep_repeats, encoder_weights)
    specs = resolve_specs(models, archs, checkpoints, config, reference)
    if precision is None:
        precision = "fp16" if backend in ("trt", TRTEXEC) or device_url else "fp32"
    if device_url:
        from segfactory.benchmarks.agent.remote_bench import bench_remote

        results = bench_remote(specs, device_url=device_url, token_file=device_token_file, input_size=input_size,
                               batch=batch, precision=precision, warmup_ms=warmup_ms, min_seconds=min_seconds)
    else:
        results = run_bench(specs, backend=backend, input_size=input_size, batch=batch, threads=threads,
                            precision=precision, device=device, rounds=rounds, min_seconds=min_seconds,
                            warmup_ms=warmup_ms, progress=not quiet and not as_json)
    if as_json:
        click.echo(json.dumps(bench_json(results)))
    else:
        render(results)


# profile's parameters that only profiling uses: given with --check, they are refused rather than ignored
NOT_FOR_CHECK = ("target", "input_size", "threads", "out", "fit_models", "select_models", "seed", "minutes", "runs",
                 "precision")


@click.command()
@option("--target", type=Names(target_names), default=DEFAULT_TARGET, show_default=True,
        help=lambda: f"Latency target: {_named(target_names(), target_help().get)}.")
@input_size_option()
@option("--threads", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="ONNX Runtime intra-op threads the table is measured (and valid) for.")
@option("--out", type=click.Path(dir_okay=False), default=None,
              help="lut.json to write; an existing compatible one is resumed [default for this host's cpu "
                   "target: this host's table in $SEGFACTORY_CACHE/lut (~/.cache/segfactory/lut), which a search "
                   "with --max-latency-ratio uses to screen candidates before timing them].")
@option("--check", "check", type=click.Path(dir_okay=False), default=None,
              help="Instead of profiling: measure the --eval-seeds genotypes whole, predict them from this lut.json "
                   "and print the share within +-10%, MAPE and Kendall tau (its own settings and configuration).")
@option("--eval-seeds", default=None, metavar="A-B",
              help="With --check: seeds of the genotypes to check [default: the table's evaluation range, 0-39].")
@model_config_options
@option("--fit-models", type=click.IntRange(0, 1000), default=24, show_default=True,
              help="Random genotypes (a seed range disjoint from evaluation seeds) measured whole to fit the "
                   "predictor.")
@option("--select-models", type=click.IntRange(0, 1000), default=16, show_default=True,
              help="Random genotypes (another disjoint seed range) measured whole to choose the predictor's form.")
@option("--min-seconds", type=NON_NEGATIVE, default=2.0, show_default=True,
              help="Timed seconds per genotype measured whole on this host (fitting, selection, --check).")
@option("--seed", type=int, default=0, show_default=True)
@option("--minutes", type=NON_NEGATIVE, default=None, help="Stop measuring after this long (resume later).")
@option("--runs", type=click.IntRange(3, 1000), default=15, show_default=True,
              help="Profiled runs per bag of units (with --device-url: at least 50 iterations per unit).")
@device_agent_options("Profile a jetson-* target on its device agent (segfactory agent serve): each unit is "
                      "exported here and measured there.")
@option("--precision", type=click.Choice(PRECISIONS), default="fp16", show_default=True,
              help="Engine precision on the device agent (with --device-url).")
@json_option
@quiet_option
@version
def profile(target, input_size, threads, out, check, eval_seeds, num_classes, agg_size, sep_repeats, encoder_weights,
            fit_models, select_models, min_seconds, seed, minutes, runs, device_url, device_token_file, precision,
            as_json, quiet) -> None:
    """Measure a latency lookup table (lut.json) of every unit the search space can produce at --input-size."""
    from segfactory.benchmarks.lut.profile import run_profile

    config = config_from_options(num_classes, agg_size, sep_repeats, encoder_weights)
    log = (lambda m: None) if quiet else None
    if check is not None:
        from segfactory.benchmarks.lut.check import check_table, render_check
        from segfactory.benchmarks.lut.protocol import parse_seeds

        ctx = click.get_current_context()
        ignored = [p.opts[0] for p in ctx.command.params if p.name in NOT_FOR_CHECK and explicit(ctx, p.name)]
        if ignored:
            raise click.UsageError(f"{', '.join(ignored)}: not used by --check, which measures at the table's own "
                                   "target, input size, threads and precision; drop them")
        given = any(explicit(ctx, p) for p in MODEL_CONFIG_PARAMS)
        result = check_table(check, seeds=parse_seeds(eval_seeds) if eval_seeds else None,
                             config=config if given else None, min_seconds=min_seconds, device_url=device_url,
                             token_file=device_token_file, log=log)
        click.echo(json.dumps(result) if as_json else render_check(result))
        return
    if out is None:
        from segfactory.benchmarks.targets import TARGETS

        if not TARGETS[target].profiled_here or device_url is not None:
            raise click.UsageError("--out is required for a table measured elsewhere (or --check LUT to check one)")
        from segfactory.benchmarks.lut.cache import host_table_path

        out = str(host_table_path(input_size, threads, config))  # where a search on this host finds it
    summary = run_profile(target, config, input_size, out, threads=threads, fit_models=fit_models,
                          select_models=select_models, seed=seed, minutes=minutes, runs=runs, min_seconds=min_seconds,
                          progress=not quiet and not as_json, log=log, device_url=device_url,
                          device_token_file=device_token_file, precision=precision)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"{summary['out']}: {summary['units_total']} units "
                   f"({'complete' if summary['complete'] else 'incomplete: run again to resume'}), "
                   f"overhead {summary['overhead'] and {k: summary['overhead'][k] for k in ('intercept_ms', 'scale')}}")
