"""The same small search with 1 and 2 Ray workers on this machine: candidates per minute and the speed-up.

    python benchmarks/scripts/search_scaling.py [--workers 1 2] [--budget 6] [--preset cpu-small] [--local]
                                                [--out runs/search_scaling] [--minutes M]

Every run is the search ``segfactory search --executor ray --workers K --cpus-per-trial 1`` runs (one torch
thread per worker), called in this process, with the random strategy, the same seed and no early stopping, so
every run trains the same genotypes with the same schedule; ``--local`` adds the in-process executor as a
reference. Latency comes from the jetson-orin-nano roofline estimate by default (cheap and deterministic), so
the driver's own work per candidate stays small. The script notes when each candidate is recorded and reports:

- ``cand/min``: candidates finished per minute between the first and the last completion (steady state, Ray's
  start, the data preparation and the actors' start excluded), and end to end (everything included);
- ``train s``: mean seconds of proxy training per candidate (stage 1 + stage 2 + validation) -- it grows with
  the number of workers when they compete for cores or memory bandwidth;
- the speed-up of each run over the first (1 worker).

A finished configuration (OUT/<name>/result.json) is reused when the script is rerun; an unfinished one is
started again. Writes OUT/search_scaling.json with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import _common
from segfactory.search.trials import TRAINED, load_trials

FORMAT = "segfactory.bench-search-scaling/1"


def machine() -> dict[str, Any]:
    """The common description, with Ray's version and the load when the script started."""
    try:
        import ray

        ray_version = ray.__version__
    except ImportError:
        ray_version = None
    return {**_common.machine(), "ray": ray_version, "load_average_at_start": list(os.getloadavg())}


def search_options(executor: str, workers: int, run_dir: Path, args: argparse.Namespace):
    """The same search for every run: random strategy, same seed, no early stopping, one torch thread."""
    from segfactory.factory.io import parse_size
    from segfactory.search.options import SearchOptions

    extra: dict[str, Any] = {"workers": workers, "cpus_per_trial": 1.0} if executor == "ray" else {}
    if args.encoder_weights:
        extra["encoder_weights"] = args.encoder_weights
    return SearchOptions(out=str(run_dir), data=args.data, target=args.target, budget=args.budget, strategy="random",
                         seed=args.seed, preset=args.preset, device="cpu", threads=1, early_stopping=False,
                         executor=executor, max_minutes=args.minutes,
                         input_size=parse_size(args.input_size, "--input-size") if args.input_size else None, **extra)


