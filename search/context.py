"""What a search run resolves once: devices, preset, data, model configurations, target, reward; ``run.json``.

A resumed run reads its settings back from run.json, so its rewards stay comparable; only the runtime knobs
(see :mod:`segfactory.search.options`) may change, and a change of anything else is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError
from segfactory.search.options import SearchOptions
from segfactory.search.resume_rules import resume_options
from segfactory.search.reward import RewardSpec
from segfactory.search.strategies import AUTO, make_strategy, resolve_strategy

RUN_FORMAT = "segfactory.search-run/1"

Event = Callable[[dict[str, Any]], None]


def emit(on_event: Event | None, kind: str, **data: Any) -> None:
    if on_event is not None:
        on_event({"kind": kind, **data})


@dataclass
class RunContext:
    options: SearchOptions
    out: Path
    device: str
    preset: str
    settings: Any  # ProxySettings
    dataset: Any
    deploy_config: Any  # ModelConfig
    proxy_config: Any
    input_size: tuple[int, int]
    target: Any
    reward_spec: RewardSpec
    reference: dict[str, Any]  # arch0 in the deployed configuration: latency_ms, source, params, macs
    proxy_data: Any = None  # rung 0's
    rungs: tuple = ()  # search.rungs.Rung, cheapest first; () without rungs
    strategy: str = ""  # the strategy run: --strategy, resolved (auto -> evolution on a CPU)

    def run_json(self) -> dict[str, Any]:
        return {
            "format": RUN_FORMAT,
            "options": self.options.to_dict(),
            "device": self.device,
            "preset": self.preset,
            "proxy_settings": self.settings.to_dict(),
            "deploy_config": self.deploy_config.to_dict(),
            "proxy_config": self.proxy_config.to_dict(),
            "input_size": list(self.input_size),
            "target": self.target.describe(),
            "reward": self.reward_spec.to_dict(),
            "reference": self.reference,
            "rungs": [r.to_dict() for r in self.rungs],
            "strategy": self.strategy,
        }


RUN_KEYS = ("options", "device", "preset", "proxy_settings", "deploy_config", "proxy_config", "input_size",
            "reward", "reference")  # what a resume reads back from run.json


def run_strategy(run: dict[str, Any]) -> str | None:
    """The strategy a search ran (run.json's, resolved; a run from before ``auto`` has it in its options only)."""
    return run.get("strategy") or run.get("options", {}).get("strategy")


def _read_out(out: Path, resume: bool) -> dict[str, Any] | None:
    """run.json of the search to resume, or None for a new one (whose --out must be absent or empty); writes
    nothing, so that a refused run leaves --out as it was."""
    from segfactory.factory.io import check_writable, read_json

    check_writable(out, "--out", folder=True)
    if resume:
        if not (out / "run.json").is_file():
            raise InputError(f"--resume: {out} holds no search to resume (no run.json)")
        run = read_json(out / "run.json", "search run file")
        if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
            raise InputError(f"{out / 'run.json'} is not a {RUN_FORMAT} file")
        missing = [k for k in RUN_KEYS if k not in run or (k == "options" and not isinstance(run[k], dict))]
        if missing:
            raise InputError(f"{out / 'run.json'} is damaged: it lacks {', '.join(missing)}; start a new search "
                             "with another --out")
        return run
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} is not an empty directory: pass --resume to continue the search there, "
                         f"or choose another --out")
    return None


