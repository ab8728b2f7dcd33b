"""What ``segfactory search`` takes, declared once: each field of :class:`SearchOptions` carries its flag.

Every field's metadata holds an :class:`Opt`: the command-line flag, its help, click type and --help section,
and what a resumed search may do with it. ``search/cli.py`` builds the click options from these declarations,
so a new field is a new flag, with the same default in the library and on the command line.

A resumed search keeps the settings it was started with, so its rewards stay comparable:
:func:`segfactory.search.resume_rules.resume_options` refuses a change of a ``FIXED`` field that the user asked for, and takes ``RUNTIME`` fields (how the work is
done, not what it computes) from the new run.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import click
from segfactory.benchmarks.agent.options import DEVICE_TOKEN_FILE, DEVICE_URL
from segfactory.benchmarks.targets import DEFAULT_TARGET
from segfactory.factory.commands.options import DEVICE_CHOICES, ENCODER_WEIGHTS_HELP
from segfactory.factory.commands.types import FLOAT, NON_NEGATIVE, POSITIVE, Float, Names
from segfactory.factory.config import LIMITS, RELEASED, SEARCH_PROXY
from segfactory.factory.errors import InputError
from segfactory.search.reward import LATENCY_FORMS
from segfactory.search.rungs import PROMOTE_DEFAULT


def _strategy_names() -> list[str]:  # imported when the flag is parsed or its help shown
    from segfactory.search.strategies import AUTO, STRATEGIES

    return [AUTO, *STRATEGIES.names()]


def _strategy_help() -> str:
    from segfactory.search.strategies import AUTO, AUTO_HELP, STRATEGIES

    return ("How candidates are proposed: " + "; ".join(f"{n}: {STRATEGIES.help(n)}" for n in STRATEGIES)
            + f"; {AUTO}: {AUTO_HELP}.")


def _preset_names() -> list[str]:
    from segfactory.search.presets import preset_names

    return preset_names()


def _preset_help() -> str:
    from segfactory.search.presets import preset_help

    return preset_help()


def _rungs_help() -> str:
    from segfactory.search.presets import PRESETS
    from segfactory.search.rungs import CPU_LADDER

    return (f"Successive halving over presets, cheapest first (of {', '.join(PRESETS.names())}): every candidate "
            "is trained at the first, the best again at the next ones (see --promote); off: one preset (--preset); "
            f"auto: {','.join(CPU_LADDER)} for a CPU search on a real dataset with --preset auto, else off.")


def _target_names() -> list[str]:
    from segfactory.benchmarks.targets import target_names

    return target_names()


def _target_help() -> str:
    from segfactory.benchmarks.targets import target_help

    return "Latency target: " + "; ".join(f"{n}: {h}" for n, h in target_help().items()) + "."

# What a resumed search does with a field
FIXED = "fixed"  # changes the results: a change is refused
RUNTIME = "runtime"  # how the work is done (budget, threads, executor): the new run's value is used
RUN_DIR = "run-dir"  # --out names the run itself

# --help sections, in display order
RUN, DATA, MODELS, REWARD, STRATEGY, PROXY, EXECUTOR = (
    "Run", "Data and latency target", "Models", "Reward and limits", "Strategy", "Proxy training", "Executor")
GROUPS = (RUN, DATA, MODELS, REWARD, STRATEGY, PROXY, EXECUTOR)

_SAME = object()  # Opt.cli_default: the field's own default
PG_ALGORITHMS = ("ppo", "reinforce")  # the controller's update rules (search.ppo), the paper's first
CONTROLLER_PROFILES = ("paper", "reachable")  # PPO's settings (search.ppo.PROFILES)

# Opt.applies: modes in which a flag has an effect
WITH_RATIO = (lambda o: o.max_latency_ratio is not None, "only with --max-latency-ratio")
AUTO_STRATEGY = "auto"  # not a strategy: search.strategies.resolve_strategy picks one by device and preset
# --strategy auto is resolved with the device (search.context), which warns then about the flags it leaves unused
PPO = (lambda o: o.strategy in ("ppo", AUTO_STRATEGY), "only with --strategy ppo")
EVOLUTION = (lambda o: o.strategy in ("evolution", AUTO_STRATEGY), "only with --strategy evolution")
LIST = (lambda o: o.strategy == "list", "only with --strategy list")
WITH_RUNGS = (lambda o: o.rungs != "off", "only with --rungs")


@dataclass(frozen=True)
class ProxyFlag:
    """A flag that sets one entry of the ``proxy`` dict (a ProxySettings override)."""

    flag: str
    key: str  # ProxySettings field
    type: Any = None
    help: str = ""
    size: bool = False  # HxW on the command line

    @property
    def dest(self) -> str:  # click's parameter name; never a SearchOptions field
        return f"proxy__{self.key}"


@dataclass(frozen=True)
class Opt:
    """The command-line side of one SearchOptions field."""

    flag: str
    help: str | Callable[[], str] | None = None  # a callable: help derived from a registry when shown
    type: Any = None  # a click type; None: click's guess from the default (TEXT for None)
    group: str = RUN
    resume: str = FIXED
    cli_default: Any = _SAME  # the flag's default where it differs from the field's
    flag_value: bool | None = None  # an on/off flag: the field's value when the flag is given
    size: bool = False  # HxW on the command line, (H, W) in the field
    read: Callable[[Any], Any] | None = None  # the flag's value -> the field's (--genotypes FILE -> a list)
    show: Callable[[Any], str] | None = None  # the field's value as the command line writes it
    multiple: bool = False
    metavar: str | None = None
    aliases: tuple[str, ...] = ()  # other spellings of the flag
    parts: tuple[ProxyFlag, ...] = ()  # flags that set entries of this (dict) field
    # where the flag has an effect: (does it, given the options; in which mode); given elsewhere it is warned about
    applies: tuple[Callable[[Any], bool], str] | None = None


def opt(default: Any = None, **meta: Any) -> Any:
    """A dataclass field with an immutable default and its :class:`Opt` in the metadata."""
    return field(default=default, metadata={"opt": Opt(**meta)})


def read_genotype_list(path: str | None) -> list[dict]:
    """One architecture per line: a zoo name or a genotype JSON object; blank lines and # comments skipped."""
    if path is None:
        return []
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


