"""``run_build``: the pipeline, stage after stage, with one live progress view (stage, its progress, time left)."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from segfactory.search.pipeline.options import BuildOptions
from segfactory.search.pipeline.state import STAGES, BuildState, open_build, recorded_stages, stage_function


def run_build(options: BuildOptions, *, resume: bool = False, view: BuildView | None = None,
              given: Collection[str] | None = None) -> dict[str, Any]:
    """Run (or resume) a build; returns its summary (every stage's result, the deliverables).

    Every option is checked first (:func:`~segfactory.search.pipeline.checks.check_build`; ``given``: the search
    flags the user set), so a refused build creates and writes nothing."""
    from segfactory.search.pipeline.checks import check_build

    check_build(options, resume=resume, given=given,
                search_done=resume and "search" in recorded_stages(options.out))
    state = open_build(options, resume)
    view = view or BuildView(enabled=False)
    view.start(state)
    try:
        for stage in STAGES:
            if state.done(stage):
                view.skip(stage)
                continue
            view.begin(stage)
            t0 = time.monotonic()
            result = stage_function(stage)(state, view.event)
            state.finish(stage, result, time.monotonic() - t0)
            view.end(stage)
    finally:
        view.close()
    return summary(state)


def summary(state: BuildState) -> dict[str, Any]:
    st = state.stages
    model = {p: v for p, v in st["evaluate"].get("model", {}).items()}
    bench = st["bench"]["results"]
    return {"out": str(state.out), "pick": st["pick"], "check": st["check"],
            "model": {p: {"miou": m["miou"], "latency_ms": (bench.get(f"model {p}") or {}).get("median_ms"),
                          "file": st["export"]["model"][p]["file"]} for p, m in model.items()},
            "baselines": {n: {p: m["miou"] for p, m in v.items()} for n, v in st["evaluate"].items()
                          if n not in ("model", "class_names")},
            "report": st["report"]}


class BuildView:
    """One rich live view on stderr: the stages (done, running, to do), the running stage's progress and time
    left; silent when disabled (``--quiet``, ``--json``)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.progress = None
        self.tasks: dict[str, Any] = {}
        self.current = ""

    def start(self, state: BuildState) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description:<9}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        self.progress.start()
        for stage in STAGES:
            self.tasks[stage] = self.progress.add_task(stage, total=1.0, info="", start=False)

    def skip(self, stage: str) -> None:
        if self.progress:
            self.progress.update(self.tasks[stage], completed=1.0, info="done earlier")

    def begin(self, stage: str) -> None:
        self.current = stage
        if self.progress:
            self.progress.start_task(self.tasks[stage])

    def end(self, stage: str) -> None:
        if self.progress:
            self.progress.update(self.tasks[stage], completed=1.0, info="done")

    def event(self, e: dict[str, Any]) -> None:
        """Progress of the running stage: search events, training events, status lines."""
        if not self.progress:
            return
        task, kind = self.tasks[self.current], e.get("kind")
        if kind == "status":
            self.progress.update(task, info=e["message"][:70])
        elif kind == "trial":
            done = e["trained"] / (e.get("budget") or 1)
            if e.get("minutes"):  # a time-bounded search: the share of its minutes spent
                done = max(done, e.get("elapsed_s", 0.0) / (60 * e["minutes"]))
            best = e.get("best")
            self.progress.update(task, completed=min(1.0, done),
                                 info=f"{e['trained']} trained" + (f", best score {best['score']:.3f}" if best else ""))
        elif kind == "train-start":
            self.job = (e["job"], e["jobs"])
            self.progress.update(task, info=f"{e['name']} / {e['recipe']} ({e['job'] + 1}/{e['jobs']})")
        elif kind in ("step", "epoch") and hasattr(self, "job"):
            i, n = self.job
            self.progress.update(task, completed=(i + e["fraction"]) / n)

    def close(self) -> None:
        if self.progress:
            self.progress.stop()