def make_context(options: SearchOptions, resume: bool, on_event: Event | None = None,
                 given: Collection[str] | None = None, check_only: bool = False) -> RunContext | None:
    """Resolve devices, preset, data, configs, target and reward; write (or read back) run.json.

    Every option is checked before ``--out`` is created or anything measured; ``check_only`` stops there (the
    build checks its search's options before it creates its own folder) and returns None.

    Args:
        options: this run's options.
        resume: continue the search in ``options.out``.
        on_event: progress callback.
        given: the option fields the user set explicitly (None: all); on resume, a change of one of them that
            changes the results is refused.

    Raises:
        InputError: bad options, or a resume that asks for different settings.
    """
    import torch
    from segfactory.benchmarks.targets import get_target
    from segfactory.factory.commands.options import resolve_device
    from segfactory.factory.datasets import open_dataset
    from segfactory.factory.io import atomic_write_json
    from segfactory.search.presets import ProxySettings, resolve_preset
    from segfactory.search.rungs import Rung, resolve_rungs

    out = Path(options.out)
    run = _read_out(out, resume)
    if run is not None:  # a resumed run keeps its settings; only the runtime knobs may change
        options = resume_options(SearchOptions.from_dict(run["options"]), options, given, out,
                                 run["proxy_settings"])
    if options.budget < 1:
        raise InputError(f"--budget {options.budget} must be at least 1")
    if options.latency_target_ms is not None and options.latency_target_ratio is not None:
        raise InputError("give --latency-target-ms or --latency-target-ratio, not both")
    device = run["device"] if run is not None else resolve_device(options.device)
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("this search ran on CUDA, but no CUDA device is available to resume it")
    strategy = run_strategy(run) if run is not None else _resolve_strategy(options, device, given, on_event)
    make_strategy(strategy, options.seed, genotypes=options.genotypes)  # validates early
    emit(on_event, "status", message=f"opening {options.data}")
    dataset = open_dataset(options.data, "train")
    if run is not None:
        preset, settings = run["preset"], ProxySettings.from_dict(run["proxy_settings"])
        rungs = tuple(Rung.from_dict(r) for r in run.get("rungs") or [])
    else:
        rungs = resolve_rungs(options.rungs, options.preset, device, len(dataset), options.proxy)
        if rungs:
            preset, settings = rungs[0].name, rungs[0].settings
        else:
            preset, settings = resolve_preset(options.preset, device, len(dataset))
            settings = settings.with_(**options.proxy) if options.proxy else settings
    deploy, proxy, input_size = _model_configs(options, run, dataset)
    for s in [settings, *(r.settings for r in rungs[1:])]:
        check_proxy_memory(s, proxy, device)
    target = get_target(options.target, lut=options.lut, device_url=options.device_url,
                        device_token_file=options.device_token_file, threads=options.latency_threads,
                        verify_every=options.verify_every)
    if check_only:
        return None
    # everything is valid: only now is --out created and the work begun
    out.mkdir(parents=True, exist_ok=True)
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    reference, reward_spec = _reward(options, run, target, deploy, input_size, on_event)
    ctx = RunContext(options, out, device, preset, settings, dataset, deploy, proxy, input_size, target,
                     reward_spec, reference, rungs=rungs, strategy=strategy)
    if run is None:
        atomic_write_json(out / "run.json", ctx.run_json())
    else:  # keep the budget the user asked for now
        run["options"]["budget"] = options.budget
        atomic_write_json(out / "run.json", run)
    return ctx


def _resolve_strategy(options: SearchOptions, device: str, given: Collection[str] | None,
                      on_event: Event | None) -> str:
    """--strategy resolved (:func:`resolve_strategy`); with ``auto``, a warning for each flag given for the strategy
    it did not pick (the command line could not tell before the device was known)."""
    from dataclasses import replace

    import click
    from segfactory.search.options import without_effect

    strategy = resolve_strategy(options.strategy, device, options.preset)
    if options.strategy == AUTO:
        emit(on_event, "status", message=f"strategy auto: {strategy} on {device}")
        for line in without_effect(replace(options, strategy=strategy), given or ()):
            click.echo(f"Warning: {line} (--strategy auto chose {strategy} on {device})", err=True)
    return strategy


def proxy_training_bytes(genotype: Any, proxy_config: Any, settings: Any) -> int:
    """Estimated peak bytes of proxy-training ``genotype`` (stage 2: batches of crops, end to end)."""
    from segfactory.factory.cost import model_cost
    from segfactory.factory.memory import FLOAT_BYTES, training_bytes_from

    cost = model_cost(genotype, proxy_config, settings.crop)
    return training_bytes_from(cost.total("activation_bytes"), cost.params * FLOAT_BYTES, settings.crop,
                               settings.stage2_batch, settings.workers)


def proxy_memory_reasons(genotype: Any, ctx: RunContext) -> list[str]:
    """Why ``genotype``'s proxy training would exceed the memory bound (rejected, not run out of memory)."""
    from segfactory.factory.memory import LIMIT_FRACTION, device_memory_bytes, gib

    need = proxy_training_bytes(genotype, ctx.proxy_config, ctx.settings)
    limit = int(device_memory_bytes(ctx.device) * LIMIT_FRACTION)
    return [f"proxy training needs an estimated {gib(need)} > the memory bound {gib(limit)}"] if need > limit else []


