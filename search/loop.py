"""The search run: propose, check the deployed model's cost, proxy-train, reward, learn, record; resumable.

Files in the run directory:
- ``run.json``: the run's settings (resolved: preset, configs, input size, reward targets, arch0's latency);
  a resumed run reads them back, so its rewards stay comparable (see :mod:`segfactory.search.context`);
- ``trials.jsonl``: one line per candidate (see :mod:`segfactory.search.trials`);
- ``state.pt``, ``controller.pt``: the strategy, the early stopper and the proposals in flight (see
  :mod:`segfactory.search.state`);
- ``best.json``, ``pareto.png``, ``summary.md``: the results (see :mod:`segfactory.search.results`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

from segfactory.factory.errors import InputError, RunError
from segfactory.factory.genotype import Genotype
from segfactory.search.context import Event, RunContext, make_context, proxy_memory_reasons
from segfactory.search.context import emit as _emit
from segfactory.search.early_stop import EarlyStopper
from segfactory.search.executors import CandidateJob, Executor, LocalExecutor
from segfactory.search.limits import COST, LATENCY, Limits
from segfactory.search.options import SearchOptions
from segfactory.search.results import finish, write_best
from segfactory.search.reward import compute_reward
from segfactory.search.rungs import calibrated_score, next_promotion, rung_of
from segfactory.search.screen import LatencyScreen, latency_fields
from segfactory.search.state import load_state as _load_state
from segfactory.search.state import save_state as _save_state
from segfactory.search.strategies import Proposal, StrategyExhausted, make_strategy
from segfactory.search.trials import TRAINED, TrialStore, best_trial, trained_count

LEARN_FROM = ("ok", "early-stopped")  # statuses whose reward the strategy is told


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
        self.strategy = make_strategy(ctx.strategy, o.seed, feedback=o.feedback, settings=self._pg_settings(),
                                      population=o.population, sample=o.tournament, genotypes=o.genotypes)
        self.stopper = EarlyStopper(1 + ctx.settings.stage2_epochs, seed=o.seed + 4242, enabled=o.early_stopping)
        self.next_index = 0
        self.pending: dict[int, dict[str, Any]] = {}  # index -> {"proposal": ..., "seed": ...}
        self.submitted: set[int] = set()  # pending indices handed to the executor (in flight)
        self.by_key: dict[str, dict[str, Any]] = {}  # genotype key -> first trained trial (reuse)
        self.latencies: dict[str, dict[str, Any]] = {}  # genotype key -> latency of the deployed model
        self.executor_factory = executor_factory or (lambda search: LocalExecutor(search.train_job))
        self.consecutive_rejections = 0
        self.consecutive_repeats = 0
        self.screen = LatencyScreen(ctx)
        self.started = time.monotonic()
        self.spent_s = 0.0  # wall time of earlier parts of this search (state.pt)
        self.run_s: dict[str, float] = {}  # seconds of work outside any trial, by part (state.pt)
        self.trained_times: list[float] = []
        self.rung_data: dict[int, Any] = {}  # rung > 0 -> its ProxyData (rung 0's is ctx.proxy_data)

    def _pg_settings(self):
        from segfactory.search.ppo import pg_settings

        o = self.ctx.options
        profile = o.controller or ("paper" if self.ctx.preset == "paper" else "reachable")
        return pg_settings(profile, o.pg_algorithm, o.controller_lr, o.entropy_coef)

    # -- resume ---------------------------------------------------------------------------------------------
    def restore(self) -> None:
        trials = self.store.open()
        if self.store.torn_bytes:
            _emit(self.on_event, "status", message=f"dropped a torn last line of trials.jsonl "
                                                    f"({self.store.torn_bytes} bytes)")
        for t in trials:
            # keys are hashes of the genotype's normal form; runs made before that have other keys: recompute
            t["key"] = Genotype.from_dict(t["genotype"]).key()
            self._index_trial(t)
        state = _load_state(self.ctx.out)
        done = {int(t["index"]): t for t in trials}
        if state is not None:
            self.spent_s = float(state.get("elapsed_s", 0.0))
            self.run_s = dict(state.get("run_s") or {})
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
            with self._timing("strategy_s"):
                p = self.strategy.propose() if rung_of(t) == 0 else None  # a promotion was not proposed
            if p is None or p.genotype.key() != t["key"]:
                p = Proposal(Genotype.from_dict(t["genotype"]))
            self._replay(p, t)
            self.next_index = int(t["index"]) + 1
        if state is not None or late:
            self._save()

    def _index_trial(self, t: dict[str, Any]) -> None:
        if t.get("status") in TRAINED and t["key"] not in self.by_key:
            self.by_key[t["key"]] = t
        if t.get("latency_ms") is not None:
            self.latencies.setdefault(t["key"], {k: t[k] for k in self.LATENCY_FIELDS if t.get(k) is not None})
        if t.get("repeat_of") is None and rung_of(t) == 0:
            self.screen.observe(t)
        if t.get("status") in TRAINED and t.get("wall_s"):
            self.trained_times.append(float(t["wall_s"]))

    def _replay(self, proposal: Proposal, trial: dict[str, Any]) -> None:
        """What recording ``trial`` did to the early stopper and the strategy, done again from the record."""
        for k, value in enumerate(trial.get("checkpoints") or []):
            self.stopper.should_continue(k, float(value))
        self._tell(proposal, trial)

    def _tell(self, proposal: Proposal, trial: dict[str, Any]) -> None:
        """Tell the strategy the trial's reward; failed and rejected candidates get ``--failure-reward`` (0 by
        default; None tells nothing), a repeat what its first trial got.

        A rejected (infeasible) proposal is told to a strategy that learns the boundary from it (PPO: a reward of
        0 against a baseline near the typical score is a strongly negative advantage, so the controller moves
        away from the decisions that made it infeasible); a strategy whose ``rejections_told`` is False (evolution)
        hears nothing and simply proposes again, so its population holds feasible members only."""
        status = trial.get("status")
        learned = status in LEARN_FROM or (status == "repeat" and trial.get("reward") is not None)
        reward = trial.get("reward") if learned else self.ctx.options.failure_reward
        if status == "rejected" and not getattr(self.strategy, "rejections_told", True):
            reward = None
        if rung_of(trial) > 0:  # a promotion: its score on rung 0's scale (see search.rungs); a failure tells nothing
            reward = None if trial.get("reward") is None else compute_reward(
                calibrated_score(self.store.trials, trial), trial["latency_ms"], trial["params"], self.ctx.reward_spec)
        with self._timing("strategy_s"):
            self.strategy.tell(proposal, reward)

    def _save(self) -> None:
        with self._timing("state_s"):
            _save_state(self.ctx.out, self.strategy, self.stopper, self.next_index, self.pending, self.elapsed_s(),
                        self.run_s)

    @contextmanager
    def _timing(self, part: str) -> Iterator[None]:
        """Adds the block's wall time to ``run_s[part]``: the search's work outside any trial, so that the summary
        says where all the wall time went (a controller's updates can outweigh the training, see issue 19)."""
        t = time.monotonic()
        try:
            yield
        finally:
            self.run_s[part] = self.run_s.get(part, 0.0) + time.monotonic() - t

    def elapsed_s(self) -> float:
        """Wall time of this search over every resumed part (--minutes counts it)."""
        return self.spent_s + time.monotonic() - self.started

    # -- one candidate ----------------------------------------------------------------------------------------
    def _next_job(self, in_flight: int) -> CandidateJob | None:
        """A pending job not yet in flight (after a resume), else a promotion due (rungs), else a new proposal
        while fewer than ``--budget`` candidates are trained or in flight (``in_flight`` of them); each is saved
        in the state before it is used. None: nothing left to do."""
        o = self.ctx.options
        waiting = sorted(set(self.pending) - self.submitted)
        if waiting:
            index = waiting[0]
        else:
            index = self.next_index
            busy = {v["promoted_from"] for v in self.pending.values() if v.get("promoted_from") is not None}
            due = next_promotion(self.store.trials, len(self.ctx.rungs), o.promote, busy) if self.ctx.rungs else None
            if due is not None:
                trial, rung = due
                entry = {"proposal": Proposal(Genotype.from_dict(trial["genotype"])).to_dict(), "rung": rung,
                         "promoted_from": trial["index"]}
            elif trained_count(self.store.trials) + in_flight >= o.budget:
                return None
            else:
                with self._timing("strategy_s"):
                    entry = {"proposal": self.strategy.propose().to_dict()}
            self.next_index += 1
            self.pending[index] = {**entry, "seed": candidate_seed(o.seed, index)}
            self._save()
        entry = self.pending[index]
        job = CandidateJob(index, Proposal.from_dict(entry["proposal"]), entry["seed"], started=time.monotonic(),
                           cpu_started=time.process_time(), rung=int(entry.get("rung", 0)),
                           promoted_from=entry.get("promoted_from"))
        if job.promoted_from is not None:  # cost and latency are the promoted trial's
            source = self._trial(job.promoted_from)
            job.pre.update({k: source[k] for k in ("params", "macs", *self.LATENCY_FIELDS) if k in source})
        return job

    LATENCY_FIELDS = ("latency_ms", "latency_source", "latency_ratio", "latency_raw_ms", "latency_reference_ms",
                      "latency_predicted_ratio", "latency_calibration")

    def _trial(self, index: int) -> dict[str, Any]:
        return next(t for t in self.store.trials if t["index"] == index)

    def _in_flight_candidates(self) -> int:
        """Jobs in flight that count toward --budget (rung 0)."""
        return sum(1 for i in self.submitted if not self.pending.get(i, {}).get("rung"))

    def precheck(self, job: CandidateJob) -> dict[str, Any] | None:
        """Cost and latency of the deployed model; returns a finished trial (rejected, failed, reused) or None."""
        from segfactory.factory.cost import model_cost

        ctx, o, g = self.ctx, self.ctx.options, job.proposal.genotype
        key, checked = g.key(), time.monotonic()
        cost = model_cost(g, ctx.deploy_config, ctx.input_size)
        job.pre.update(params=cost.params, macs=cost.macs)
        limits = Limits.of(o)
        reasons = limits.violations(job.pre, keys=COST)
        if not reasons:
            reasons += proxy_memory_reasons(g, ctx)
        if not reasons and ctx.settings.max_proxy_macs is not None:
            proxy_macs = model_cost(g, ctx.proxy_config, ctx.settings.crop).macs
            if proxy_macs > ctx.settings.max_proxy_macs:
                reasons.append(f"proxy MACs {proxy_macs:,} at {ctx.settings.crop[0]}x{ctx.settings.crop[1]} > the "
                               f"preset's limit {ctx.settings.max_proxy_macs:,}")
        predicted = None
        if not reasons and key not in self.latencies:
            verdict, detail = self.screen.judge(g, cost.macs)
            if verdict == "reject":
                reasons.append(detail)
            elif verdict == "accept":  # clearly under the limit by this host's table: not timed
                self.latencies[key] = detail
            else:
                predicted = detail
        job.pre["check_s"] = round(time.monotonic() - checked, 3)
        if reasons:
            return self._record(job, status="rejected", reason="; ".join(reasons))
        if key in self.by_key:  # the same network was trained before: its result stands, nothing is retrained
            prev = self.by_key[key]
            return self._record(job, status="repeat", reason=f"same network as trial {prev['index']} "
                                f"({prev['status']}): not retrained", reused=prev)
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
            self.latencies[key] = latency_fields(lat, ctx.reference.get("latency_ms"))
            if predicted is not None:  # what the table said of it: how good the screen is
                self.latencies[key]["latency_predicted_ratio"] = predicted
            job.pre["latency_s"] = round(time.monotonic() - t, 3)
        job.pre.update(self.latencies[key])
        reasons = limits.violations(job.pre, keys=LATENCY)
        return self._record(job, status="rejected", reason="; ".join(reasons)) if reasons else None

    def train_job(self, job: CandidateJob):
        """Proxy-train ``job`` here (what :class:`LocalExecutor` calls)."""
        from segfactory.search.proxy import train_candidate

        # the early stopper's thresholds are rung 0's: a promotion trains to the end of its schedule
        return train_candidate(job.proposal.genotype, self.proxy_data(job.rung), seed=job.seed,
                               device=self.ctx.device, should_continue=None if job.rung else self.stopper.should_continue)

    def proxy_data(self, rung: int = 0):
        """The ProxyData of ``rung`` (its preset's stage-1 cache and held-out split), prepared once."""
        if (self.ctx.proxy_data if rung == 0 else self.rung_data.get(rung)) is None:
            from segfactory.search.proxy import ProxyData

            settings = self.ctx.rungs[rung].settings if rung else self.ctx.settings
            _emit(self.on_event, "status", message="caching encoder features for stage 1"
                  + (f" (rung {rung}: {self.ctx.rungs[rung].name})" if self.ctx.rungs else ""))
            with self._timing("prepare_s"):
                data = ProxyData.prepare(self.ctx.dataset, self.ctx.proxy_config, settings, self.ctx.options.seed,
                                         self.ctx.device)
            if rung == 0:
                self.ctx.proxy_data = data
            else:
                self.rung_data[rung] = data
        return self.ctx.proxy_data if rung == 0 else self.rung_data[rung]

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
        for k in self.LATENCY_FIELDS[2:]:
            if job.pre.get(k) is not None:
                rec[k] = job.pre[k]
        if reused is not None:
            rec["repeat_of"] = reused["index"]
            for k in ("miou", "macc", "fwiou", "score", "reward", "latency_ms", "latency_source", "latency_ratio"):
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
        if self.ctx.rungs:
            rec.update(rung=job.rung, rung_preset=self.ctx.rungs[job.rung].name)
            if job.promoted_from is not None:
                rec["promoted_from"] = job.promoted_from
            if result is not None:
                before = self._trial(job.promoted_from)["rung_scores"] if job.promoted_from is not None else []
                rec["rung_scores"] = [*before, rec["score"]]
        rec["wall_s"] = round(time.monotonic() - job.started, 3)
        rec["cpu_s"] = round(time.process_time() - job.cpu_started, 3)  # this process's CPU time (all threads)
        for k in ("check_s", "latency_s"):
            if job.pre.get(k) is not None:
                rec[k] = job.pre[k]
        if job.pre.get("latency_device"):
            rec["latency_device"] = job.pre["latency_device"]
        if result is not None:
            rec["proxy_cpu_s"] = round(result.cpu_s, 3)  # what the candidate's time limit counts
        self.store.append(rec)
        self._index_trial(rec)
        self.pending.pop(job.index, None)
        self.submitted.discard(job.index)
        self._tell(job.proposal, rec)
        self._save()
        self.consecutive_rejections = self.consecutive_rejections + 1 if rec["status"] == "rejected" else 0
        self.consecutive_repeats = self.consecutive_repeats + 1 if rec["status"] == "repeat" else 0
        best = best_trial(self.store.trials)
        if best is not None and best["index"] == rec["index"]:
            write_best(self.ctx, best)
        _emit(self.on_event, "trial", trial=rec, trained=trained_count(self.store.trials),
              budget=self.ctx.options.budget, best=best, eta_s=self.eta(), elapsed_s=self.elapsed_s(),
              minutes=self.ctx.options.max_minutes)
        return rec

    def _out_of_time(self) -> bool:
        m = self.ctx.options.max_minutes
        return m is not None and self.elapsed_s() > 60 * m

    def eta(self) -> float | None:
        """Seconds left: to the budget at the mean time per trained candidate, or to --minutes if sooner."""
        o = self.ctx.options
        left = o.budget - trained_count(self.store.trials)
        if not self.trained_times:
            return None
        eta = max(0, left) * sum(self.trained_times) / len(self.trained_times)
        return eta if o.max_minutes is None else min(eta, max(0.0, 60 * o.max_minutes - self.elapsed_s()))

    # -- run ------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        o = self.ctx.options
        self.restore()
        executor = self.executor_factory(self)
        if o.max_latency_ratio is not None:
            _emit(self.on_event, "status", message=f"latency screen: {self.screen.describe()}")
        _emit(self.on_event, "start", trained=trained_count(self.store.trials), budget=o.budget)
        stopped = converged = None
        try:
            while True:
                while executor.in_flight() < executor.capacity and not self._out_of_time():
                    try:
                        job = self._next_job(self._in_flight_candidates())
                    except StrategyExhausted:
                        break
                    if job is None:
                        break
                    done = self.precheck(job) if job.promoted_from is None else None
                    if done is None:
                        _emit(self.on_event, "candidate", index=job.index, key=job.proposal.genotype.key())
                        self.submitted.add(job.index)
                        executor.submit(job)
                    elif self.consecutive_rejections >= o.max_rejections:
                        stopped = (f"{self.consecutive_rejections} consecutive candidates were rejected (last: "
                                   f"{done['reason']}); loosen the limits")
                        break
                    elif self.consecutive_repeats >= o.max_repeats:
                        converged = (f"the strategy has converged: its last {self.consecutive_repeats} proposals "
                                     f"repeated networks already trained (--max-repeats {o.max_repeats})")
                        _emit(self.on_event, "status", message=converged)
                        break
                if stopped or converged or executor.in_flight() == 0:  # done, out of time, or nothing to propose
                    break
                job, result = executor.wait()
                self._record(job, status=result.status, reason=result.reason, result=result)
        finally:
            executor.close()
        summary = finish(self.ctx, self.store.trials, elapsed_s=self.elapsed_s(), run_s=self.run_s)
        summary["latency_screen"] = self.screen.describe()
        if stopped:
            raise RunError(stopped)
        if converged:
            summary["stopped"] = converged
        return summary


def run_search(options: SearchOptions, *, resume: bool = False, on_event: Event | None = None,
               executor_factory: Callable[[Search], Executor] | None = None,
               given: Collection[str] | None = None) -> dict[str, Any]:
    """Run (or resume) a search; returns the summary (best trial, counts, files).

    ``given``: the option fields the user set explicitly (None: all), which a resume checks against the
    original settings (see :func:`~segfactory.search.context.make_context`).
    """
    ctx = make_context(options, resume, on_event, given)
    if executor_factory is None and ctx.options.executor == "ray":
        from segfactory.search.ray_executor import executor_factory_from_options  # imports ray when made

        executor_factory = executor_factory_from_options(ctx.options)
    return Search(ctx, on_event, executor_factory).run()
