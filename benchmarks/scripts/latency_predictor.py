"""How well does the lookup table predict latency on this CPU? (issue 5, "Measure and report")

For each thread count (default 1 and 2), at 360x480 with ONNX Runtime:
  1. profile the lookup table (``segfactory profile``; resumed if the file exists) and fit its per-model
     overhead on genotypes from a disjoint seed range;
  2. measure, interleaved in groups, ``--count`` seeded random genotypes (seeds 0..count-1, never used for
     fitting: checked) plus arch0 and arch1, and predict each from the table;
  3. print the share within +-10% of measured, the MAPE and Kendall's tau;
and measure arch0/arch1 against torchvision's LRASPP and DeepLabV3 (MobileNetV3-Large) with PyTorch eager and
ONNX Runtime side by side, in one interleaved run.

    python benchmarks/latency_predictor.py --minutes 60                 # full run (resumable)
    python benchmarks/latency_predictor.py --threads 1 --count 10 --minutes 10

State lives in ``--workdir`` (tables, measured results); rerunning continues where it stopped. The result
JSON (with the machine's description and load averages) is written there as ``latency_predictor.json``.
Timings on a shared or busy host are disturbed: the load average is recorded for that reason.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

from segfactory.benchmarks import stats
from segfactory.benchmarks.lut.table import fit_keys, predict_latency
from segfactory.benchmarks.lut.profile import run_profile
from segfactory.benchmarks.runners import cpu_description
from segfactory.factory.config import ModelConfig
from segfactory.factory.genotype import sample_genotype
from segfactory.factory.io import atomic_write_json, parse_size, read_json
from segfactory.factory.zoo import resolve_arch

GROUP = 9  # genotypes measured interleaved together (plus one anchor); the state is saved after each group


def machine() -> dict[str, Any]:
    import onnxruntime
    import torch

    return {"cpu": cpu_description(), "platform": platform.platform(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
            "loadavg": list(os.getloadavg())}


def evaluation_genotypes(count: int) -> list[tuple[str, Any]]:
    """Seed i -> the first genotype of Random(i); then arch0 and arch1."""
    out = [(f"seed{i}", sample_genotype(random.Random(i))) for i in range(count)]
    return out + [("arch0", resolve_arch("arch0")), ("arch1", resolve_arch("arch1"))]


def evaluate(threads: int, args, state: dict, config: ModelConfig, deadline: float, save) -> dict[str, Any]:
    from segfactory.benchmarks.lut.table import Lut
    from segfactory.benchmarks.lut.units import model_units
    from segfactory.benchmarks.models import measure_genotypes_ort

    size = args.input_size
    lut_path = args.workdir / f"lut_{size[0]}x{size[1]}_t{threads}.json"
    minutes_left = max(0.1, (deadline - time.monotonic()) / 60)
    if args.profile_minutes is not None:
        minutes_left = min(minutes_left, args.profile_minutes)
    summary = run_profile("cpu", config, size, lut_path, threads=threads, fit_models=args.fit_models,
                          minutes=minutes_left, runs=args.runs, progress=not args.quiet)
    lut = Lut.load(lut_path)
    if lut.data.get("overhead") is None:
        print(f"[{threads} thread(s)] no fitted overhead yet (time ran out); run again to resume", file=sys.stderr)
        return {"threads": threads, "profile": summary, "complete": False}
    if not summary["complete"]:
        print(f"[{threads} thread(s)] the table is partial: evaluation genotypes' units are measured on demand",
              file=sys.stderr)
    fitted = fit_keys(lut)
    todo = evaluation_genotypes(args.count)
    overlap = [name for name, g in todo if g.key() in fitted]
    if overlap:
        raise SystemExit(f"evaluation genotypes {overlap} were used to fit the overhead: refusing to score them")
    done = state.setdefault(f"t{threads}", {})
    pending = [(n, g) for n, g in todo if n not in done]
    for i in range(0, len(pending), GROUP):
        if time.monotonic() > deadline:
            print(f"[{threads} thread(s)] --minutes reached; run again to resume", file=sys.stderr)
            break
        group = pending[i:i + GROUP]
        missing = lut.missing(u for _, g in group for u in model_units(g, config, size))
        if missing:
            lut.fill(missing, config, runs=args.runs)
        results = measure_genotypes_ort([g for _, g in group], config, size, threads=threads, rounds=args.rounds,
                                        min_seconds=args.min_seconds, seed=i)
        for (name, g), res in zip(group, results):
            done[name] = {"key": g.key(), "measured_ms": res["median_ms"],
                          "round_min_ms": res["round_median_min_ms"], "round_max_ms": res["round_median_max_ms"],
                          "predicted_ms": predict_latency(g, config, lut), "loadavg": os.getloadavg()[0]}
        save()
        print(f"[{threads} thread(s)] {len(done)}/{len(todo)} genotypes measured", file=sys.stderr)
    names = [n for n, _ in todo if n in done]
    measured = [done[n]["measured_ms"] for n in names]
    predicted = [done[n]["predicted_ms"] for n in names]
    out: dict[str, Any] = {"threads": threads, "lut": str(lut_path), "units_total": summary["units_total"],
                           "units_in_table": len(lut.entries),
                           "overhead": {k: lut.data["overhead"][k] for k in ("intercept_ms", "scale")},
                           "fit_genotypes": len(fitted), "n": len(names), "complete": len(names) == len(todo)}
    if len(names) >= 2:
        out.update({"within_10pct": stats.share_within(measured, predicted, 0.10),
                    "mape": stats.mape(measured, predicted), "kendall_tau": stats.kendall_tau(measured, predicted)})
    out["rows"] = {n: done[n] for n in names}
    return out


def references(threads: int, args, config: ModelConfig) -> list[dict[str, Any]]:
    """arch0, arch1 and the two torchvision references on torch and ORT, all interleaved in one run."""
    import tempfile

    from segfactory.benchmarks.harness import measure_interleaved
    from segfactory.benchmarks.models import REFERENCES, ModelSpec, make_runner

    specs = [ModelSpec("arch0", genotype=resolve_arch("arch0"), config=config),
             ModelSpec("arch1", genotype=resolve_arch("arch1"), config=config)]
    specs += [ModelSpec(r, reference=r, config=config) for r in REFERENCES]
    with tempfile.TemporaryDirectory(prefix="segfactory-refs-") as tmp:
        runners = []
        for backend in ("ort", "torch"):
            for s in specs:
                runner = make_runner(s, backend, input_size=args.input_size, threads=threads, workdir=Path(tmp))
                runner.name = f"{s.name} ({backend})"
                runners.append(runner)
        results = measure_interleaved(runners, rounds=args.rounds, min_seconds=args.min_seconds)
    return [{k: r[k] for k in ("model", "backend", "threads", "median_ms", "round_median_min_ms",
                               "round_median_max_ms", "ratio_to_first", "iterations")} for r in results]


def render(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"LUT predictor vs measured, ONNX Runtime CPU, {report['input_size']} "
                        f"({report['machine']['cpu']}, load {report['machine']['loadavg'][0]:.1f})")
    for col in ("threads", "genotypes", "units", "within +-10%", "MAPE", "Kendall tau", "overhead ms", "scale"):
        table.add_column(col, justify="right")
    for e in report["evaluations"]:
        if "within_10pct" in e:
            table.add_row(str(e["threads"]), f"{e['n']}{'' if e['complete'] else ' (partial)'}",
                          str(e["units_total"]), f"{100 * e['within_10pct']:.0f}%", f"{100 * e['mape']:.1f}%",
                          f"{e['kendall_tau']:.3f}", f"{e['overhead']['intercept_ms']:.2f}",
                          f"{e['overhead']['scale']:.3f}")
    console.print(table)
    for threads, rows in report.get("references", {}).items():
        t = Table(title=f"arch0/arch1 vs torchvision references, {threads} thread(s), one interleaved run")
        for col in ("model", "median ms", "rounds min-max ms", "ratio to arch0 (ort)"):
            t.add_column(col, justify="right")
        for r in rows:
            t.add_row(r["model"], f"{r['median_ms']:.1f}", f"{r['round_median_min_ms']:.1f}-"
                      f"{r['round_median_max_ms']:.1f}", f"{r['ratio_to_first']:.2f}")
        console.print(t)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--input-size", default="360x480", type=lambda s: parse_size(s, "--input-size"))
    p.add_argument("--count", type=int, default=50, help="random evaluation genotypes (seeds 0..count-1)")
    p.add_argument("--fit-models", type=int, default=8, help="genotypes (disjoint seeds) to fit the overhead")
    p.add_argument("--minutes", type=float, default=120.0, help="stop after this long; rerun to resume")
    p.add_argument("--profile-minutes", type=float, default=None,
                   help="cap on profiling the whole table per thread count; the rest is filled on demand")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per model per group")
    p.add_argument("--runs", type=int, default=15, help="profiled runs per bag of units")
    p.add_argument("--workdir", type=Path, default=Path("benchmarks/results/latency_predictor"))
    p.add_argument("--skip-references", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    deadline = time.monotonic() + args.minutes * 60
    args.workdir.mkdir(parents=True, exist_ok=True)
    state_path = args.workdir / "state.json"
    state = read_json(state_path, "state file") if state_path.exists() else {}
    config = ModelConfig.create()  # the released configuration: agg 64, sep_repeats 2, TF-SAME encoder
    report: dict[str, Any] = {"format": "segfactory.latency-predictor/1", "machine": machine(),
                              "input_size": f"{args.input_size[0]}x{args.input_size[1]}",
                              "config": {k: getattr(config, k) for k in ("num_classes", "agg_size", "sep_repeats",
                                                                         "encoder_padding")},
                              "evaluations": [], "references": {}}

    def save() -> None:
        atomic_write_json(state_path, state)

    for threads in (int(t) for t in args.threads.split(",")):
        report["evaluations"].append(evaluate(threads, args, state, config, deadline, save))
        if not args.skip_references and time.monotonic() < deadline:
            report["references"][str(threads)] = references(threads, args, config)
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    atomic_write_json(args.workdir / "latency_predictor.json", report)
    render(report)


if __name__ == "__main__":
    main()
