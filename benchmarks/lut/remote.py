"""``segfactory profile --device-url``: a lookup table measured on a device agent (a Jetson), one unit at a time.

The agent times whole models end to end and has no per-node profiler, so every unit is exported here (where
torch is) as its own small ONNX model with one input and sent to ``/v1/measure``. The agent's time of a unit
includes a fixed per-call cost (enqueue, synchronisation, the runner's loop); an Identity model measured the
same way gives it (``per_call_ms`` in the table), and each entry's ``ms`` is the unit's median minus it. The
fitted overhead (``intercept_ms``, ``scale``) then comes from whole fitting genotypes measured on the agent too.
Answers are cached on both sides: the agent's cache, and ``measure_remote``'s ``cache_dir`` beside ``--out``
(unit exports are seeded, so a re-export has the same sha256).
"""

from __future__ import annotations

import hashlib
import io
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segfactory.benchmarks.lut.table import FORMAT, Lut, fit_overhead, units_by_frequency
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError

MEASURED_BY = "agent"


def unit_onnx(sig: str, config: ModelConfig) -> bytes:
    """The unit ``sig`` as a one-input ONNX model (seeded weights: the same bytes on every export).

    Units with two inputs (merges, concat) take the one input twice when the shapes agree; otherwise the
    second operand is a constant of its shape (the device still reads it, as it would read an activation).
    """
    import torch
    from segfactory.benchmarks.lut.measure import build_unit
    from torch import nn

    seed = int(hashlib.sha256(sig.encode()).hexdigest()[:8], 16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module, shapes = build_unit(sig, config)

        class OneInput(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.unit = module.eval()
                for j, shape in enumerate(shapes[1:], 1):
                    if tuple(shape) != tuple(shapes[0]):
                        self.register_buffer(f"operand{j}", torch.randn(*shape))

            def forward(self, x):
                extra = [x if tuple(s) == tuple(shapes[0]) else getattr(self, f"operand{j}")
                         for j, s in enumerate(shapes[1:], 1)]
                return self.unit(x, *extra)

        buf = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(OneInput().eval(), (torch.randn(*shapes[0]),), buf, input_names=["x"],
                              opset_version=17, do_constant_folding=True, dynamo=False)
    return buf.getvalue()


def baseline_onnx() -> bytes:
    """An Identity model on a (1, 1, 1, 1) float input: what one call costs with (almost) no work."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "per_call",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by the onnxruntime of JetPack 6
    return model.SerializeToString()


class RemoteMeasurer:
    """Measures ONNX bytes on one agent with fixed settings, caching answers in ``cache_dir``."""

    def __init__(self, url: str, token_file: str | Path | None, *, precision: str, threads: int,
                 warmup_ms: float, iterations: int, duration_s: float, cache_dir: Path | None) -> None:
        self.url, self.token_file, self.cache_dir = url, token_file, cache_dir
        self.settings = {"batch": 1, "precision": precision, "threads": threads, "warmup_ms": warmup_ms,
                         "iterations": iterations, "duration_s": duration_s}

    def measure(self, data: bytes, **changes: Any) -> dict[str, Any]:
        from segfactory.benchmarks.agent.client import measure_remote

        return measure_remote(self.url, self.token_file, data, {**self.settings, **changes}, cache_dir=self.cache_dir)


def open_remote_lut(out: Path, target: str, config: ModelConfig, input_size: tuple[int, int], threads: int,
                    precision: str, health: dict[str, Any]) -> Lut:
    """The table at ``out`` to resume (same target, device, backend, precision, configuration), or a new one."""
    device = health.get("device") or {}
    name = device.get("name") or "unknown device"
    backend = str(health.get("backend") or device.get("backend") or "unknown")
    if out.exists():
        lut = Lut.load(out)
        lut.check(config, input_size, threads=threads, backend=backend)
        for field, want in (("measured_by", MEASURED_BY), ("target", target), ("device", name),
                            ("precision", precision)):
            if lut.data.get(field) != want:
                raise InputError(f"lookup table {out} has {field}={lut.data.get(field)!r}, not {want!r} "
                                 "(this agent and settings); choose another --out")
        return lut
    lut = Lut.new(config, input_size, threads=threads, path=out)
    versions = device.get("versions") or {}
    lut.data.update({
        "device": name, "device_info": device, "backend": backend,
        "backend_version": versions.get("tensorrt" if backend in ("trt", "trtexec") else "onnxruntime"),
        "precision": precision, "target": target, "measured_by": MEASURED_BY, "per_call_ms": None,
    })
    return lut


def measure_remote_units(lut: Lut, sigs: list[str], config: ModelConfig, measurer: RemoteMeasurer, *,
                         on_unit: Callable[[], None] | None = None, deadline: float | None = None,
                         save_every_s: float = 5.0) -> int:
    """Measure the signatures missing from ``lut`` on the agent; saves atomically as it goes; returns how many."""
    per_call = lut.data.get("per_call_ms")
    if per_call is None:
        base = measurer.measure(baseline_onnx())
        lut.data["per_call_ms"] = per_call = float(base["median_ms"])
        lut.data["per_call"] = {k: base.get(k) for k in ("median_ms", "p90_ms", "iterations", "sha256")}
    done = 0
    last_save = time.monotonic()
    for sig in [s for s in dict.fromkeys(sigs) if s not in lut.entries]:  # keeps the caller's order
        if deadline is not None and time.monotonic() > deadline:
            break
        res = measurer.measure(unit_onnx(sig, config))
        med = float(res["median_ms"])
        lut.entries[sig] = {"ms": max(0.0, med - per_call), "measured_ms": med,
                            "p90_ms": max(0.0, float(res.get("p90_ms", med)) - per_call),
                            "n": int(res.get("iterations", 0)), "sha256": res.get("sha256")}
        done += 1
        if on_unit:
            on_unit()
        if lut.path and time.monotonic() - last_save >= save_every_s:
            lut.save()
            last_save = time.monotonic()
    if lut.path:
        lut.save()
    return done


def fit_remote_overhead(lut: Lut, config: ModelConfig, input_size: tuple[int, int], count: int,
                        measurer: RemoteMeasurer, seed: int = 0, duration_s: float = 2.0, log=None
                        ) -> dict[str, Any]:
    """Measure ``count`` fitting genotypes whole on the agent (their missing units too) and fit the overhead."""
    from segfactory.benchmarks.lut.profile import fit_genotypes
    from segfactory.benchmarks.lut.units import model_units
    from segfactory.benchmarks.targets import _export_bytes

    genotypes = fit_genotypes(count, seed)
    measure_remote_units(lut, [u for g in genotypes for u in model_units(g, config, input_size)], config, measurer)
    if log:
        log(f"fitting the per-model overhead on {count} genotypes measured whole on the agent")
    measured = [float(measurer.measure(_export_bytes(g, config, input_size, 1), input_size=list(input_size),
                                       duration_s=duration_s)["median_ms"]) for g in genotypes]
    return fit_overhead(lut, genotypes, measured, config)


def run_remote_profile(target: str, config: ModelConfig, input_size: tuple[int, int], out: str | Path, *,
                       device_url: str, token_file: str | Path | None, precision: str = "fp16", threads: int = 1,
                       fit_models: int = 8, seed: int = 0, minutes: float | None = None, max_units: int | None = None,
                       iterations: int = 50, warmup_ms: float = 100.0, duration_s: float = 0.5,
                       fit_duration_s: float = 2.0, progress: bool = True, log=None) -> dict[str, Any]:
    """``segfactory profile --device-url``: the lut of ``target`` measured on the agent at ``device_url``."""
    from segfactory.benchmarks.agent.client import health

    log = log or (lambda msg: print(msg, file=sys.stderr))
    out = Path(out)
    info = health(device_url, token_file)
    lut = open_remote_lut(out, target, config, input_size, threads, precision, info)
    cache_dir = out.parent / f"{out.name}.agent-cache"
    measurer = RemoteMeasurer(device_url, token_file, precision=precision, threads=threads, warmup_ms=warmup_ms,
                              iterations=iterations, duration_s=duration_s, cache_dir=cache_dir)
    t0 = time.monotonic()
    sigs = units_by_frequency(config, input_size, seed=seed)
    lut.data["units_total"] = len(sigs)
    todo = lut.missing(sigs)
    order = {s: i for i, s in enumerate(sigs)}
    todo.sort(key=order.__getitem__)  # most frequent first, as the local profile does
    if max_units is not None:
        todo = todo[:max_units]
    log(f"{len(sigs)} unit signatures reachable at {input_size[0]}x{input_size[1]}; {len(sigs) - len(lut.missing(sigs))} "
        f"already in {out}, {len(todo)} to measure now on {lut.data['device']} ({lut.data['backend']}, {precision})")
    deadline = t0 + minutes * 60 if minutes else None
    bar = task = None
    if progress and todo:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("profiling units on the agent"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), console=Console(stderr=True))
        task = bar.add_task("units", total=len(todo))
        bar.start()
    try:
        measured = measure_remote_units(lut, todo, config, measurer, deadline=deadline,
                                        on_unit=(lambda: bar.advance(task)) if bar else None)
    finally:
        if bar:
            bar.stop()
        lut.save()
    if measured < len(todo):
        log(f"--minutes reached: {len(todo) - measured} units left; run the same command to resume")
    complete = not lut.missing(sigs)
    overhead = lut.data.get("overhead")
    if (overhead is None or (complete and measured > 0)) and fit_models >= 2:
        overhead = fit_remote_overhead(lut, config, input_size, fit_models, measurer, seed,
                                       duration_s=fit_duration_s, log=log)
    lut.save()
    return {"format": FORMAT, "out": str(out), "units_total": len(sigs), "units_measured_now": measured,
            "complete": complete, "overhead": overhead, "threads": threads, "input_size": list(input_size),
            "device": lut.data["device"], "backend": lut.data["backend"], "precision": precision,
            "per_call_ms": lut.data["per_call_ms"], "seconds": time.monotonic() - t0}
