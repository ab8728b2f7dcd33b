"""Where candidates train: the seam between the search loop and the machines that do the work.

The loop submits :class:`CandidateJob`s up to the executor's ``capacity`` and takes results back with
:meth:`Executor.wait` in whatever order they finish; ``index`` (the proposal order) travels with each job, so
trials.jsonl has the same meaning whatever the executor. :class:`LocalExecutor` trains one candidate at a time
in this process; a parallel executor (Ray) implements the same protocol.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from segfactory.search.proxy import ProxyResult
from segfactory.search.strategies import Proposal


@dataclass
class CandidateJob:
    """One candidate to proxy-train: what was proposed, its seed, and what the driver measured before."""

    index: int
    proposal: Proposal
    seed: int
    pre: dict[str, Any] = field(default_factory=dict)  # latency, params, macs measured by the driver
    started: float = 0.0  # time.monotonic() when the driver began with it
    cpu_started: float = 0.0  # time.process_time() then (the driver's CPU time, meaningful for local runs)
    rung: int = 0  # the rung it trains at (search.rungs); > 0: a promotion of trial ``promoted_from``
    promoted_from: int | None = None


TrainFn = Callable[[CandidateJob], ProxyResult]


class Executor(Protocol):
    capacity: int  # jobs that may be in flight at once

    def submit(self, job: CandidateJob) -> None: ...

    def wait(self) -> tuple[CandidateJob, ProxyResult]:
        """Block until some submitted job finishes; return it with its result."""
        ...

    def in_flight(self) -> int: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Trains the submitted candidates one after the other, in this process."""

    capacity = 1

    def __init__(self, train: TrainFn) -> None:
        self.train = train
        self.queue: deque[CandidateJob] = deque()

    def submit(self, job: CandidateJob) -> None:
        self.queue.append(job)

    def wait(self) -> tuple[CandidateJob, ProxyResult]:
        job = self.queue.popleft()
        return job, self.train(job)

    def in_flight(self) -> int:
        return len(self.queue)

    def close(self) -> None:
        self.queue.clear()
