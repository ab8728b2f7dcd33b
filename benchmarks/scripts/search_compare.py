"""PPO, random search and regularised evolution under the same budget and seeds, with the cpu-small preset.

    python benchmarks/scripts/search_compare.py --minutes 60 [--data camvid:PATH] [--seeds 0] [--out runs/search_compare]

Each (strategy, seed) is a normal search run in OUT/<strategy>-s<seed>/ that gets ``--minutes / runs`` of wall
time per invocation, in ``--rounds`` interleaved slices (this host's speed drifts with its load, so the
strategies take turns; each slice resumes its run). Rerunning resumes every run and gives each the same time
again. CPU seconds per candidate (the search process's own) are reported beside wall seconds, since they depend
far less on what else the machine is doing. All runs share one
latency target T (arch0's latency on the target, measured once and stored in OUT/reference.json), so their
rewards are comparable. Prints a table (candidates, best reward, seconds per candidate and where they go:
stage 1, stage 2, validation, latency measurement, the rest), writes OUT/search_compare.json with the machine
description and OUT/search_compare.png (best reward so far against candidates evaluated).

At budgets reachable on a CPU, PPO barely leaves its near-uniform initial policy (initial entropy 53.4 of 53.5
nats; lr 1e-4) and the early stopper has too little history to act, so the three strategies are expected to be
statistically indistinguishable here: the figures measure cost, not a ranking.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import default_data, machine
from segfactory.search.trials import TRAINED, load_trials

FORMAT = "segfactory.bench-search-compare/1"
STRATEGIES = ("ppo", "random", "evolution")


def reference_latency(args, out: Path) -> float:
    """arch0's latency on the target at the deployment size, measured once for all runs."""
    from segfactory.benchmarks.targets import get_target
    from segfactory.factory.config import ModelConfig
    from segfactory.factory.datasets import open_dataset
    from segfactory.factory.io import atomic_write_json, read_json
    from segfactory.factory.zoo import ZOO

    path = out / "reference.json"
    if path.is_file():
        return float(read_json(path)["latency_ms"])
    ds = open_dataset(args.data, "train")
    size = tuple(ds[0][0].shape[:2])
    cfg = ModelConfig.create(ds.num_classes, class_names=tuple(ds.class_names))  # the released configuration
    lat = get_target(args.target).latency(ZOO["arch0"], cfg, size)
    atomic_write_json(path, {"arch": "arch0", "latency_ms": lat.ms, "source": lat.source, "input_size": list(size)})
    return lat.ms


def run_one(strategy: str, seed: int, args, out: Path, minutes: float, latency_target: float) -> None:
    """One time slice of one search run, in this process; a later slice resumes it."""
    from segfactory.factory.errors import SegfactoryError
    from segfactory.search.loop import run_search
    from segfactory.search.options import SearchOptions

    d = out / f"{strategy}-s{seed}"
    options = SearchOptions(out=str(d), data=args.data, target=args.target, budget=args.budget, strategy=strategy,
                            preset=args.preset, seed=seed, device="cpu", latency_target_ms=latency_target,
                            max_minutes=minutes, population=args.population, tournament=args.tournament,
                            threads=args.threads)
    t = time.monotonic()
    try:
        run_search(options, resume=(d / "run.json").is_file())
    except SegfactoryError as e:
        raise SystemExit(f"{d.name}: {e}") from None
    count = len(load_trials(d / "trials.jsonl")[0])
    print(f"  {d.name}: {count} candidates so far ({time.monotonic() - t:.0f} s)", flush=True)


