"""The search run: propose, check the deployed model's cost, proxy-train, reward, learn, record; resumable.

Files in the run directory:
- ``run.json``: the run's settings (resolved: preset, configs, input size, reward targets, arch0's latency);
  a resumed run reads them back, so its rewards stay comparable (only ``--budget`` may change);
- ``trials.jsonl``: one line per candidate (see :mod:`segfactory.search.trials`);
- ``state.pt``: the strategy, the early stopper and the proposals in flight, written atomically after each
  proposal and each trial, so ``kill -9`` loses at most the candidate in progress, which a resume re-runs with
  the same genotype and seed; ``controller.pt`` (PPO): the controller's weights alone;
- ``best.json``, ``pareto.png``, ``summary.md``: the results (rewritten at the end and when the best changes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError, RunError
from segfactory.factory.genotype import Genotype
from segfactory.search.early_stop import EarlyStopper
from segfactory.search.executors import CandidateJob, Executor, LocalExecutor
from segfactory.search.reward import RewardSpec, compute_reward
from segfactory.search.strategies import Proposal, StrategyExhausted, make_strategy
from segfactory.search.trials import TRAINED, TrialStore, best_trial, trained_count

RUN_FORMAT = "segfactory.search-run/1"
STATE_FORMAT = "segfactory.search-state/1"
BEST_FORMAT = "segfactory.search-best/1"
LEARN_FROM = ("ok", "early-stopped")  # statuses whose reward the strategy is told

Event = Callable[[dict[str, Any]], None]


@dataclass
class SearchOptions:
    """Everything ``segfactory search`` takes; see its ``--help`` for each field."""

    out: str = ""
    data: str = "camvid-mini"
    target: str = "cpu"
    lut: str | None = None
    device_url: str | None = None
    device_token_file: str | None = None
    latency_threads: int | None = None
    budget: int = 8
    strategy: str = "ppo"
    preset: str = "auto"
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch threads for proxy training
    input_size: tuple[int, int] | None = None  # deployment input size; None: the dataset's native size
    agg_size: int = 64  # deployed model
    sep_repeats: int = 2
    proxy_agg_size: int = 48  # proxy model (the paper's search configuration)
    proxy_sep_repeats: int = 1
    encoder_weights: str = "bundled"
    latency_target_ms: float | None = None  # None: arch0's latency on the same target and input size
    latency_weight: float = -0.07
    params_target: float | None = None  # None: arch0's parameters in the deployed configuration
    params_weight: float = 0.0
    max_params: int | None = None
    max_macs: int | None = None
    max_latency_ms: float | None = None
    max_rejections: int = 100  # consecutive rejections that stop the search
    early_stopping: bool = True
    feedback: bool = False  # PPO controller with action feedback (ENAS style)
    pg_algorithm: str = "ppo"  # ppo | reinforce
    controller_lr: float = 1e-4
    entropy_coef: float = 0.0
    population: int = 20  # evolution
    tournament: int = 5
    proxy: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's ProxySettings
    executor: str = "local"  # local | ray
    ray_address: str | None = None  # ray: None = a local Ray, "auto", ray://HOST:PORT
    workers: int | None = None  # ray: candidates in flight (default 2)
    gpus_per_trial: float | None = None  # ray: None = 1 on CUDA, else 0
    cpus_per_trial: float = 1.0  # ray: also each worker's torch threads
    max_minutes: float | None = None  # stop proposing after this much wall time in this process
    genotypes: list[dict[str, Any]] = field(default_factory=list)  # the list strategy's genotypes


    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.input_size is not None:
            d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchOptions:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if d.get("input_size") is not None:
            d["input_size"] = tuple(d["input_size"])
        return cls(**d)


# -- run context: what is resolved once per run ------------------------------------------------------------------

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
    proxy_data: Any = None

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
        }


def _emit(on_event: Event | None, kind: str, **data: Any) -> None:
    if on_event is not None:
        on_event({"kind": kind, **data})


def _prepare_out(out: Path, resume: bool) -> dict[str, Any] | None:
    from segfactory.factory.io import read_json

    if resume:
        if not (out / "run.json").is_file():
            raise InputError(f"--resume: {out} holds no search to resume (no run.json)")
        run = read_json(out / "run.json", "search run file")
        if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
            raise InputError(f"{out / 'run.json'} is not a {RUN_FORMAT} file")
        return run
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} is not an empty directory: pass --resume to continue the search there, "
                         f"or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return None


def make_context(options: SearchOptions, resume: bool, on_event: Event | None = None) -> RunContext:
    """Resolve devices, preset, data, configs, target and reward; write (or read back) run.json."""
    import torch
    from segfactory.benchmarks.targets import get_target
    from segfactory.factory.commands.options import resolve_device
    from segfactory.factory.config import ModelConfig
    from segfactory.factory.cost import model_cost
    from segfactory.factory.datasets import open_dataset
    from segfactory.factory.io import atomic_write_json
    from segfactory.factory.zoo import ZOO
    from segfactory.search.presets import ProxySettings, resolve_preset

    out = Path(options.out)
    run = _prepare_out(out, resume)
    if run is not None:  # a resumed run keeps its settings; only the budget (and runtime knobs) may change
        saved = SearchOptions.from_dict(run["options"])
        for name in ("budget", "threads", "executor", "max_minutes", "ray_address", "workers", "gpus_per_trial",
                     "cpus_per_trial"):
            setattr(saved, name, getattr(options, name))
        saved.out = options.out
        options = saved
    if options.budget < 1:
        raise InputError(f"--budget {options.budget} must be at least 1")
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    device = run["device"] if run is not None else resolve_device(options.device)
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("this search ran on CUDA, but no CUDA device is available to resume it")
    if run is not None:
        preset, settings = run["preset"], ProxySettings.from_dict(run["proxy_settings"])
    else:
        preset, settings = resolve_preset(options.preset, device)
        settings = settings.with_(**options.proxy) if options.proxy else settings
    make_strategy(options.strategy, options.seed, genotypes=options.genotypes)  # validates early
    _emit(on_event, "status", message=f"opening {options.data}")
    dataset = open_dataset(options.data, "train")
    if run is not None:
        deploy = ModelConfig.from_dict(run["deploy_config"])
        proxy = ModelConfig.from_dict(run["proxy_config"])
        input_size = tuple(run["input_size"])
    else:
        deploy = ModelConfig.create(dataset.num_classes, options.agg_size, options.sep_repeats,
                                    options.encoder_weights, tuple(dataset.class_names))
        proxy = deploy.with_(agg_size=options.proxy_agg_size, sep_repeats=options.proxy_sep_repeats)
        input_size = tuple(options.input_size) if options.input_size else tuple(dataset[0][0].shape[:2])
    target = get_target(options.target, lut=options.lut, device_url=options.device_url,
                        device_token_file=options.device_token_file, threads=options.latency_threads)
    if run is not None:
        reference = run["reference"]
        reward_spec = RewardSpec(**run["reward"])
    else:
        arch0 = ZOO["arch0"]
        cost = model_cost(arch0, deploy, input_size)
        reference = {"arch": "arch0", "params": cost.params, "macs": cost.macs}
        # Recorded always; the default latency target when --latency-target-ms is not given
        _emit(on_event, "status", message=f"measuring arch0's latency on {options.target}")
        lat = target.latency(arch0, deploy, input_size)
        reference.update(latency_ms=lat.ms, latency_source=lat.source)
        if lat.detail.get("device_info"):  # measured by a device agent: what it ran on
            reference["latency_device"] = lat.detail["device_info"]
        reward_spec = RewardSpec(
            latency_target_ms=options.latency_target_ms or reference.get("latency_ms"),
            latency_weight=options.latency_weight,
            params_target=options.params_target or float(cost.params),
            params_weight=options.params_weight,
        )
    ctx = RunContext(options, out, device, preset, settings, dataset, deploy, proxy, input_size, target,
                     reward_spec, reference)
    if run is None:
        atomic_write_json(out / "run.json", ctx.run_json())
    else:  # keep the budget the user asked for now
        run["options"]["budget"] = options.budget
        atomic_write_json(out / "run.json", run)
    return ctx


# -- state ----------------------------------------------------------------------------------------------------

def _save_state(out: Path, strategy, stopper: EarlyStopper, next_index: int, pending: dict[int, dict]) -> None:
    import torch
    from segfactory.factory.io import atomic_write

    state = {"format": STATE_FORMAT, "strategy": strategy.state_dict(), "stopper": stopper.state_dict(),
             "next_index": next_index, "pending": {str(k): v for k, v in pending.items()}}
    atomic_write(out / "state.pt", lambda p: torch.save(state, p))
    if getattr(strategy, "name", "") == "ppo":
        atomic_write(out / "controller.pt", lambda p: torch.save(
            {"format": "segfactory.controller/1", "feedback": strategy.controller.feedback,
             "state_dict": strategy.controller.state_dict()}, p))


def _load_state(out: Path) -> dict[str, Any] | None:
    import torch

    path = out / "state.pt"
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file
        raise InputError(f"{path} cannot be read ({str(e).splitlines()[0][:200]}); "
                         f"delete it to rebuild the state from trials.jsonl") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise InputError(f"{path} is not a {STATE_FORMAT} file")
    return state


def candidate_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index * 7_919 + 17) % (2**31 - 1)


# -- the loop -------------------------------------------------------------------------------------------------

class Search:
    """One search run; :meth:`run` executes it (see the module docstring)."""

    def __init__(self, ctx: RunContext, on_event: Event | None = None,
                 executor_factory: Callable[[Search], Executor] | None = None) -> None:
        o = ctx.options
        self.ctx = ctx
        self.on_event = on_event
        self.store = TrialStore(ctx.out / "trials.jsonl")
        self.strategy = make_strategy(o.strategy, o.seed, feedback=o.feedback, settings=self._pg_settings(),
                                      population=o.population, sample=o.tournament, genotypes=o.genotypes)
        self.stopper = EarlyStopper(1 + ctx.settings.stage2_epochs, seed=o.seed + 4242, enabled=o.early_stopping)
        self.next_index = 0
        self.pending: dict[int, dict[str, Any]] = {}  # index -> {"proposal": ..., "seed": ...}
        self.submitted: set[int] = set()  # pending indices handed to the executor (in flight)
        self.by_key: dict[str, dict[str, Any]] = {}  # genotype key -> first trained trial (reuse)
        self.latencies: dict[str, dict[str, Any]] = {}  # genotype key -> latency of the deployed model
        self.executor_factory = executor_factory or (lambda search: LocalExecutor(search.train_job))
        self.consecutive_rejections = 0
        self.started = time.monotonic()
        self.trained_times: list[float] = []

    def _pg_settings(self):
        from segfactory.search.ppo import PGSettings

        o = self.ctx.options
        return PGSettings(algorithm=o.pg_algorithm, lr=o.controller_lr, entropy_coef=o.entropy_coef)

    # -- resume ---------------------------------------------------------------------------------------------
    def restore(self) -> None:
        trials = self.store.open()
        if self.store.torn_bytes:
            _emit(self.on_event, "status", message=f"dropped a torn last line of trials.jsonl "
                                                    f"({self.store.torn_bytes} bytes)")
        for t in trials:
            self._index_trial(t)
        state = _load_state(self.ctx.out)
        done = {int(t["index"]): t for t in trials}
        if state is not None:
            self.strategy.load_state_dict(state["strategy"])
            self.stopper.load_state_dict(state["stopper"])
            self.next_index = int(state["next_index"])
            for k, v in state["pending"].items():
                index = int(k)
                if index in done:  # recorded, but the state was not saved after it: learn from it now
                    self._replay(Proposal.from_dict(v["proposal"]), done[index])
                else:
                    self.pending[index] = v
            late = [t for i, t in sorted(done.items()) if i >= self.next_index]
        else:
            late = [t for _, t in sorted(done.items())]
        for t in late:  # recorded after the last state save (or no state at all): replay proposal and tell
            p = self.strategy.propose()
            if p.genotype.key() != t["key"]:
                p = Proposal(Genotype.from_dict(t["genotype"]))
            self._replay(p, t)
            self.next_index = int(t["index"]) + 1
        if state is not None or late:
            self._save()

    def _index_trial(self, t: dict[str, Any]) -> None:
        if t.get("status") in LEARN_FROM and t["key"] not in self.by_key:
            self.by_key[t["key"]] = t
        if t.get("latency_ms") is not None:
            self.latencies.setdefault(t["key"], {"ms": t["latency_ms"], "source": t.get("latency_source")})
        if t.get("status") in TRAINED and t.get("wall_s"):
            self.trained_times.append(float(t["wall_s"]))

    def _replay(self, proposal: Proposal, trial: dict[str, Any]) -> None:
        """What recording ``trial`` did to the early stopper and the strategy, done again from the record."""
        for k, value in enumerate(trial.get("checkpoints") or []):
            self.stopper.should_continue(k, float(value))
        self._tell(proposal, trial)

    def _tell(self, proposal: Proposal, trial: dict[str, Any]) -> None:
        reward = trial.get("reward") if trial.get("status") in LEARN_FROM else None
        self.strategy.tell(proposal, reward)

    def _save(self) -> None:
        _save_state(self.ctx.out, self.strategy, self.stopper, self.next_index, self.pending)

    # -- one candidate ----------------------------------------------------------------------------------------
    def _next_job(self) -> CandidateJob:
        """A pending proposal not yet in flight (after a resume), else a new proposal (saved before use)."""
        waiting = sorted(set(self.pending) - self.submitted)
        if waiting:
            index = waiting[0]
            proposal = Proposal.from_dict(self.pending[index]["proposal"])
        else:
            index = self.next_index
            proposal = self.strategy.propose()
            self.next_index += 1
            self.pending[index] = {"proposal": proposal.to_dict(), "seed": candidate_seed(self.ctx.options.seed,
                                                                                          index)}
            self._save()
        return CandidateJob(index, proposal, self.pending[index]["seed"], started=time.monotonic(),
                            cpu_started=time.process_time())

    def precheck(self, job: CandidateJob) -> dict[str, Any] | None:
        """Cost and latency of the deployed model; returns a finished trial (rejected, failed, reused) or None."""
        from segfactory.factory.cost import model_cost

        ctx, o, g = self.ctx, self.ctx.options, job.proposal.genotype
        key = g.key()
        cost = model_cost(g, ctx.deploy_config, ctx.input_size)
        job.pre.update(params=cost.params, macs=cost.macs)
        reasons = []
        if o.max_params is not None and cost.params > o.max_params:
            reasons.append(f"params {cost.params:,} > --max-params {o.max_params:,}")
        if o.max_macs is not None and cost.macs > o.max_macs:
            reasons.append(f"MACs {cost.macs:,} > --max-macs {o.max_macs:,}")
        if not reasons and ctx.settings.max_proxy_macs is not None:
            proxy_macs = model_cost(g, ctx.proxy_config, ctx.settings.crop).macs
            if proxy_macs > ctx.settings.max_proxy_macs:
                reasons.append(f"proxy MACs {proxy_macs:,} at {ctx.settings.crop[0]}x{ctx.settings.crop[1]} > the "
                               f"preset's limit {ctx.settings.max_proxy_macs:,}")
        if reasons:
            return self._record(job, status="rejected", reason="; ".join(reasons))
        if key in self.by_key:  # the same genotype was trained before: its result stands
            prev = self.by_key[key]
            return self._record(job, status=prev["status"], reason=f"same genotype as trial {prev['index']}: "
                                f"result reused", reused=prev)
        # Latency is always recorded (the Pareto front needs it), even when its weight is 0.
        if key not in self.latencies:
            t = time.monotonic()
            try:
                lat = ctx.target.latency(g, ctx.deploy_config, ctx.input_size)
            except InputError:
                raise  # a bad target setting or lut: stop the search
            except Exception as e:  # noqa: BLE001 - this candidate cannot be exported or timed
                first = (str(e).strip().splitlines() or [""])[0][:300]
                return self._record(job, status="failed", reason=f"latency: {type(e).__name__}: {first}")
            self.latencies[key] = {"ms": lat.ms, "source": lat.source, "device": lat.detail.get("device_info")}
            job.pre["latency_s"] = round(time.monotonic() - t, 3)
        job.pre.update(latency_ms=self.latencies[key]["ms"], latency_source=self.latencies[key]["source"])
        if self.latencies[key].get("device"):
            job.pre["latency_device"] = self.latencies[key]["device"]  # the device agent's description
        if o.max_latency_ms is not None and job.pre["latency_ms"] > o.max_latency_ms:
            return self._record(job, status="rejected", reason=f"latency {job.pre['latency_ms']:.2f} ms > "
                                f"--max-latency-ms {o.max_latency_ms:g}")
        return None

    def train_job(self, job: CandidateJob):
        """Proxy-train ``job`` here (what :class:`LocalExecutor` calls)."""
        from segfactory.search.proxy import train_candidate

        return train_candidate(job.proposal.genotype, self.proxy_data(), seed=job.seed, device=self.ctx.device,
                               should_continue=self.stopper.should_continue)

    def proxy_data(self):
        if self.ctx.proxy_data is None:
            from segfactory.search.proxy import ProxyData

            _emit(self.on_event, "status", message="caching encoder features for stage 1")
            self.ctx.proxy_data = ProxyData.prepare(self.ctx.dataset, self.ctx.proxy_config, self.ctx.settings,
                                                    self.ctx.options.seed, self.ctx.device)
        return self.ctx.proxy_data

    def _record(self, job: CandidateJob, *, status: str, reason: str = "", result=None,
                reused: dict[str, Any] | None = None) -> dict[str, Any]:
        g = job.proposal.genotype
        rec: dict[str, Any] = {
            "index": job.index, "genotype": g.to_dict(), "key": g.key(),
            "miou": None, "macc": None, "fwiou": None, "score": None,
            "latency_ms": job.pre.get("latency_ms"), "latency_source": job.pre.get("latency_source"),
            "params": job.pre.get("params"), "macs": job.pre.get("macs"),
            "reward": None, "status": status, "reason": reason, "wall_s": None,
        }
        if reused is not None:
            for k in ("miou", "macc", "fwiou", "score", "reward", "latency_ms", "latency_source"):
                rec[k] = reused.get(k)
        if result is not None:
            rec.update(miou=result.miou, macc=result.macc, fwiou=result.fwiou, score=result.score)
            rec.update(checkpoints=result.checkpoints, stage1_s=round(result.stage1_s, 3),
                       stage2_s=round(result.stage2_s, 3), val_s=round(result.val_s, 3), steps=result.steps)
            if status in LEARN_FROM and result.score is not None:
                try:
                    rec["reward"] = compute_reward(result.score, rec["latency_ms"], rec["params"],
                                                   self.ctx.reward_spec)
                except InputError as e:
                    rec["status"], rec["reason"], rec["reward"] = "failed", f"reward: {e}", None
        rec["wall_s"] = round(time.monotonic() - job.started, 3)
        rec["cpu_s"] = round(time.process_time() - job.cpu_started, 3)  # this process's CPU time (all threads)
        if job.pre.get("latency_s") is not None:
            rec["latency_s"] = job.pre["latency_s"]
        if job.pre.get("latency_device"):
            rec["latency_device"] = job.pre["latency_device"]
        self.store.append(rec)
        self._index_trial(rec)
        self.pending.pop(job.index, None)
        self.submitted.discard(job.index)
        self._tell(job.proposal, rec)
        self._save()
        self.consecutive_rejections = self.consecutive_rejections + 1 if rec["status"] == "rejected" else 0
        best = best_trial(self.store.trials)
        if best is not None and best["index"] == rec["index"]:
            write_best(self.ctx, best)
        _emit(self.on_event, "trial", trial=rec, trained=trained_count(self.store.trials),
              budget=self.ctx.options.budget, best=best, eta_s=self.eta())
        return rec

    def _out_of_time(self) -> bool:
        m = self.ctx.options.max_minutes
        return m is not None and time.monotonic() - self.started > 60 * m

    def eta(self) -> float | None:
        left = self.ctx.options.budget - trained_count(self.store.trials)
        if not self.trained_times:
            return None
        return max(0, left) * sum(self.trained_times) / len(self.trained_times)

    # -- run ------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        o = self.ctx.options
        self.restore()
        executor = self.executor_factory(self)
        _emit(self.on_event, "start", trained=trained_count(self.store.trials), budget=o.budget)
        stopped = None
        try:
            while True:
                while (trained_count(self.store.trials) + executor.in_flight() < o.budget
                       and executor.in_flight() < executor.capacity and not self._out_of_time()):
                    try:
                        job = self._next_job()
                    except StrategyExhausted:
                        break
                    done = self.precheck(job)
                    if done is None:
                        _emit(self.on_event, "candidate", index=job.index, key=job.proposal.genotype.key())
                        self.submitted.add(job.index)
                        executor.submit(job)
                    elif self.consecutive_rejections >= o.max_rejections:
                        stopped = (f"{self.consecutive_rejections} consecutive candidates were rejected (last: "
                                   f"{done['reason']}); loosen the limits")
                        break
                if stopped or executor.in_flight() == 0:  # done, out of time, or nothing left to propose
                    break
                job, result = executor.wait()
                self._record(job, status=result.status, reason=result.reason, result=result)
        finally:
            executor.close()
        summary = finish(self.ctx, self.store.trials)
        if stopped:
            raise RunError(stopped)
        return summary


def run_search(options: SearchOptions, *, resume: bool = False, on_event: Event | None = None,
               executor_factory: Callable[[Search], Executor] | None = None) -> dict[str, Any]:
    """Run (or resume) a search; returns the summary (best trial, counts, files)."""
    ctx = make_context(options, resume, on_event)
    if executor_factory is None and ctx.options.executor == "ray":
        from segfactory.search.ray_executor import executor_factory_from_options  # imports ray when made

        executor_factory = executor_factory_from_options(ctx.options)
    return Search(ctx, on_event, executor_factory).run()


# -- results --------------------------------------------------------------------------------------------------

def best_json(ctx_or_run: Any, trial: dict[str, Any]) -> dict[str, Any]:
    """best.json: the genotype (loadable wherever a genotype is), the deployed ModelConfig and the trial."""
    run = ctx_or_run.run_json() if isinstance(ctx_or_run, RunContext) else ctx_or_run
    return {
        "format": BEST_FORMAT,
        "genotype": trial["genotype"],
        "model_config": run["deploy_config"],
        "input_size": run["input_size"],
        "target": run["target"],
        "reward": run["reward"],
        "trial": trial,
    }


def write_best(ctx_or_run: Any, trial: dict[str, Any], path: Path | None = None) -> Path:
    from segfactory.factory.io import atomic_write_json

    if path is None:
        path = ctx_or_run.out / "best.json"
    return atomic_write_json(path, best_json(ctx_or_run, trial))


def finish(ctx: RunContext, trials: list[dict[str, Any]]) -> dict[str, Any]:
    from segfactory.search.report import write_reports

    best = best_trial(trials)
    if best is not None:
        write_best(ctx, best)
    write_reports(ctx.out, trials, ctx.run_json())
    counts = {s: sum(1 for t in trials if t.get("status") == s) for s in ("ok", "early-stopped", "rejected",
                                                                           "failed")}
    wall = [t["wall_s"] for t in trials if t.get("status") in TRAINED and t.get("wall_s") is not None]
    return {
        "out": str(ctx.out),
        "trials": len(trials),
        "trained": trained_count(trials),
        "counts": counts,
        "best": best,
        "seconds_per_candidate": (sum(wall) / len(wall)) if wall else None,
        "files": sorted(p.name for p in ctx.out.iterdir() if not p.name.startswith(".")),
        "latency_target_ms": ctx.reward_spec.latency_target_ms,
        "input_size": list(ctx.input_size),
    }

