"""How well does the lookup-table predictor predict latency on this CPU? (issue 13, "Measure and report")

Four steps, each its own invocation (each resumable; ``--minutes`` bounds one invocation):

    profile     per thread count, the table at 360x480 in one continuous run: every unit (each bag beside a
                reference unit; bags taken in the host's slow state measured again), then the fitting (24) and
                selection (16) genotypes measured whole, the predictor fitted and its form chosen (lut.json)
    evaluate    a different run: ``--count`` genotypes of seeds 0.. (never fitted or selected on: checked by key)
                plus arch0 and arch1, measured with the protocol (groups interleaved beside an anchor, rounds
                shuffled) and predicted from the table (the cost of one prediction is timed, caches cold)
    report      share within +-10%, MAPE and Kendall's tau (90% bootstrap intervals) per thread count, beside the
                floor (benchmarks/scripts/latency_floor.py), goals, a scatter plot; JSON + PNG in results/
    references  arch0/arch1 against torchvision's LRASPP and DeepLabV3 on ONNX Runtime and torch, interleaved

    python benchmarks/scripts/latency_predictor.py profile --threads 1,2      # ~20 min per thread count
    python benchmarks/scripts/latency_predictor.py evaluate --threads 1,2     # ~5 min per thread count
    python benchmarks/scripts/latency_predictor.py report

Measured figures are reported twice: ``anchored`` (each genotype's ratio to the anchor timed in its group, times
the anchor's time in the table: one scale with the profiling run) and ``raw`` (its median now). Never run this
beside another timing (measuring-here.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from _common import machine
from segfactory.benchmarks.lut.check import figures
from segfactory.benchmarks.lut.protocol import EVAL_SEEDS, measure_groups, seed_set
from segfactory.benchmarks.lut.table import Lut, assert_unseen, predict_latency
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import RunError
from segfactory.factory.io import atomic_write_json, parse_size, read_json
from segfactory.factory.zoo import resolve_arch

GOALS = {1: {"within_10pct": 0.90, "kendall_tau": 0.95}, 2: {"within_10pct": 0.80, "kendall_tau": 0.90}}


def lut_path(args, threads: int) -> Path:
    return args.workdir / f"lut_{args.input_size[0]}x{args.input_size[1]}_t{threads}.json"


def evaluation_set(count: int):
    return seed_set(EVAL_SEEDS[0], EVAL_SEEDS[0] + count - 1) + [("arch0", resolve_arch("arch0")),
                                                                   ("arch1", resolve_arch("arch1"))]


def profile(args, config: ModelConfig, deadline: float) -> None:
    from segfactory.benchmarks.lut.profile import run_profile

    for threads in args.threads:
        left = (deadline - time.monotonic()) / 60
        if left <= 0:
            print("--minutes reached; run the same command to resume", file=sys.stderr)
            return
        summary = run_profile("cpu", config, tuple(args.input_size), lut_path(args, threads), threads=threads,
                              fit_models=args.fit_models, select_models=args.select_models, minutes=left,
                              runs=args.runs, rounds=args.rounds, min_seconds=args.min_seconds,
                              progress=not args.quiet)
        print(json.dumps({k: summary[k] for k in ("out", "complete", "units_total", "units_measured_now",
                                                  "predictor", "slow_state", "profile_seconds_total")}))


def _ready(lut: Lut, path: Path) -> float:
    """The epoch at which the table's last profiling run ended; refuses a table not ready to be evaluated."""
    sessions = lut.data.get("profile", {}).get("sessions") or []
    if not lut.data.get("predictor") or not sessions or not sessions[-1].get("complete"):
        raise SystemExit(f"{path} is not complete with a fitted predictor: run the profile step first")
    return max(s.get("ended_epoch", 0) for s in sessions)


def evaluate(args, config: ModelConfig, state: dict, save, deadline: float) -> None:
    from segfactory.benchmarks.lut.graph import clear_cache

    named = evaluation_set(args.count)
    for threads in args.threads:
        path = lut_path(args, threads)
        lut = Lut.load(path)
        profiled = _ready(lut, path)
        try:
            assert_unseen(lut, named)  # nothing is fitted or chosen on evaluation genotypes (by key)
        except RunError as e:
            raise SystemExit(str(e)) from None
        ev = state.setdefault(f"t{threads}", {"started": time.time(), "rows": {}, "machine": machine()})
        if ev["started"] <= profiled:  # the evaluation is measured in a later run than the profiling
            raise SystemExit(f"{path} was profiled again after this evaluation started: remove "
                             f"{args.workdir / 'evaluation.json'} and evaluate again")
        log = (lambda m, t=threads: print(f"[{t} thread(s)] {m}", file=sys.stderr))
        if not measure_groups(named, config, lut.input_size, threads=threads, done=ev["rows"], save=save,
                              rounds=args.rounds, min_seconds=args.min_seconds, deadline=deadline, log=log):
            print("--minutes reached; run the same command to resume", file=sys.stderr)
            return
        for name, g in named:
            row = ev["rows"][name]
            if "predicted_ms" not in row:
                clear_cache()  # the cost of predicting a genotype never seen before
                lut.invalidate()
                t = time.perf_counter()
                row["predicted_ms"] = predict_latency(g, config, lut)
                row["predict_s"] = time.perf_counter() - t
        ev["ended"] = time.time()
        save()


