"""``segfactory bench`` as a library call: resolve the models, time them interleaved, render a table."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from segfactory.benchmarks.harness import FORMAT, measure_interleaved
from segfactory.benchmarks.models import TRTEXEC, ModelSpec, make_runner, reference_names, torch_module
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError


def resolve_specs(models: Sequence[str], archs: Sequence[str], checkpoints: Sequence[str], config: ModelConfig,
                  reference: bool) -> list[ModelSpec]:
    """Model arguments -> specs, in the order given: files (.onnx, .engine/.plan, genotype .json), --arch,
    --checkpoint, then the torchvision references."""
    from segfactory.factory.genotype import load_genotype
    from segfactory.factory.zoo import resolve_arch

    specs: list[ModelSpec] = []
    for m in models:
        p = Path(m)
        if p.suffix.lower() in (".onnx", ".engine", ".plan", ".trt"):
            if not p.is_file():
                raise InputError(f"model {p} does not exist")
            specs.append(ModelSpec(p.name, path=p))
        elif p.suffix.lower() == ".json":
            specs.append(ModelSpec(p.stem, genotype=load_genotype(p), config=config))
        else:
            raise InputError(f"model {m!r} is not an .onnx, .engine or genotype .json file (use --arch for names)")
    for a in archs:
        specs.append(ModelSpec(a, genotype=resolve_arch(a), config=config))
    for c in checkpoints:
        from segfactory.factory.checkpoint import load_checkpoint

        model, _ = load_checkpoint(c)
        specs.append(ModelSpec(Path(c).name, genotype=getattr(model, "genotype", None),
                               config=getattr(model, "config", config), module=model))
    if reference:
        specs += [ModelSpec(r, reference=r, config=config) for r in reference_names()]
    if not specs:
        raise InputError("nothing to benchmark: give MODEL files, --arch, --checkpoint or --reference")
    names = [s.name for s in specs]
    for i, s in enumerate(specs):  # unique names for the table
        if names.count(s.name) > 1:
            s.name = f"{s.name}#{i}"
    return specs


def run_bench(specs: Sequence[ModelSpec], *, backend: str, input_size: tuple[int, int], batch: int = 1,
              threads: int | None = None, precision: str = "fp32", device: str = "cpu", rounds: int = 10,
              min_seconds: float = 3.0, warmup_ms: float = 200, seed: int = 0, progress: bool = True
              ) -> list[dict[str, Any]]:
    """Benchmark JSON per model (design.md), measured interleaved round by round (trtexec: one after another)."""
    if batch < 1:
        raise InputError(f"--batch {batch} must be at least 1")
    if backend == "ort" and threads is None:
        threads = 1
    for spec in specs:  # before any export or session: a bad --batch or --input-size must not take the host down
        check_memory(spec, input_size, batch, device)
    if backend == "trt":  # fail before any export when the backend is missing
        from segfactory.export.tensorrt import require_tensorrt

        require_tensorrt()
    elif backend == TRTEXEC:
        from segfactory.benchmarks.trtexec import find_trtexec

        find_trtexec()
    # the stack closes every runner made so far (also when a later one fails), before the folder goes
    with tempfile.TemporaryDirectory(prefix="segfactory-bench-") as tmp, ExitStack() as stack:
        if backend == TRTEXEC:
            return _run_trtexec(specs, Path(tmp), input_size, batch, precision, warmup_ms, min_seconds)
        runners = [stack.enter_context(make_runner(s, backend, input_size=input_size, batch=batch, threads=threads,
                                                   workdir=Path(tmp), device=device, precision=precision))
                   for s in specs]
        bar = _progress(rounds) if progress else None
        try:
            results = measure_interleaved(runners, warmup_ms=warmup_ms, min_seconds=min_seconds, rounds=rounds,
                                          seed=seed, on_round=bar[1] if bar else None)
        finally:
            if bar:
                bar[0].stop()
    for res, s in zip(results, specs):
        res["model"] = s.name
    return results


def check_memory(spec: ModelSpec, input_size: tuple[int, int], batch: int, device: str = "cpu") -> None:
    """Refuse (InputError) a measurement whose estimated memory exceeds the device's bound (factory.memory)."""
    from segfactory.factory.memory import check_fits, inference_bytes

    h, w = input_size
    what = f"timing {spec.name} at batch {batch} and {h}x{w}"
    hint = "lower --batch or --input-size"
    if spec.path is None:
        # the model is exported at this size and timed: torch and the runtime each hold one batch's activations
        check_fits(2 * inference_bytes(lambda: torch_module(spec), (h, w), batch), device, what, hint)
    elif spec.path.suffix.lower() == ".onnx":
        from segfactory.benchmarks.agent.limits import memory_estimate

        need = memory_estimate(batch * 3 * h * w * 4, 0, spec.path.stat().st_size)
        check_fits(need, device, what, hint)


def _progress(rounds: int):
    from rich.console import Console
    from rich.progress import Progress

    progress = Progress(console=Console(stderr=True), transient=True)
    task = progress.add_task("measuring (interleaved rounds)", total=rounds)
    progress.start()
    return progress, lambda done, total: progress.update(task, completed=done, total=max(total, done))


def _run_trtexec(specs, workdir: Path, input_size, batch, precision, warmup_ms, min_seconds):
    from segfactory.benchmarks.models import export_to
    from segfactory.benchmarks.trtexec import run_trtexec

    results = []
    for s in specs:
        path = export_to(s, workdir, input_size, batch)
        res = run_trtexec(path, input_name="image", input_shape=(batch, 3, *input_size), precision=precision,
                          warmup_ms=warmup_ms, min_seconds=min_seconds)
        res.update({"format": FORMAT, "model": s.name, "device": "trtexec's GPU", "latency_source": "measured"})
        results.append(res)
    return results


def bench_json(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One object for one model; ``{"format", "results"}`` for several."""
    if len(results) == 1:
        return results[0]
    return {"format": FORMAT, "results": results}


def render(results: list[dict[str, Any]]) -> None:
    """A rich table, models side by side, with the ratio of each median to the first model's."""
    from rich.console import Console
    from rich.table import Table

    first = results[0]
    table = Table(title=f"{first.get('backend')} {first.get('backend_version') or ''}, threads "
                        f"{first.get('threads')}, {first.get('precision')}, input {first.get('input_shape')}, "
                        f"{first.get('device')}")
    for col in ("model", "median ms", "p90 ms", "p99 ms", "mean ms", "std ms", "rounds min-max ms", "ratio",
                "iters"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        ratio = r.get("ratio_to_first")
        if ratio is None and first.get("median_ms"):
            ratio = r["median_ms"] / first["median_ms"]
        spread = (f"{r['round_median_min_ms']:.2f}-{r['round_median_max_ms']:.2f}"
                  if "round_median_min_ms" in r else "")
        table.add_row(str(r["model"]), f"{r['median_ms']:.2f}", f"{r.get('p90_ms', float('nan')):.2f}",
                      f"{r.get('p99_ms', float('nan')):.2f}", f"{r.get('mean_ms', float('nan')):.2f}",
                      f"{r.get('std_ms', float('nan')):.2f}", spread, f"{ratio:.2f}x" if ratio else "",
                      str(r.get("iterations", "")))
    Console().print(table)
