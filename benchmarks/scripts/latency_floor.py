"""The floor of any latency predictor here: how well does one measurement of a genotype repeat 10 minutes later?

The same 30 genotypes (seeds 3,000,000-3,000,029, a range no table fits on) are measured in two runs at least
10 minutes apart, each with the protocol the predictor's evaluation uses (benchmarks/lut/protocol.py: groups
of 9 interleaved beside an anchor genotype, rounds shuffled), at each thread count. The report gives, per
thread count, the share of genotypes whose two medians agree within +-10%, Kendall's tau between the runs,
and 90% bootstrap intervals; ``raw`` compares the medians, ``anchored`` their ratios to the anchor timed in
the same group (what the predictor's evaluation also reports). No predictor can beat this floor.

    python benchmarks/scripts/latency_floor.py --run 1            # ~5 min at 360x480, threads 1 and 2
    python benchmarks/scripts/latency_floor.py --run 2 --wait     # waits until 10 min after run 1, ~5 min
    python benchmarks/scripts/latency_floor.py --report           # (run 2 writes the report when it completes)

Both runs resume where they stopped (``--minutes`` bounds one invocation; state in ``--workdir``). Run 2 is
refused (or, with ``--wait``, delayed) until run 1 is complete and 10 minutes have passed since it ended.
The result is ``results/latency_floor.json``. Never run it beside another timing (measuring-here.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from _common import machine
from segfactory.benchmarks.lut.check import figures
from segfactory.benchmarks.lut.protocol import measure_groups, seed_set
from segfactory.factory.config import ModelConfig
from segfactory.factory.io import atomic_write_json, parse_size, read_json

FLOOR_SEED_BASE = 3_000_000
GAP_S = 600.0  # at least 10 minutes between the end of run 1 and the start of run 2


def settings_of(args) -> dict[str, Any]:
    return {"input_size": list(args.input_size), "count": args.count, "threads": args.threads,
            "rounds": args.rounds, "min_seconds": args.min_seconds, "seeds": [FLOOR_SEED_BASE,
                                                                              FLOOR_SEED_BASE + args.count - 1]}


def load_state(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    if not path.exists():
        return {"format": "segfactory.latency-floor-state/1", "settings": settings, "runs": {}}
    state = read_json(path, "floor state")
    if state.get("settings") != settings:
        raise SystemExit(f"{path} was started with {state.get('settings')}, not {settings}: repeat those settings "
                         "or choose another --workdir")
    return state


def wait_for_gap(state: dict[str, Any], wait: bool, gap_s: float = GAP_S) -> None:
    """Refuse (or sleep) until run 1 is complete and ``gap_s`` seconds have passed since it ended."""
    first = state["runs"].get("1", {})
    if not first.get("ended"):
        raise SystemExit("run 1 is not complete: run --run 1 first (it resumes)")
    if state["runs"].get("2", {}).get("started"):
        return  # run 2 already started after the gap: resuming it is fine
    left = first["ended"] + gap_s - time.time()
    if left > 0:
        if not wait:
            raise SystemExit(f"run 2 must start at least {gap_s / 60:g} minutes after run 1 ended: "
                             f"{left / 60:.1f} minutes to go (or pass --wait)")
        print(f"waiting {left / 60:.1f} minutes before run 2", file=sys.stderr)
        time.sleep(left)


def run(number: str, args, state: dict[str, Any], save) -> bool:
    """Measure run ``number`` (resumable); True when complete."""
    config = ModelConfig.create()
    named = seed_set(FLOOR_SEED_BASE, FLOOR_SEED_BASE + args.count - 1)
    entry = state["runs"].setdefault(number, {})
    entry.setdefault("started", time.time())
    entry.setdefault("machine", machine())
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
    for threads in args.threads:
        done = entry.setdefault(f"t{threads}", {})
        if not measure_groups(named, config, tuple(args.input_size), threads=threads, done=done, save=save,
                              rounds=args.rounds, min_seconds=args.min_seconds, deadline=deadline,
                              log=lambda m, t=threads: print(f"[run {number}, {t} thread(s)] {m}", file=sys.stderr)):
            print(f"--minutes reached during run {number}: run the same command to resume", file=sys.stderr)
            return False
    entry["ended"] = time.time()
    save()
    return True


def report(state: dict[str, Any], out: Path) -> dict[str, Any]:
    first, second = state["runs"].get("1", {}), state["runs"].get("2", {})
    result: dict[str, Any] = {"format": "segfactory.latency-floor/1", "settings": state["settings"],
                              "gap_minutes": ((second.get("started", 0) - first.get("ended", 0)) / 60
                                              if second.get("started") and first.get("ended") else None),
                              "machine": {"run1": first.get("machine"), "run2": second.get("machine")},
                              "threads": {}}
    for threads in state["settings"]["threads"]:
        a, b = first.get(f"t{threads}", {}), second.get(f"t{threads}", {})
        names = [n for n in a if n in b and a[n]["key"] == b[n]["key"]]
        if len(names) < 3:
            continue
        raw = figures([a[n]["ms"] for n in names], [b[n]["ms"] for n in names], boot=2000)
        anchored = figures([a[n]["ratio"] for n in names], [b[n]["ratio"] for n in names], boot=2000)
        result["threads"][str(threads)] = {
            "n": len(names), "raw": raw, "anchored": anchored,
            "rows": {n: {"key": a[n]["key"], "run1_ms": a[n]["ms"], "run2_ms": b[n]["ms"],
                         "run1_ratio": a[n]["ratio"], "run2_ratio": b[n]["ratio"]} for n in names}}
    atomic_write_json(out, result)
    return result


def render(result: dict[str, Any]) -> None:
    gap = result.get("gap_minutes")
    print(f"floor: the same genotypes measured twice{f', {gap:.0f} minutes apart' if gap else ''} "
          f"({result['settings']['input_size'][0]}x{result['settings']['input_size'][1]})")
    for threads, r in result["threads"].items():
        for label in ("anchored", "raw"):
            f = r[label]
            w90, t90 = f.get("within_10pct_90", [float("nan")] * 2), f.get("kendall_tau_90", [float("nan")] * 2)
            print(f"  {threads} thread(s) {label:8} n={f['n']}: {100 * f['within_10pct']:.0f}% within +-10% "
                  f"(90% CI {100 * w90[0]:.0f}-{100 * w90[1]:.0f}%), Kendall tau {f['kendall_tau']:.3f} "
                  f"({t90[0]:.3f}-{t90[1]:.3f}), mean |difference| {100 * f['mape']:.1f}%")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", choices=["1", "2"])
    g.add_argument("--report", action="store_true")
    p.add_argument("--wait", action="store_true", help="run 2: sleep until 10 minutes after run 1 ended")
    p.add_argument("--threads", default="1,2", type=lambda s: [int(t) for t in s.split(",")])
    p.add_argument("--input-size", default="360x480", type=lambda s: parse_size(s, "--input-size"))
    p.add_argument("--count", type=int, default=30)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per genotype per group")
    p.add_argument("--minutes", type=float, default=None, help="stop after this long; run again to resume")
    p.add_argument("--gap-minutes", type=float, default=GAP_S / 60,
                   help="least time between the end of run 1 and the start of run 2 (the floor's definition: 10)")
    p.add_argument("--workdir", type=Path, default=Path("results/latency_floor"))
    p.add_argument("--out", type=Path, default=Path("results/latency_floor.json"))
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    state_path = args.workdir / "state.json"
    state = load_state(state_path, settings_of(args))

    def save() -> None:
        atomic_write_json(state_path, state)

    if args.run == "2":
        wait_for_gap(state, args.wait, args.gap_minutes * 60)
    if args.run and not run(args.run, args, state, save):
        return
    if args.report or args.run == "2":
        render(report(state, args.out))
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        ready = time.strftime("%H:%M", time.localtime(time.time() + args.gap_minutes * 60))
        print(f"run 1 complete; start run 2 after {ready} "
              "(python benchmarks/scripts/latency_floor.py --run 2 --wait)", file=sys.stderr)


if __name__ == "__main__":
    main()
