"""Candidates trained in parallel on a Ray cluster: :class:`RayExecutor` implements the executor protocol.

The driver (the search loop) proposes, prechecks and records; ``workers`` Ray actors proxy-train. Each actor
holds one :class:`~segfactory.search.proxy.ProxyData` (cached stage-1 encoder features, the meta-train frames,
the held-out tensors), put in the object store ONCE by the driver (``ray.put``) and handed to every actor by
reference: an actor deserialises it once and keeps it for all its candidates; nothing is re-sent per candidate.

Early stopping: the worker decides against a SNAPSHOT of the driver's :class:`EarlyStopper` taken when the job
is dispatched (its own RNG seeded from the candidate's seed), and returns its per-checkpoint scores; when the
result arrives the driver replays those scores into its stopper. Why not a shared stopper actor: (1) the
stopper's state must stay consistent with trials.jsonl for ``--resume`` -- with a live actor, a worker that
dies after its first checkpoint would already have moved the running means, and a retry would count the
candidate twice; with the snapshot only recorded trials move the state, exactly as in a local search;
(2) no round trip to a single actor at every checkpoint. What is lost: a running candidate does not see the
scores of the <= workers-1 candidates finishing meanwhile -- a few values in a 0.99 moving average.

Faults: an actor that dies (process killed, node lost, Ray's out-of-memory killer) is replaced and its
candidate goes back to the front of the queue, at most ``max_retries`` times; then the candidate is recorded
as failed with the reason. The driver itself can be killed: the loop's state.pt lists every proposal in
flight, and ``--resume`` re-runs them with the same genotype and seed.

Rungs (search.rungs): each rung's ProxyData is put in the object store once, when its first job is dispatched; an
actor resolves a rung's data on its first job at that rung and keeps it. A promotion trains to the end of its
schedule (the stopper's thresholds are rung 0's), and only rung-0 results move the driver's stopper, as in a local
search.

Ray is imported only here, and only when a :class:`RayExecutor` is made: ``--executor local`` never imports it.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from segfactory.factory.errors import InputError, RunError, SegfactoryError
from segfactory.search.executors import CandidateJob
from segfactory.search.proxy import ProxyResult

if TYPE_CHECKING:
    from segfactory.search.loop import Search

MAX_RETRIES = 2


@dataclass(frozen=True)
class RaySettings:
    """Where and how candidates train on Ray."""

    address: str | None = None  # None: a Ray already initialised here, else a new local one; "auto"; ray://H:P
    workers: int = 2  # candidates in flight (one actor each)
    gpus_per_trial: float | None = None  # None: 1 when the search runs on CUDA, else 0
    cpus_per_trial: float = 1.0  # also the torch threads of each worker
    max_retries: int = MAX_RETRIES  # per candidate, after its worker died

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise InputError(f"--workers {self.workers} must be at least 1")
        if self.cpus_per_trial <= 0:
            raise InputError(f"--cpus-per-trial {self.cpus_per_trial:g} must be positive")
        if self.gpus_per_trial is not None and self.gpus_per_trial < 0:
            raise InputError(f"--gpus-per-trial {self.gpus_per_trial:g} must be >= 0")
        if self.max_retries < 0:
            raise InputError(f"max_retries {self.max_retries} must be >= 0")
        if self.address is not None and not (self.address == "auto" or self.address.startswith("ray://")
                                             or ":" in self.address):
            raise InputError(f"--ray-address {self.address!r}: use auto, ray://HOST:PORT or HOST:PORT")


def make_ray_executor_factory(address: str | None = None, workers: int = 2, gpus_per_trial: float | None = None,
                              cpus_per_trial: float = 1.0, max_retries: int = MAX_RETRIES
                              ) -> Callable[[Search], RayExecutor]:
    """An ``executor_factory`` for :class:`~segfactory.search.loop.Search` / ``run_search``."""
    settings = RaySettings(address, workers, gpus_per_trial, cpus_per_trial, max_retries)
    return lambda search: RayExecutor(search, settings)


def executor_factory_from_options(options: Any) -> Callable[[Search], RayExecutor]:
    """The factory for a :class:`SearchOptions` with ``executor == "ray"`` (its ray_* fields, when present)."""
    return make_ray_executor_factory(
        address=getattr(options, "ray_address", None),
        workers=getattr(options, "workers", None) or 2,
        gpus_per_trial=getattr(options, "gpus_per_trial", None),
        cpus_per_trial=getattr(options, "cpus_per_trial", None) or 1.0,
    )


# -- the worker (a plain class; ray.remote wraps it on the driver) ------------------------------------------------

class TrialWorker:
    """One Ray actor: trains candidates one at a time on the ProxyData it was given once."""

    def __init__(self, proxy_data: Any, device: str, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))  # one worker = its CPUs, never the whole machine
        if device == "cuda" and not torch.cuda.is_available():
            raise RunError(f"Ray worker on {os.uname().nodename} was given a GPU but torch sees no CUDA device")
        self.data = {0: _place(proxy_data, device)}  # rung -> ProxyData; rung 0's resolved by Ray: once per actor
        self.device = device

    def train(self, genotype: dict[str, Any], seed: int, stopper_state: dict[str, Any] | None,
              checkpoints: int, rung: int = 0, rung_data: list[Any] | None = None) -> dict[str, Any]:
        """Train one candidate at ``rung``; ``rung_data``: [the rung's ObjectRef] (in a list, so that Ray hands
        the reference over unresolved and the actor fetches the data only on its first job at that rung)."""
        from segfactory.factory.genotype import Genotype
        from segfactory.search.proxy import train_candidate

        if rung not in self.data:
            import ray

            if not rung_data:
                raise RunError(f"rung {rung}: the worker was given no data for it")
            self.data[rung] = _place(ray.get(rung_data[0]), self.device)
        t = time.monotonic()
        result = train_candidate(Genotype.from_dict(genotype), self.data[rung], seed=seed, device=self.device,
                                 should_continue=self.should_continue(seed, stopper_state, checkpoints))
        out = result.to_dict()
        out["_worker"] = {"node": os.uname().nodename, "pid": os.getpid(), "train_s": time.monotonic() - t}
        return out

    def should_continue(self, seed: int, stopper_state: dict[str, Any] | None, checkpoints: int
                        ) -> Callable[[int, float], bool] | None:
        """The early-stopping decision at each checkpoint (None: train to the end), from the driver's snapshot."""
        from segfactory.search.early_stop import EarlyStopper

        if stopper_state is None:
            return None
        stopper = EarlyStopper(checkpoints)
        stopper.load_state_dict(stopper_state)
        # Concurrent candidates share one snapshot: draw from the candidate's own stream, not the shared one
        stopper.rng = random.Random(seed * 7_919 + 4_242)
        return stopper.should_continue