def check_proxy_memory(settings: Any, proxy_config: Any, device: str) -> None:
    """Refuse proxy settings whose stage-1 cache plus arch0's stage-2 batches exceed the memory bound."""
    from segfactory.factory.memory import check_fits
    from segfactory.factory.zoo import ZOO

    h, w = settings.crop
    # stage-1 cache per crop: E0 (24 ch, /4) and E1 (32 ch, /8) float32, labels at E0's size int64
    per_crop = 24 * (h // 4) * (w // 4) * 4 + 32 * (h // 8) * (w // 8) * 4 + (h // 4) * (w // 4) * 8
    need = settings.cache_size * per_crop + proxy_training_bytes(ZOO["arch0"], proxy_config, settings)
    check_fits(need, device, f"proxy training with {h}x{w} crops (batch {settings.stage2_batch}, a stage-1 cache "
               f"of {settings.cache_size})", "lower the preset's crop, stage2_batch or cache_size")


def _measure_beside(target: Any, arch0: Any, deploy: Any, input_size: tuple[int, int],
                    reference: dict[str, Any]) -> None:
    """A target that measures on this host times every candidate beside arch0 from now on (CpuTarget), so that
    ``latency_ms`` = (candidate / arch0 in the same rounds) x arch0's latency measured at the start."""
    if hasattr(target, "set_reference") and reference.get("latency_source") == "measured":
        target.set_reference(arch0, deploy, input_size, reference["latency_ms"])


def _model_configs(options: SearchOptions, run: dict[str, Any] | None, dataset: Any) -> tuple[Any, Any, tuple]:
    """(deployed ModelConfig, proxy ModelConfig, deployment input size): from run.json, or made now."""
    from segfactory.factory.config import ModelConfig

    if run is not None:
        return (ModelConfig.from_dict(run["deploy_config"]), ModelConfig.from_dict(run["proxy_config"]),
                tuple(run["input_size"]))
    deploy = ModelConfig.create(dataset.num_classes, options.agg_size, options.sep_repeats,
                                options.encoder_weights, tuple(dataset.class_names))
    proxy = deploy.with_(agg_size=options.proxy_agg_size, sep_repeats=options.proxy_sep_repeats)
    input_size = tuple(options.input_size) if options.input_size else tuple(dataset[0][0].shape[:2])
    return deploy, proxy, input_size


def reference_config(deploy: Any) -> Any:
    """arch0 as the paper released it (agg 64, sep_repeats 2), with the deployed model's classes and encoder: the
    reference of every latency ratio and the default targets, whatever the deployed configuration searched."""
    from segfactory.factory.config import RELEASED

    return deploy.with_(agg_size=RELEASED.agg_size, sep_repeats=RELEASED.sep_repeats)


def _reward(options: SearchOptions, run: dict[str, Any] | None, target: Any, deploy: Any,
            input_size: tuple[int, int], on_event: Event | None) -> tuple[dict[str, Any], RewardSpec]:
    """(arch0's figures, the reward's spec): from run.json, or measured now."""
    from segfactory.factory.cost import model_cost
    from segfactory.factory.zoo import ZOO

    arch0, config = ZOO["arch0"], reference_config(deploy)
    if run is not None:
        _measure_beside(target, arch0, config, input_size, run["reference"])
        return run["reference"], RewardSpec(**run["reward"])
    cost = model_cost(arch0, config, input_size)
    reference = {"arch": "arch0", "model_config": config.to_dict(), "params": cost.params, "macs": cost.macs}
    # Recorded always; the default latency target when --latency-target-ms is not given
    emit(on_event, "status", message=f"measuring arch0's latency on {options.target}")
    lat = target.latency(arch0, config, input_size)
    reference.update(latency_ms=lat.ms, latency_source=lat.source)
    _measure_beside(target, arch0, config, input_size, reference)
    if lat.detail.get("device_info"):  # measured by a device agent: what it ran on
        reference["latency_device"] = lat.detail["device_info"]
    target_ms = options.latency_target_ms
    if target_ms is None and reference.get("latency_ms") is not None:
        target_ms = (options.latency_target_ratio or 1.0) * reference["latency_ms"]
    reward_spec = RewardSpec(
        latency_target_ms=target_ms,
        latency_weight=options.latency_weight,
        latency_form=options.latency_form,
        params_target=options.params_target or float(cost.params),
        params_weight=options.params_weight,
    )
    return reference, reward_spec
