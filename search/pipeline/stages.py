"""The build's first stages: search, pick (with the deployed configuration), train.

Each stage function takes the :class:`~segfactory.search.pipeline.state.BuildState` and a progress callback, does its
work resumably (the search and every training resume where a kill left them) and returns the JSON result that
``build.json`` records for it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError, RunError
from segfactory.search.limits import LATENCY, Limits
from segfactory.search.pipeline.options import REFERENCE_MODELS, BuildOptions
from segfactory.search.pipeline.state import BuildState

Progress = Any  # callable(event dict)


def search_dir(state: BuildState) -> Path:
    o = state.options
    return Path(o.from_search).resolve() if o.from_search else state.out / "search"


def stage_search(state: BuildState, progress: Progress) -> dict[str, Any]:
    """Run (or resume) the search into DIR/search; with --from-search, check the finished one and use it."""
    from segfactory.search.loop import run_search

    o = state.options
    if o.from_search:  # checked before the build began (search.pipeline.checks)
        return {"dir": str(search_dir(state)), "from_search": True}
    d = search_dir(state)
    options = replace(o.search, out=str(d), max_minutes=o.search_minutes)
    resume = (d / "run.json").is_file()
    summary = run_search(options, resume=resume, on_event=progress, given=set() if resume else None)
    return {"dir": str(d), "from_search": False, "trained": summary["trained"], "counts": summary["counts"],
            "seconds_per_candidate": summary["seconds_per_candidate"], "stopped": summary.get("stopped"),
            "rungs": summary.get("rungs")}


def stage_pick(state: BuildState, progress: Progress) -> dict[str, Any]:
    """The best status-ok candidate under the limits, and its deployed configuration (agg size, sep repeats):
    the highest-capacity configuration of the build's set whose latency, measured beside arch0, stays within
    the limit (the searched one is always measured)."""
    from segfactory.factory.genotype import Genotype
    from segfactory.factory.io import atomic_write_json, read_json
    from segfactory.search.results import best_json
    from segfactory.search.trials import best_trial, load_trials

    o, d = state.options, search_dir(state)
    run = read_json(d / "run.json", "search run file")
    trials, _ = load_trials(d / "trials.jsonl")
    limits = Limits.of(o.search)
    best = best_trial(trials, limits)
    if best is None:
        ok = [t for t in trials if t.get("status") == "ok"]
        fastest = min((t.get("latency_ratio") or float("inf") for t in ok), default=None)
        raise InputError(f"no candidate of the search meets {limits.describe()}: {len(ok)} trained ok"
                         + (f", the fastest at {fastest:.2f} x arch0" if fastest not in (None, float("inf")) else "")
                         + "; loosen the limit or search longer")
    genotype = Genotype.from_dict(best["genotype"])
    progress({"kind": "status", "message": f"measuring trial {best['index']} in {len(o.deploy_configs)} deployed "
                                           "configurations"})
    configs = _measure_configs(state, run, genotype)
    searched = (run["deploy_config"]["agg_size"], run["deploy_config"]["sep_repeats"])
    fitting = [c for c in configs if c["fits"]]
    chosen = fitting[0] if fitting else next(c for c in configs if (c["agg_size"], c["sep_repeats"]) == searched)
    pick = best_json(run, best)
    pick["model_config"].update(agg_size=chosen["agg_size"], sep_repeats=chosen["sep_repeats"])
    pick.update(deploy_configs=configs, chosen_config=[chosen["agg_size"], chosen["sep_repeats"]],
                searched_config=list(searched), limit=limits.describe(LATENCY))
    atomic_write_json(state.out / "pick.json", pick)
    return {"trial": best["index"], "key": best["key"], "score": best["score"], "reward": best["reward"],
            "latency_ms": chosen["latency_ms"], "latency_ratio": chosen["ratio"], "latency_source": chosen["source"],
            "config": [chosen["agg_size"], chosen["sep_repeats"]], "file": "pick.json"}


def _measure_configs(state: BuildState, run: dict[str, Any], genotype) -> list[dict[str, Any]]:
    """The pick's latency in every deployed configuration of the build's set (the searched one included), in
    order of capacity, each as a ratio to arch0 in the search's configuration measured beside it."""
    from segfactory.benchmarks.targets import get_target
    from segfactory.factory.config import ModelConfig
    from segfactory.factory.zoo import ZOO
    from segfactory.search.context import reference_config

    o = state.options
    s = o.search
    deploy = ModelConfig.from_dict(run["deploy_config"])
    size = tuple(run["input_size"])
    target = get_target(s.target, lut=s.lut, device_url=s.device_url, device_token_file=s.device_token_file,
                        threads=s.latency_threads)
    ref_ms = run["reference"]["latency_ms"]
    if hasattr(target, "set_reference") and run["reference"].get("latency_source") == "measured":
        target.set_reference(ZOO["arch0"], reference_config(deploy), size, ref_ms)
    searched = (deploy.agg_size, deploy.sep_repeats)
    out = []
    for agg, sep in dict.fromkeys([*map(tuple, o.deploy_configs), searched]):
        lat = target.latency(genotype, deploy.with_(agg_size=agg, sep_repeats=sep), size)
        ratio = lat.detail.get("ratio", lat.ms / ref_ms if ref_ms else None)
        out.append({"agg_size": agg, "sep_repeats": sep, "latency_ms": lat.ms, "ratio": ratio,
                    "source": lat.source, "fits": Limits.of(s).admits(
                        {"latency_ms": lat.ms, "latency_ratio": ratio}, keys=LATENCY)})
    return out