def run_one(name: str, executor: str, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    from segfactory.factory.errors import SegfactoryError
    from segfactory.search.loop import run_search

    d = Path(args.out) / name
    done = d / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    if d.exists():  # an unfinished run cannot be timed: start it again
        shutil.rmtree(d)
    d.parent.mkdir(parents=True, exist_ok=True)
    options = search_options(executor, workers, d / "run", args)
    print(f"[{name}] {executor} executor, {workers} worker(s), budget {args.budget}", file=sys.stderr)
    seen: dict[int, float] = {}  # trial index -> seconds since the start when it was recorded
    t0 = time.monotonic()

    def on_event(e: dict[str, Any]) -> None:
        if e["kind"] == "trial":
            seen.setdefault(e["trial"]["index"], time.monotonic() - t0)

    try:
        run_search(options, on_event=on_event)
    except SegfactoryError as e:
        raise SystemExit(f"[{name}] search failed: {e}") from None
    total = time.monotonic() - t0
    result = figures(name, executor, workers, load_trials(d / "run" / "trials.jsonl")[0], seen, total)
    done.write_text(json.dumps(result, indent=2))
    return result


def figures(name: str, executor: str, workers: int, trials: list[dict[str, Any]], seen: dict[int, float],
            total: float) -> dict[str, Any]:
    """One run's figures from its trials and the times they were recorded."""
    for t in trials:
        seen.setdefault(t["index"], total)
    trained = [t for t in trials if t["status"] in TRAINED]
    times = sorted(seen[t["index"]] for t in trained)
    steady = (len(times) - 1) / (times[-1] - times[0]) * 60 if len(times) > 1 and times[-1] > times[0] else None
    train_s = [t.get("stage1_s", 0) + t.get("stage2_s", 0) + t.get("val_s", 0) for t in trained]
    return {
        "name": name, "executor": executor, "workers": workers, "trained": len(trained),
        "statuses": {s: sum(t["status"] == s for t in trials) for s in ("ok", "early-stopped", "failed", "rejected")},
        "total_s": round(total, 2), "first_done_s": round(times[0], 2) if times else None,
        "cand_per_min_steady": round(steady, 3) if steady else None,
        "cand_per_min_end_to_end": round(len(trained) / total * 60, 3),
        "train_s_mean": round(sum(train_s) / len(train_s), 3) if train_s else None,
        "wall_s_mean": round(sum(t["wall_s"] for t in trained) / len(trained), 3) if trained else None,
        "keys": [t["key"] for t in sorted(trials, key=lambda t: t["index"])],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to compare.")
    ap.add_argument("--local", action="store_true", help="Also run the in-process (local) executor.")
    ap.add_argument("--budget", type=int, default=6, help="Candidates per run.")
    ap.add_argument("--preset", default="cpu-small", help="Proxy preset (test: a quick smoke run).")
    ap.add_argument("--data", default="camvid-mini")
    ap.add_argument("--target", default="jetson-orin-nano", help="Latency target of the reward.")
    ap.add_argument("--input-size", default=None, help="Deployment size HxW [default: the dataset's].")
    ap.add_argument("--encoder-weights", default=None, help="bundled | none [default: the search's].")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=None, help="Wall-time cap per run (--max-minutes).")
    ap.add_argument("--out", default="runs/search_scaling")
    args = ap.parse_args(argv)

    os.environ["OMP_NUM_THREADS"] = "1"  # before torch loads: one thread per worker (Ray's workers inherit it)
    info = machine()
    configs = ([("local", "local", 1)] if args.local else []) + [(f"ray-{k}", "ray", k) for k in args.workers]
    rows = [run_one(name, ex, k, args) for name, ex, k in configs]
    base = next((r for r in rows if r["executor"] == "ray"), rows[0])
    for r in rows:
        for field in ("cand_per_min_steady", "cand_per_min_end_to_end"):
            a, b = r[field], base[field]
            r[f"speedup_{field[13:]}"] = round(a / b, 3) if a and b else None
    same = len({tuple(r["keys"]) for r in rows}) == 1

    print(f"\n{'run':<8} {'trained':>7} {'cand/min':>9} {'speed-up':>9} {'end-to-end':>10} {'speed-up':>9} "
          f"{'train s':>8} {'first done s':>12}")
    for r in rows:
        print(f"{r['name']:<8} {r['trained']:>7} {_f(r['cand_per_min_steady'], '.2f'):>9} "
              f"{_f(r['speedup_steady'], '.2f'):>9} {_f(r['cand_per_min_end_to_end'], '.2f'):>10} "
              f"{_f(r['speedup_end_to_end'], '.2f'):>9} {_f(r['train_s_mean'], '.1f'):>8} "
              f"{_f(r['first_done_s'], '.1f'):>12}")
    print(f"\nsame genotypes in every run: {same}; machine: {info['cpu']}, {info['cores']} cores, "
          f"load {info['load_average_at_start'][0]:.1f} at start")
    notes = limits(rows, info)
    for n in notes:
        print(f"- {n}")
    out = Path(args.out) / "search_scaling.json"
    out.write_text(json.dumps({"format": FORMAT, "machine": info, "settings": vars(args), "runs": rows,
                               "same_genotypes": same, "notes": notes}, indent=2))
    print(f"\nwrote {out}")
    return 0


def limits(rows: list[dict[str, Any]], info: dict[str, Any]) -> list[str]:
    """What bounds the speed-up, from the figures."""
    notes = []
    ray_rows = [r for r in rows if r["executor"] == "ray"]
    if len(ray_rows) > 1 and ray_rows[0]["train_s_mean"] and ray_rows[-1]["train_s_mean"]:
        slow = ray_rows[-1]["train_s_mean"] / ray_rows[0]["train_s_mean"]
        notes.append(f"a candidate trains {slow:.2f}x as long with {ray_rows[-1]['workers']} workers as with "
                     f"{ray_rows[0]['workers']}: the workers share {info['cores']} cores (and memory bandwidth) "
                     f"with the driver and with whatever else runs here")
    if info["cores"] and max(r["workers"] for r in rows) >= info["cores"]:
        notes.append("the driver (proposals, cost checks, latency, the strategy's update, trials.jsonl) has no "
                     "core of its own once the workers take them all")
    if any(r["first_done_s"] for r in ray_rows):
        first = min(r["first_done_s"] for r in ray_rows if r["first_done_s"])
        notes.append(f"fixed start-up before the first result ({first:.0f} s at best: Ray, the data and stage-1 "
                     f"cache on the driver, each actor importing torch and receiving the cached data once) is "
                     f"excluded from the steady cand/min but weighs on end-to-end figures of short runs")
    if info["load_average_at_start"][0] > (info["cores"] or 1):
        notes.append(f"the machine was already loaded (load {info['load_average_at_start'][0]:.1f} on "
                     f"{info['cores']} cores): these figures understate an idle machine's")
    return notes


def _f(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


if __name__ == "__main__":
    sys.exit(main())