def _floor(path: Path, threads: int) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return (read_json(path, "floor result").get("threads") or {}).get(str(threads))


def _goal(threads: int, f: dict[str, Any], floor: dict[str, Any] | None) -> dict[str, Any]:
    goal = dict(GOALS.get(threads, GOALS[2]))
    if threads >= 2 and floor and floor["anchored"]["within_10pct"] < goal["within_10pct"]:
        goal["within_10pct"] = floor["anchored"]["within_10pct"] - 0.05  # within 5 points of a lower floor
    return {**goal, "met": f["within_10pct"] >= goal["within_10pct"] and f["kendall_tau"] >= goal["kendall_tau"]}


def summarise(args, state: dict, threads: int) -> dict[str, Any] | None:
    ev = state.get(f"t{threads}")
    if not isinstance(ev, dict) or not ev.get("ended"):
        return None
    lut = Lut.load(lut_path(args, threads))
    anchor_ms = (lut.data.get("anchor") or {}).get("ms")
    rows = [dict(name=n, **r) for n, r in ev["rows"].items()]
    for r in rows:
        r["anchored_ms"] = r["ratio"] * anchor_ms if anchor_ms else r["ms"]
    predicted = [r["predicted_ms"] for r in rows]
    anchored = figures([r["anchored_ms"] for r in rows], predicted, boot=2000)
    floor = _floor(args.floor, threads)
    prof = lut.data.get("profile", {})
    pred = lut.data["predictor"]
    cost = sorted(r["predict_s"] for r in rows)
    return {"threads": threads, "n": len(rows), "anchored": anchored,
            "raw": figures([r["ms"] for r in rows], predicted, boot=2000),
            "goal": _goal(threads, anchored, floor), "floor": floor and {k: floor[k] for k in ("n", "raw", "anchored")},
            "predictor": {"form": pred["form"], "hyper": pred["hyper"], "fitted_on": len(pred["fitted_on"]),
                          "selection": pred.get("selection")},
            "table": {"path": str(lut.path), "units": len(lut.entries), "units_total": lut.data.get("units_total"),
                      "profile_seconds_total": prof.get("seconds_total"), "units_seconds": prof.get("units_seconds"),
                      "continuous": prof.get("continuous"), "slow_state": prof.get("slow_state"),
                      "anchor_ms": anchor_ms},
            "predict_s": {"median": cost[len(cost) // 2], "max": cost[-1]},
            "evaluation_machine": ev.get("machine"), "rows": rows}


def plot(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 5), squeeze=False)
    for ax, r in zip(axes[0], results):
        m = [x["anchored_ms"] for x in r["rows"]]
        p = [x["predicted_ms"] for x in r["rows"]]
        lo, hi = 0.9 * min(m + p), 1.1 * max(m + p)
        ax.fill_between([lo, hi], [0.9 * lo, 0.9 * hi], [1.1 * lo, 1.1 * hi], color="0.88", label="+-10%")
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8)
        ax.scatter(m, p, s=14)
        for x in r["rows"]:
            if x["name"] in ("arch0", "arch1"):
                ax.annotate(x["name"], (x["anchored_ms"], x["predicted_ms"]), fontsize=8)
        f = r["anchored"]
        ax.set_title(f"{r['threads']} thread(s): {100 * f['within_10pct']:.0f}% within +-10%, "
                     f"tau {f['kendall_tau']:.3f}", fontsize=10)
        ax.set_xlabel("measured ms (anchored)")
        ax.set_ylabel("predicted ms")
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def render(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"LUT predictor vs measured, ONNX Runtime CPU, {report['input_size']}")
    for col in ("threads", "n", "figures", "within +-10% (90% CI)", "MAPE", "Kendall tau (90% CI)", "floor +-10%",
                "floor tau", "goal met", "form", "predict s"):
        table.add_column(col, justify="right")
    for e in report["evaluations"]:
        for label in ("anchored", "raw"):
            f, fl = e[label], (e["floor"] or {}).get(label)
            w, t = f.get("within_10pct_90", [0, 0]), f.get("kendall_tau_90", [0, 0])
            table.add_row(str(e["threads"]), str(e["n"]), label,
                          f"{100 * f['within_10pct']:.0f}% ({100 * w[0]:.0f}-{100 * w[1]:.0f})",
                          f"{100 * f['mape']:.1f}%", f"{f['kendall_tau']:.3f} ({t[0]:.3f}-{t[1]:.3f})",
                          f"{100 * fl['within_10pct']:.0f}%" if fl else "-", f"{fl['kendall_tau']:.3f}" if fl else "-",
                          str(e["goal"]["met"]) if label == "anchored" else "", e["predictor"]["form"],
                          f"{e['predict_s']['median']:.2f}")
    Console(width=max(160, Console().width)).print(table)