def _place(data: Any, device: str) -> Any:
    """ProxyData with its stage-1 cache on ``device`` (as ProxyData.prepare leaves it on CUDA).

    The object store gets a CPU copy (the driver may prepare it on its own GPU; a worker may have none); a GPU
    worker moves the cache onto its GPU once and pins the held-out tensors, as a local CUDA search does.
    """
    from dataclasses import replace

    cache = {k: getattr(data, k) for k in ("cache_e0", "cache_e1", "cache_labels")}
    if all(t.device.type == ("cuda" if device == "cuda" else "cpu") for t in cache.values()):
        return data
    if device == "cuda":
        return replace(data, **{k: t.to(device) for k, t in cache.items()},
                       val_images=data.val_images.pin_memory(), val_masks=data.val_masks.pin_memory())
    return replace(data, **{k: t.cpu() for k, t in cache.items()})


# -- the driver side ----------------------------------------------------------------------------------------------

@dataclass
class _Running:
    job: CandidateJob
    attempt: int  # 0 = first try
    slot: int  # index of the actor in RayExecutor.actors


class RayExecutor:
    """Trains up to ``workers`` candidates at once on Ray actors; results come back in completion order."""

    def __init__(self, search: Search, settings: RaySettings) -> None:
        import ray

        self.ray = ray
        self.search = search
        self.settings = settings
        self.capacity = settings.workers
        self._own_ray = False
        self.actors: list[Any] = []
        self.idle: list[int] = []
        self.queue: deque[tuple[CandidateJob, int]] = deque()  # (job, attempt) waiting for an actor
        self.running: dict[Any, _Running] = {}  # ObjectRef -> what it is
        self.restarts = 0
        if not ray.is_initialized():
            self._status(f"connecting to Ray at {settings.address}" if settings.address else "starting a local Ray")
            try:
                ray.init(address=settings.address, include_dashboard=False, logging_level="WARNING",
                         log_to_driver=True)
            except Exception as e:  # noqa: BLE001 - unreachable cluster, bad address: one line
                first = (str(e).strip().splitlines() or [""])[0][:300]
                raise RunError(f"cannot start or reach Ray (address {settings.address or 'local'}): "
                               f"{type(e).__name__}: {first}") from None
            self._own_ray = True
        try:
            self._start(search, settings)
        except BaseException:
            self.close()
            raise

    def _start(self, search: Search, settings: RaySettings) -> None:
        ray = self.ray
        gpus = settings.gpus_per_trial
        if gpus is None:
            gpus = 1.0 if search.ctx.device == "cuda" else 0.0
        self.gpus = float(gpus)
        self.device = "cuda" if self.gpus > 0 else "cpu"
        self._check_resources()
        self.checkpoints = 1 + search.ctx.settings.stage2_epochs
        # The one copy of the proxy data the whole run shares (cached features, frames, held-out tensors); a
        # higher rung's is put when its first job is dispatched.
        self.data_ref = ray.put(_place(search.proxy_data(), "cpu"))
        self.rung_refs: dict[int, Any] = {}
        self.remote_cls = ray.remote(TrialWorker)
        self.actors = [self._new_actor() for _ in range(self.capacity)]
        self.idle = list(range(self.capacity))

    # -- protocol ----------------------------------------------------------------------------------------------
    def submit(self, job: CandidateJob) -> None:
        if job.index in self.in_flight_indices():  # the loop handed out a proposal that is still training
            raise RunError(f"candidate #{job.index} was submitted while it is still in flight")
        self.queue.append((job, 0))
        self._dispatch()

    def in_flight(self) -> int:
        return len(self.queue) + len(self.running)

    def in_flight_indices(self) -> set[int]:
        return {j.index for j, _ in self.queue} | {r.job.index for r in self.running.values()}

    def wait(self) -> tuple[CandidateJob, ProxyResult]:
        ray = self.ray
        while True:
            self._dispatch()
            if not self.running:
                raise RunError("RayExecutor.wait() with no candidate in flight")
            ready, _ = ray.wait(list(self.running), num_returns=1)
            ref = ready[0]
            run = self.running.pop(ref)
            try:
                payload = ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # an exception raised inside the worker's code
                cause = getattr(e, "cause", None)
                self.idle.append(run.slot)
                if isinstance(cause, SegfactoryError):
                    raise cause from None  # bad data or settings: stop the search, as a local run would
                first = (str(cause or e).strip().splitlines() or [""])[0][:300]
                return self._done(run.job, ProxyResult("failed", reason=f"worker error: "
                                                       f"{type(cause or e).__name__}: {first}"))
            except _worker_lost(ray) as e:
                if "creation task" in str(e):  # the actor could not start (no CUDA, segfactory missing there)
                    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                    raise RunError(f"a Ray worker could not start: {lines[-1][:300]}") from None
                reason = _lost_reason(e)
                self._replace_actor(run.slot)
                if run.attempt < self.settings.max_retries:
                    self._status(f"candidate #{run.job.index}: worker lost ({reason}); retry "
                                 f"{run.attempt + 1}/{self.settings.max_retries}")
                    self.queue.appendleft((run.job, run.attempt + 1))
                    continue
                return self._done(run.job, ProxyResult(
                    "failed", reason=f"worker lost {run.attempt + 1} times (last: {reason})"))
            self.idle.append(run.slot)
            payload.pop("_worker", None)
            result = ProxyResult(**payload)
            if run.attempt:  # retries are part of the record's story
                result.reason = (result.reason + "; " if result.reason else "") + \
                    f"retried {run.attempt} time(s) after its worker was lost"
            return self._done(run.job, result)

    def close(self) -> None:
        ray = self.ray
        for ref in list(self.running):
            with contextlib.suppress(Exception):  # actor tasks may not be cancellable; the actor is killed below
                ray.cancel(ref, force=True)
        for actor in self.actors:
            with contextlib.suppress(Exception):  # already dead
                ray.kill(actor, no_restart=True)
        self.running.clear()
        self.queue.clear()
        self.actors = []
        self.data_ref = None
        self.rung_refs = {}
        if self._own_ray:
            ray.shutdown()
            self._own_ray = False

    # -- internals ---------------------------------------------------------------------------------------------
    def _done(self, job: CandidateJob, result: ProxyResult) -> tuple[CandidateJob, ProxyResult]:
        # The driver's stopper learns what the worker saw, in completion order (see the module docstring); a
        # promotion trained without it.
        if job.rung == 0:
            stopper = self.search.stopper
            for k, value in enumerate(result.checkpoints[: self.checkpoints]):
                stopper.should_continue(k, float(value))
        return job, result

    def _dispatch(self) -> None:
        while self.queue and self.idle:
            job, attempt = self.queue.popleft()
            slot = self.idle.pop(0)
            stopper = self.search.stopper
            snapshot = stopper.state_dict() if stopper.enabled and job.rung == 0 else None
            ref = self.actors[slot].train.remote(job.proposal.genotype.to_dict(), job.seed, snapshot,
                                                 self.checkpoints, job.rung, self._rung_data(job.rung))
            self.running[ref] = _Running(job, attempt, slot)

    def _rung_data(self, rung: int) -> list[Any] | None:
        """[the ObjectRef of ``rung``'s ProxyData] (put on first use), None for rung 0 (the actors hold it)."""
        if rung == 0:
            return None
        if rung not in self.rung_refs:
            self.rung_refs[rung] = self.ray.put(_place(self.search.proxy_data(rung), "cpu"))
        return [self.rung_refs[rung]]

    def _new_actor(self):
        threads = max(1, int(self.settings.cpus_per_trial))
        return self.remote_cls.options(num_cpus=self.settings.cpus_per_trial, num_gpus=self.gpus,
                                       max_restarts=0, max_task_retries=0).remote(
            self.data_ref, self.device, threads)

    def _replace_actor(self, slot: int) -> None:
        with contextlib.suppress(Exception):  # it is dead already
            self.ray.kill(self.actors[slot], no_restart=True)
        self.actors[slot] = self._new_actor()
        self.idle.append(slot)
        self.restarts += 1

    def _check_resources(self) -> None:
        total = self.ray.cluster_resources()
        cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
        s = self.settings
        # A cluster that autoscales may grow; a local Ray started here will not: only then is it an error.
        problem = None
        if s.cpus_per_trial > cpus:
            problem = f"--cpus-per-trial {s.cpus_per_trial:g}: the Ray cluster has {cpus:g} CPU(s)"
        elif self.gpus > gpus:
            problem = (f"--gpus-per-trial {self.gpus:g}: the Ray cluster has {gpus:g} GPU(s)"
                       + (" (the search runs on CUDA; pass --gpus-per-trial 0 to train on CPUs)"
                          if s.gpus_per_trial is None else ""))
        if problem and self._own_ray and s.address is None:
            raise InputError(problem)
        if problem:
            self._status(f"{problem}; waiting for the cluster to grow")
            return
        if s.workers * s.cpus_per_trial > cpus or (self.gpus and s.workers * self.gpus > gpus):
            self._status(f"{s.workers} workers need more than the cluster's {cpus:g} CPU(s)/{gpus:g} GPU(s): "
                         f"some will wait for resources")

    def _status(self, message: str) -> None:
        if self.search.on_event is not None:
            self.search.on_event({"kind": "status", "message": message})


def _worker_lost(ray) -> tuple[type[BaseException], ...]:
    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OutOfMemoryError",
             "LocalRayletDiedError")  # not all exist in every Ray version
    kinds = (getattr(ray.exceptions, n, None) for n in names)
    return tuple(k for k in kinds if isinstance(k, type))


def _lost_reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    # Ray's messages are long; keep the kind and the first clause.
    return f"{type(e).__name__}: {text[:200]}"
