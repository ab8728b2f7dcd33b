"""``segfactory profile --device-url``: a lookup table measured on a device agent (a Jetson), one unit at a time.

The agent times whole models end to end and has no per-node profiler, so every unit is exported here (where
torch is) as its own small ONNX model with one input and sent to ``/v1/measure``. The agent's time of a unit
includes a fixed per-call cost (enqueue, synchronisation, the runner's loop); an Identity model measured the
same way gives it (``per_call_ms`` in the table), and each entry's ``ms`` is the unit's median minus it. The
predictor (predictor.py: its fitting and selection genotypes) is fitted on whole models measured on the agent
too, with the graph features of ONNX Runtime's portable fusions (graph.py, level "extended").
Answers are cached on both sides: the agent's cache, and ``measure_remote``'s ``cache_dir`` beside ``--out``
(unit exports are seeded, so a re-export has the same sha256).

A search with both ``--lut`` and ``--device-url`` fills the table as it goes (:class:`RemoteFiller`): units a
candidate needs and the table lacks are measured on the agent, with the settings the table was profiled
with, and added to it (saved atomically after each unit).
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

from segfactory.benchmarks.lut.table import FORMAT, Lut, units_by_frequency
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError, RunError

MEASURED_BY = "agent"
# how units (and, with fit_duration_s, whole models) are measured on the agent; kept in the table
# (measure_settings), so that units added later are measured as the first ones were
DEFAULT_SETTINGS = {"warmup_ms": 100.0, "iterations": 50, "duration_s": 0.5, "fit_duration_s": 2.0}


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


def _unit_bytes(sig: str, config: ModelConfig) -> bytes:
    try:
        return unit_onnx(sig, config)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - torch's exporter raises many kinds
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise RunError(f"lookup-table unit {sig} could not be built or exported: {first}") from None


def measure_remote_units(lut: Lut, sigs: list[str], config: ModelConfig, measurer: RemoteMeasurer, *,
                         on_unit: Callable[[], None] | None = None, deadline: float | None = None,
                         save_every_s: float = 5.0) -> int:
    """Measure the signatures missing from ``lut`` on the agent; saves atomically as it goes (and when a
    measurement fails, so nothing measured is lost); returns how many."""
    done = 0
    last_save = time.monotonic()
    try:
        per_call = lut.data.get("per_call_ms")
        if per_call is None:
            base = measurer.measure(baseline_onnx())
            lut.data["per_call_ms"] = per_call = float(base["median_ms"])
            lut.data["per_call"] = {k: base.get(k) for k in ("median_ms", "p90_ms", "iterations", "sha256")}
        for sig in [s for s in dict.fromkeys(sigs) if s not in lut.entries]:  # keeps the caller's order
            if deadline is not None and time.monotonic() > deadline:
                break
            res = measurer.measure(_unit_bytes(sig, config))
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
    finally:
        if lut.path and (done or lut.data.get("per_call_ms") is not None):
            lut.save()
    return done


def measure_whole(measurer: RemoteMeasurer, genotype, config: ModelConfig, input_size: tuple[int, int],
                  duration_s: float) -> dict[str, Any]:
    from segfactory.benchmarks.targets import export_bytes

    return measurer.measure(export_bytes(genotype, config, input_size, 1), input_size=list(input_size),
                            duration_s=duration_s)


def fit_remote_predictor(lut: Lut, config: ModelConfig, input_size: tuple[int, int], count: int, select: int,
                         measurer: RemoteMeasurer, seed: int = 0, duration_s: float = 2.0, log=None
                         ) -> dict[str, Any]:
    """Measure the fitting and selection genotypes whole on the agent (their missing units too), fit the predictor."""
    from segfactory.benchmarks.lut.profile import fit_from_whole
    from segfactory.benchmarks.lut.protocol import anchor_genotype, describe_sets, fit_set, selection_set

    fit = fit_set(count, seed)
    sel = selection_set(select, {g.key() for _, g in fit} | {anchor_genotype().key()})
    measure_remote_units(lut, [u for _, g in fit + sel for u in lut.units(g, config)], config, measurer)
    if log:
        log(f"fitting the predictor on {len(fit)} genotypes (form chosen on {len(sel)} more) measured whole on "
            "the agent")
    whole = lut.data.setdefault("whole", {})
    for group, named in (("fit", fit), ("selection", sel)):
        for name, g in named:
            if whole.get(name, {}).get("key") != g.key():
                res = measure_whole(measurer, g, config, input_size, duration_s)
                whole[name] = {"key": g.key(), "ms": float(res["median_ms"]), "p90_ms": res.get("p90_ms"),
                               "at": time.time()}
                lut.save()
            whole[name]["set"] = group
    lut.data["sets"] = describe_sets(count, seed, sel)
    lut.data["sets"]["fit"]["keys"] = [g.key() for _, g in fit]
    lut.data["sets"]["selection"]["keys"] = [g.key() for _, g in sel]
    return fit_from_whole(lut, config, fit, sel, None)


def cache_dir_for(out: Path) -> Path:
    return out.parent / f"{out.name}.agent-cache"


class RemoteFiller:
    """Measures what a device table lacks on that device's agent and adds it to the table (cached both sides).

    Used by a jetson-* target given both ``--lut`` and ``--device-url``: the agent must be the table's device
    (checked once, on first use: another device is an InputError; an unreachable one a RunError).
    """

    def __init__(self, lut: Lut, url: str, token_file: str | Path | None) -> None:
        s = {**DEFAULT_SETTINGS, **(lut.data.get("measure_settings") or {})}
        self.lut, self.url, self.token_file = lut, url, token_file
        self.fit_duration_s = float(s["fit_duration_s"])
        self.measurer = RemoteMeasurer(url, token_file, precision=lut.data.get("precision") or "fp16",
                                       threads=lut.threads, warmup_ms=float(s["warmup_ms"]),
                                       iterations=int(s["iterations"]), duration_s=float(s["duration_s"]),
                                       cache_dir=cache_dir_for(lut.path) if lut.path else None)
        self._checked = False

    def check_device(self) -> None:
        if self._checked:
            return
        from segfactory.benchmarks.agent.client import health

        info = health(self.url, self.token_file)
        device = (info.get("device") or {}).get("name") or "unknown device"
        backend = str(info.get("backend") or (info.get("device") or {}).get("backend") or "unknown")
        if (device, backend) != (self.lut.data.get("device"), self.lut.data.get("backend")):
            raise InputError(f"--device-url {self.url} is {device} ({backend}), but lookup table {self.lut.path} "
                             f"was measured on {self.lut.data.get('device')} ({self.lut.data.get('backend')}); "
                             "give the agent of the table's device")
        self._checked = True

    def fill(self, sigs: list[str], config: ModelConfig) -> int:
        self.check_device()
        return measure_remote_units(self.lut, sigs, config, self.measurer)

    def measure_whole(self, genotype, config: ModelConfig, input_size: tuple[int, int]) -> float:
        self.check_device()
        return float(measure_whole(self.measurer, genotype, config, input_size, self.fit_duration_s)["median_ms"])


def run_remote_profile(target: str, config: ModelConfig, input_size: tuple[int, int], out: str | Path, *,
                       device_url: str, token_file: str | Path | None, precision: str = "fp16", threads: int = 1,
                       fit_models: int = 24, select_models: int = 16, seed: int = 0, minutes: float | None = None,
                       max_units: int | None = None, iterations: int = 50, warmup_ms: float = 100.0,
                       duration_s: float = 0.5, fit_duration_s: float = 2.0, progress: bool = True, log=None
                       ) -> dict[str, Any]:
    """``segfactory profile --device-url``: the lut of ``target`` measured on the agent at ``device_url``."""
    from segfactory.benchmarks.agent.client import health
    from segfactory.benchmarks.lut.profile import predictor_brief, record_session, unit_progress

    log = log or (lambda msg: print(msg, file=sys.stderr))
    out = Path(out)
    info = health(device_url, token_file)
    lut = open_remote_lut(out, target, config, input_size, threads, precision, info)
    lut.data.setdefault("measure_settings", {"warmup_ms": warmup_ms, "iterations": iterations,
                                             "duration_s": duration_s, "fit_duration_s": fit_duration_s})
    s = lut.data["measure_settings"]  # a resumed table keeps the settings it was started with
    measurer = RemoteMeasurer(device_url, token_file, precision=precision, threads=threads,
                              warmup_ms=s["warmup_ms"], iterations=s["iterations"], duration_s=s["duration_s"],
                              cache_dir=cache_dir_for(out))
    t0, wall0 = time.monotonic(), time.time()
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
        bar, task = unit_progress(len(todo), "profiling units on the agent")
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
    predictor = lut.data.get("predictor")
    if (predictor is None or (complete and measured > 0)) and fit_models >= 2:
        predictor = fit_remote_predictor(lut, config, input_size, fit_models, select_models, measurer, seed,
                                         duration_s=s["fit_duration_s"], log=log)
    record_session(lut, t0, wall0, units_measured=measured, complete=complete)
    lut.save()
    return {"format": FORMAT, "out": str(out), "units_total": len(sigs), "units_measured_now": measured,
            "complete": complete, "overhead": lut.data.get("overhead"), "predictor": predictor_brief(predictor),
            "threads": threads, "input_size": list(input_size), "device": lut.data["device"],
            "backend": lut.data["backend"], "precision": precision, "per_call_ms": lut.data["per_call_ms"],
            "seconds": time.monotonic() - t0}