def report(args, state: dict) -> None:
    results = [r for r in (summarise(args, state, t) for t in args.threads) if r]
    if not results:
        raise SystemExit("nothing evaluated yet: run the evaluate step first")
    out = {"format": "segfactory.latency-predictor/2", "input_size": f"{args.input_size[0]}x{args.input_size[1]}",
           "machine": machine(), "evaluations": results}
    atomic_write_json(args.out, out)
    plot(results, args.out.with_suffix(".png"))
    render(out)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}", file=sys.stderr)


def references(args, config: ModelConfig) -> None:
    """arch0, arch1 and the two torchvision references on torch and ORT, all interleaved in one run."""
    import tempfile

    from segfactory.benchmarks.harness import measure_interleaved
    from segfactory.benchmarks.models import ModelSpec, make_runner, reference_names

    specs = [ModelSpec(a, genotype=resolve_arch(a), config=config) for a in ("arch0", "arch1")]
    specs += [ModelSpec(r, reference=r, config=config) for r in reference_names()]
    out = {}
    for threads in args.threads:
        with tempfile.TemporaryDirectory(prefix="segfactory-refs-") as tmp:
            runners = []
            for backend in ("ort", "torch"):
                for s in specs:
                    runner = make_runner(s, backend, input_size=tuple(args.input_size), threads=threads,
                                         workdir=Path(tmp))
                    runner.name = f"{s.name} ({backend})"
                    runners.append(runner)
            results = measure_interleaved(runners, rounds=args.rounds, min_seconds=args.min_seconds)
        out[str(threads)] = [{k: r[k] for k in ("model", "backend", "threads", "median_ms", "round_median_min_ms",
                                               "round_median_max_ms", "ratio_to_first", "iterations")}
                             for r in results]
    atomic_write_json(args.workdir / "references.json", {"machine": machine(), "references": out})
    print(json.dumps(out, indent=1))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["profile", "evaluate", "report", "references"])
    p.add_argument("--threads", default=[1, 2], type=lambda s: [int(t) for t in s.split(",")],
                   help="comma-separated thread counts (default 1,2)")
    p.add_argument("--input-size", default="360x480", type=lambda s: parse_size(s, "--input-size"))
    p.add_argument("--count", type=int, default=40, help="random evaluation genotypes (seeds 0..count-1)")
    p.add_argument("--fit-models", type=int, default=24, help="fitting genotypes (their own seed range)")
    p.add_argument("--select-models", type=int, default=16, help="selection genotypes (their own seed range)")
    p.add_argument("--minutes", type=float, default=120.0, help="stop after this long; rerun to resume")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per model per group")
    p.add_argument("--runs", type=int, default=15, help="profiled runs per bag of units")
    p.add_argument("--workdir", type=Path, default=Path("results/latency_predictor"))
    p.add_argument("--floor", type=Path, default=Path("results/latency_floor.json"))
    p.add_argument("--out", type=Path, default=Path("results/latency_predictor.json"))
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    deadline = time.monotonic() + args.minutes * 60
    args.workdir.mkdir(parents=True, exist_ok=True)
    config = ModelConfig.create()  # the released configuration: agg 64, sep_repeats 2, TF-SAME encoder
    state_path = args.workdir / "evaluation.json"
    state = read_json(state_path, "evaluation state") if state_path.exists() else {}
    settings = {"input_size": list(args.input_size), "count": args.count}
    if state.setdefault("settings", settings) != settings:
        raise SystemExit(f"{state_path} holds an evaluation with {state['settings']}, not {settings}: repeat those "
                         "settings or choose another --workdir")

    def save() -> None:
        atomic_write_json(state_path, state)

    if args.step == "profile":
        profile(args, config, deadline)
    elif args.step == "evaluate":
        evaluate(args, config, state, save, deadline)
    elif args.step == "report":
        report(args, state)
    else:
        references(args, config)


if __name__ == "__main__":
    main()