MAX_BUDGET = 10_000_000  # the largest --budget: a search bounded by its minutes alone uses it


def parse_proxy_set(items: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs -> ProxySettings overrides (values as JSON, or HxW for sizes)."""
    from segfactory.factory.commands.options import parse_settings
    from segfactory.search.presets import ProxySettings

    parsed = parse_settings(items, {f.name for f in fields(ProxySettings)}, "--proxy-set")
    ProxySettings().with_(**parsed)  # each value's type and range, now rather than after the search has begun
    return parsed


def _show_genotypes(genotypes: list[dict]) -> str:
    from segfactory.factory.genotype import Genotype

    return f"a list of {len(genotypes)} ({', '.join(Genotype.from_dict(g).key() for g in genotypes)})"


def size_text(value: Any) -> str:
    return f"{value[0]}x{value[1]}"


_PRESETS = "[default: the preset's]"
PROXY_FLAGS = (
    ProxyFlag("--time-limit", "time_limit_s", POSITIVE,
              "Seconds per candidate [default: the preset's]."),
    ProxyFlag("--max-proxy-macs", "max_proxy_macs", click.IntRange(min=1),
              "Reject candidates whose proxy needs more multiply-adds per crop [default: the preset's]."),
    ProxyFlag("--crop", "crop", None, "Proxy crop HxW [default: the preset's].", size=True),
    ProxyFlag("--stage1-epochs", "stage1_epochs", click.IntRange(min=0), _PRESETS),
    ProxyFlag("--stage2-epochs", "stage2_epochs", click.IntRange(min=0), _PRESETS),
    ProxyFlag("--cache-size", "cache_size", click.IntRange(min=1), "Stage-1 cached crops [default: the preset's]."),
    ProxyFlag("--loader-workers", "workers", click.IntRange(min=0),
              "Stage-2 loader processes [default: the preset's]."),
)


@dataclass
class SearchOptions:
    """Everything ``segfactory search`` takes; each field's flag and help are in its metadata."""

    out: str = opt("", flag="--out", cli_default=None, resume=RUN_DIR,
                   help="Run directory [default: runs/search-<timestamp>].")
    data: str = opt("camvid-mini", flag="--data", group=DATA,
                    help="Dataset: camvid-mini, camvid:PATH, cityscapes:PATH or folder:PATH (its train split is "
                         "used).")
    target: str = opt(DEFAULT_TARGET, flag="--target", type=Names(_target_names), group=DATA, help=_target_help)
    lut: str | None = opt(None, flag="--lut", group=DATA,
                          help="Latency lookup table (from `segfactory profile`) for the target.")
    device_url: str | None = opt(None, **DEVICE_URL.meta("Device agent URL for a jetson-* target."), group=DATA)
    device_token_file: str | None = opt(None, **DEVICE_TOKEN_FILE.meta(), group=DATA)
    latency_threads: int | None = opt(None, flag="--latency-threads", type=click.IntRange(1, 256), group=DATA,
                                      help="Threads of the cpu target's latency measurement [default: 1].")
    budget: int = opt(8, flag="--budget", type=click.IntRange(1, MAX_BUDGET), resume=RUNTIME,
                      help="Candidates to train (ok, early-stopped or failed; rejected ones do not count).")
    strategy: str = opt("auto", flag="--strategy", type=Names(_strategy_names), group=STRATEGY,
                        help=_strategy_help)
    preset: str = opt("auto", flag="--preset", type=Names(_preset_names), group=PROXY, help=_preset_help)
    rungs: str = opt("auto", flag="--rungs", group=PROXY, help=_rungs_help)
    promote: float = opt(PROMOTE_DEFAULT, flag="--promote", type=Float(min=0, max=1, min_open=True, max_open=True),
                         group=PROXY, applies=WITH_RUNGS,
                         help="With rungs: the top fraction of a rung's candidates trained again at the next "
                              "(ASHA's 1/eta; 1/8 spends about equal time on cpu-small and cpu-full).")
    seed: int = opt(0, flag="--seed", type=int)
    device: str = opt("auto", flag="--device", type=click.Choice(DEVICE_CHOICES),
                      help="Where proxies train (CUDA: mixed precision).")
    threads: int | None = opt(None, flag="--threads", type=click.IntRange(1, 256), resume=RUNTIME,
                              help="Torch threads for proxy training.")
    # the deployed model: the reward's latency, params and MACs are its
    input_size: tuple[int, int] | None = opt(
        None, flag="--input-size", size=True, show=size_text, group=MODELS,
        help="Deployment input size HxW for latency and MACs [default: the dataset's size].")
    agg_size: int = opt(RELEASED.agg_size, flag="--agg-size", type=click.IntRange(*LIMITS["agg_size"]),
                        group=MODELS, help="Deployed model's head width (the reward's latency and params use it).")
    sep_repeats: int = opt(RELEASED.sep_repeats, flag="--sep-repeats", type=click.IntRange(*LIMITS["sep_repeats"]),
                           group=MODELS, help="Deployed model's separable units per sep op.")
    # the proxy model (the paper's search configuration)
    proxy_agg_size: int = opt(SEARCH_PROXY.agg_size, flag="--proxy-agg-size",
                              type=click.IntRange(*LIMITS["agg_size"]), group=MODELS,
                              help=f"Proxy model's head width (the paper's search: {SEARCH_PROXY.agg_size}).")
    proxy_sep_repeats: int = opt(SEARCH_PROXY.sep_repeats, flag="--proxy-sep-repeats",
                                 type=click.IntRange(*LIMITS["sep_repeats"]), group=MODELS,
                                 help="Proxy model's separable units per sep op (the paper's search: "
                                      f"{SEARCH_PROXY.sep_repeats}).")
    encoder_weights: str = opt(RELEASED.encoder_weights, flag="--encoder-weights", group=MODELS,
                               help=ENCODER_WEIGHTS_HELP)
    latency_target_ms: float | None = opt(None, flag="--latency-target-ms", type=POSITIVE, group=REWARD,
                                          help="Latency target T of the reward [default: arch0's latency on the "
                                               "target].")
    latency_target_ratio: float | None = opt(None, flag="--latency-target-ratio", type=POSITIVE, group=REWARD,
                                             help="Or T as a multiple of arch0's latency on the target.")
    latency_form: str = opt(LATENCY_FORMS[0], flag="--latency-reward", type=click.Choice(LATENCY_FORMS),
                            group=REWARD,
                            help="Latency term: mnas, score x (latency/T)^w (MnasNet: ever faster is better); "
                                 "absolute, score + w x |latency/T - 1| (TuNAS: best at T itself).")
    latency_weight: float = opt(-0.07, flag="--latency-weight", type=FLOAT, group=REWARD,
                                help="w of the latency term (negative); 0 drops the term.")
    params_target: float | None = opt(None, flag="--params-target", type=POSITIVE, group=REWARD,
                                      help="Parameter target P of the reward [default: arch0's parameters].")
    params_weight: float = opt(0.0, flag="--params-weight", type=FLOAT, group=REWARD,
                               help="Exponent of (params/P); both weights 0 give the paper's reward.")
    max_params: int | None = opt(None, flag="--max-params", type=click.IntRange(min=1), group=REWARD,
                                 help="Reject larger candidates.")
    max_macs: int | None = opt(None, flag="--max-macs", type=click.IntRange(min=1), group=REWARD,
                               help="Reject candidates with more multiply-adds (deployed model at --input-size).")
    max_latency_ms: float | None = opt(None, flag="--max-latency-ms", type=POSITIVE, group=REWARD,
                                       help="Reject slower candidates (before training).")
    max_latency_ratio: float | None = opt(None, flag="--max-latency-ratio", type=POSITIVE, group=REWARD,
                                          help="Reject candidates slower than R x arch0 (on the cpu target measured "
                                               "beside it in the same rounds, so the limit holds in any host "
                                               "state; elsewhere the ratio of the two latencies).")
    max_rejections: int = opt(500, flag="--max-rejections", type=click.IntRange(min=1), group=REWARD,
                              help="Consecutive rejections that stop the search (a rejection costs well under a "
                                   "second; under a tight limit only about 1 proposal in 50 is feasible).")
    latency_screen: float | None = opt(1.3, flag="--latency-screen", type=Float(min=1), group=REWARD,
                                       applies=WITH_RATIO,
                                       help="With --max-latency-ratio: a candidate whose latency ratio predicted from "
                                            "its multiply-adds (a line fitted to the candidates measured so far) "
                                            "exceeds the limit by this factor is rejected untimed; the rest are "
                                            "timed, or, with this host's lookup table (`segfactory profile`), "
                                            "timed only within x1.05 of the limit and else rejected or accepted "
                                            "from the table.")
    failure_reward: float | None = opt(0.0, flag="--failure-reward", type=FLOAT, group=REWARD,
                                       help="Reward the strategy is told for a failed (error, NaN, out of memory, "
                                            "time limit) or rejected candidate, so it learns to avoid them.")
    max_repeats: int = opt(50, flag="--max-repeats", type=click.IntRange(min=1), group=REWARD,
                           help="Consecutive proposals of genotypes already trained (not retrained, not counted "
                                "in --budget) that stop a search whose strategy has converged.")
    early_stopping: bool = opt(True, flag="--no-early-stopping", flag_value=False, group=PROXY,
                               help="Train every candidate to the end of its schedule.")
    feedback: bool = opt(False, flag="--action-feedback", flag_value=True, group=STRATEGY, applies=PPO,
                         help="PPO controller feeds sampled actions back (ENAS style).")
    pg_algorithm: str = opt("ppo", flag="--pg", type=click.Choice(PG_ALGORITHMS), group=STRATEGY,
                            applies=PPO,
                            help="Controller update rule.")
    controller: str | None = opt(None, flag="--controller", type=click.Choice(CONTROLLER_PROFILES), group=STRATEGY,
                                 applies=PPO,
                                 help="PPO's settings: paper (lr 1e-4, every sample over a sliding buffer of 100: "
                                      "made for thousands of candidates), or reachable (lr 3e-3, updates of 4 "
                                      "epochs every 20 samples: learns within a few hundred) [default: paper for "
                                      "the paper preset, else reachable].")
    controller_lr: float | None = opt(None, flag="--controller-lr", type=POSITIVE, group=STRATEGY, applies=PPO,
                                      help="Override the profile's learning rate.")
    entropy_coef: float | None = opt(None, flag="--entropy-coef", type=NON_NEGATIVE, group=STRATEGY, applies=PPO,
                                     help="Override the profile's entropy bonus (both profiles: 0).")
    population: int = opt(20, flag="--population", type=click.IntRange(min=1), group=STRATEGY, applies=EVOLUTION,
                          help="Evolution: population size.")
    tournament: int = opt(5, flag="--tournament", type=click.IntRange(min=1), group=STRATEGY, applies=EVOLUTION,
                          help="Evolution: tournament sample size, and the random members drawn before the first "
                               "tournament.")
    # overrides of the preset's ProxySettings: --time-limit, --crop, ... and --proxy-set KEY=VALUE
    proxy: dict[str, Any] = field(default_factory=dict, metadata={"opt": Opt(
        flag="--proxy-set", multiple=True, metavar="KEY=VALUE", read=parse_proxy_set, parts=PROXY_FLAGS,
        group=PROXY,
        help="Any other proxy-training setting, e.g. stage1_lr=0.007, stage2_batch=16, val_fraction=0.1 "
             "(repeatable; see segfactory.search.presets.ProxySettings).")})
    executor: str = opt("local", flag="--executor", type=click.Choice(["local", "ray"]), group=EXECUTOR,
                        resume=RUNTIME,
                        help="Where candidates train: one at a time in this process, or in parallel on Ray (the "
                             "ray extra).")
    ray_address: str | None = opt(None, flag="--ray-address", group=EXECUTOR, resume=RUNTIME,
                                  help="Ray cluster to use: auto (the one this machine belongs to) or "
                                       "ray://HOST:PORT [default: start a local Ray].")
    workers: int | None = opt(None, flag="--workers", type=click.IntRange(min=1), group=EXECUTOR, resume=RUNTIME,
                              help="Candidates trained at once (--executor ray) [default: 2].")
    gpus_per_trial: float | None = opt(
        None, flag="--gpus-per-trial", type=NON_NEGATIVE, group=EXECUTOR, resume=RUNTIME,
        help="GPUs per candidate on Ray (fractions share a GPU) [default: 1 if the search runs on CUDA, else 0].")
    cpus_per_trial: float = opt(1.0, flag="--cpus-per-trial", type=POSITIVE, group=EXECUTOR, resume=RUNTIME,
                                help="CPUs per candidate on Ray (also its torch threads).")
    max_minutes: float | None = opt(None, flag="--minutes", aliases=("--max-minutes",), type=POSITIVE,
                                    resume=RUNTIME,
                                    help="Wall-time budget counted over every resumed part of the search: no new "
                                         "candidate starts after it (--max-minutes, its old per-process name, is an "
                                         "alias).")
    verify_every: int | None = opt(None, flag="--verify-every", type=click.IntRange(min=1), group=DATA,
                                   resume=RUNTIME,
                                   help="jetson-* with --lut and --device-url: also measure every Nth predicted "
                                        "candidate whole on the device and log the prediction's error.")
    genotypes: list[dict[str, Any]] = field(default_factory=list, metadata={"opt": Opt(
        flag="--genotypes", read=read_genotype_list, show=_show_genotypes, group=STRATEGY, applies=LIST,
        help="--strategy list: a file with one architecture per line (zoo name or genotype JSON).")})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.input_size is not None:
            d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchOptions:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "controller_lr" in d and "controller" not in d:  # a run from before the profiles: the paper's PPO
            d["controller"] = "paper"
        d.setdefault("rungs", "off")  # a run from before rungs had none
        if d.get("input_size") is not None:
            d["input_size"] = tuple(d["input_size"])
        return cls(**d)


def declared() -> list[tuple[Field, Opt]]:
    """SearchOptions' fields with their :class:`Opt`, in declaration order."""
    return [(f, f.metadata["opt"]) for f in fields(SearchOptions)]


def cli_default(f: Field) -> Any:
    """The default of ``f``'s flag: the field's own, unless the flag is read into the field or declares another."""
    o = f.metadata["opt"]
    if o.read is not None or o.flag_value is not None:
        return None
    return f.default if o.cli_default is _SAME else o.cli_default


def without_effect(options: SearchOptions, given: Collection[str]) -> list[str]:
    """One line for each flag the user gave that has no effect in the mode ``options`` chose."""
    return [f"{o.flag} has no effect: it applies {o.applies[1]}" for f, o in declared()
            if f.name in given and o.applies is not None and not o.applies[0](options)]