def training_jobs(state: BuildState) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, arch, model settings) of every model the build trains: the pick, then the baselines (but those
    reused from ``--baselines-from``)."""
    from segfactory.factory.io import read_json

    pick = state.out / "pick.json"
    cfg = read_json(pick, "pick file")["model_config"]
    jobs = [("model", str(pick), {"agg_size": cfg["agg_size"], "sep_repeats": cfg["sep_repeats"],
                                  "encoder_weights": cfg["encoder_weights"]})]
    if state.options.baselines and not state.options.baselines_from:
        jobs += baseline_jobs(state.options)
    return jobs


def baseline_jobs(o: BuildOptions) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, arch, model settings) of the baselines: arch0 as released, LR-ASPP from scratch."""
    from segfactory.factory.config import RELEASED

    return [(name, name, {"agg_size": RELEASED.agg_size, "sep_repeats": RELEASED.sep_repeats,
                          "encoder_weights": "none" if name not in ("arch0", "arch1") else o.search.encoder_weights})
            for name in REFERENCE_MODELS]


def train_config(o: BuildOptions, arch: str, model: dict[str, Any], recipe: str, device: str = "cpu"):
    """The :class:`TrainConfig` of one training of the build (same data, budget, seed and settings for all)."""
    from segfactory.factory.training import TrainConfig

    val_every = o.val_every if o.val_every is not None else (2 if o.train_minutes else 1)
    return TrainConfig(arch=arch, data=o.search.data, recipe=recipe, epochs=o.epochs, minutes=o.train_minutes,
                       seed=o.search.seed, val_every=val_every, threads=o.train_threads, workers=o.workers,
                       device=device, **model, **o.train_set)


def stage_train(state: BuildState, progress: Progress) -> dict[str, Any]:
    """Every model with every recipe (same data, minutes or epochs, seed); each keeps its better recipe on val.
    Baselines of ``--baselines-from`` are copied from that build, not trained (search.pipeline.reuse)."""
    from segfactory.factory.training import train
    from segfactory.search.pipeline.reuse import reuse_trainings

    o = state.options
    results: dict[str, Any] = {}
    jobs = [(name, arch, model, recipe) for name, arch, model in training_jobs(state) for recipe in o.recipes]
    for i, (name, arch, model, recipe) in enumerate(jobs):
        run = state.out / "train" / name / recipe
        cfg = train_config(o, arch, model, recipe, _device(o))
        progress({"kind": "train-start", "name": name, "recipe": recipe, "job": i, "jobs": len(jobs)})
        doc = train(cfg, run, resume=(run / "last.pt").is_file(), progress=False,
                    on_event=lambda e, n=name, r=recipe: progress({**e, "name": n, "recipe": r}))
        results.setdefault(name, {})[recipe] = {
            "dir": str(run.relative_to(state.out)), "final": doc["final"], "epochs": doc["epochs_done"],
            "elapsed_s": doc["elapsed_s"], "best_epoch": doc["best_epoch"]}
    for name, by_recipe in results.items():
        chosen = max(by_recipe, key=lambda r: by_recipe[r]["final"]["miou"])
        by_recipe["chosen"] = chosen
        by_recipe["checkpoint"] = f"{by_recipe[chosen]['dir']}/model.pt"
    if o.baselines_from:
        results.update(reuse_trainings(state, progress))
    return results


def _device(o) -> str:
    from segfactory.factory.commands.options import resolve_device

    return resolve_device(o.search.device)


def check_trained(result: dict[str, Any]) -> None:
    for name, by_recipe in result.items():
        if not isinstance(by_recipe, dict) or "chosen" not in by_recipe:
            raise RunError(f"training of {name} did not finish")