def analyse(out: Path) -> dict[str, Any]:
    rows = []
    for d in sorted(p for p in out.iterdir() if (p / "trials.jsonl").is_file()):
        trials = sorted(load_trials(d / "trials.jsonl")[0], key=lambda t: t["index"])
        trained = [t for t in trials if t["status"] in TRAINED]
        curve, best = [], None
        for t in trained:
            if t.get("reward") is not None and t["status"] == "ok":
                best = t["reward"] if best is None else max(best, t["reward"])
            curve.append(best)
        parts = {k: sum(t.get(k) or 0.0 for t in trained) for k in ("stage1_s", "stage2_s", "val_s", "latency_s",
                                                                     "wall_s", "cpu_s")}
        wall = parts["wall_s"] or 1.0
        strategy, _, seed = d.name.rpartition("-s")
        rows.append({
            "run": d.name, "strategy": strategy, "seed": int(seed), "candidates": len(trained),
            "rejected": sum(t["status"] == "rejected" for t in trials),
            "early_stopped": sum(t["status"] == "early-stopped" for t in trials),
            "failed": sum(t["status"] == "failed" for t in trials),
            "best_reward": best, "curve": curve,
            "s_per_candidate": parts["wall_s"] / len(trained) if trained else None,
            "cpu_s_per_candidate": parts["cpu_s"] / len(trained) if trained else None,
            "share": {"stage1": parts["stage1_s"] / wall, "stage2": parts["stage2_s"] / wall,
                      "validation": parts["val_s"] / wall, "latency": parts["latency_s"] / wall,
                      "other": max(0.0, 1 - sum(parts[k] for k in ("stage1_s", "stage2_s", "val_s", "latency_s"))
                                   / wall)},
        })
    return {"runs": rows}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colors = {"ppo": "tab:red", "random": "tab:blue", "evolution": "tab:green"}
    for r in result["runs"]:
        xs = [i + 1 for i, v in enumerate(r["curve"]) if v is not None]
        ys = [v for v in r["curve"] if v is not None]
        ax.step(xs, ys, where="post", color=colors.get(r["strategy"]), label=r["run"])
    ax.set_xlabel("candidates evaluated")
    ax.set_ylabel("best reward so far")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, required=True, help="Wall-clock budget of this invocation.")
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--out", default="runs/search_compare")
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--budget", type=int, default=1000, help="Candidates per run (the minutes usually bind).")
    parser.add_argument("--population", type=int, default=8, help="Evolution population (small budgets).")
    parser.add_argument("--tournament", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved time slices per run.")
    args = parser.parse_args(argv)

    from segfactory.factory.io import atomic_write_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    latency_target = reference_latency(args, out)
    runs = [(s, seed) for seed in args.seeds for s in args.strategies]
    per_run = args.minutes / len(runs)
    print(f"{len(runs)} runs, {per_run:.1f} min each in {args.rounds} slices; latency target {latency_target:.2f} ms"
          f" (arch0)", flush=True)
    for r in range(args.rounds):
        order = runs if r % 2 == 0 else runs[::-1]
        for strategy, seed in order:
            run_one(strategy, seed, args, out, per_run / args.rounds, latency_target)
    result = {"format": FORMAT, "machine": machine(), "data": args.data, "preset": args.preset,
              "target": args.target, "latency_target_ms": latency_target, **analyse(out)}
    atomic_write_json(out / "search_compare.json", result)
    plot(result, out / "search_compare.png")
    print(f"\n{'run':<16} {'cand':>5} {'best reward':>11} {'s/cand':>7} {'cpu s':>6} {'stage1':>7} {'stage2':>7} {'val':>6} "
          f"{'latency':>8} {'other':>6}")
    for r in result["runs"]:
        sh = r["share"]
        best = f"{r['best_reward']:.4f}" if r["best_reward"] is not None else "-"
        spc = f"{r['s_per_candidate']:.1f}" if r["s_per_candidate"] else "-"
        cpu = f"{r['cpu_s_per_candidate']:.1f}" if r["cpu_s_per_candidate"] else "-"
        print(f"{r['run']:<16} {r['candidates']:>5} {best:>11} {spc:>7} {cpu:>6} {sh['stage1']:>7.0%} {sh['stage2']:>7.0%} "
              f"{sh['validation']:>6.0%} {sh['latency']:>8.0%} {sh['other']:>6.0%}")
    print(f"\nwrote {out / 'search_compare.json'} and {out / 'search_compare.png'}")


if __name__ == "__main__":
    main()
