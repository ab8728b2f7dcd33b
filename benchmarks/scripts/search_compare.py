"""Does the search find better architectures than chance? Strategies side by side under a latency limit (issue 19).

    python benchmarks/scripts/search_compare.py run --minutes 60 [--data camvid:PATH] [--lut TABLE]
    python benchmarks/scripts/search_compare.py report

The protocol: full CamVid, target ``cpu`` with latency from one lookup table profiled on this host (``--lut``, so
every strategy sees the same latencies), ``--max-latency-ratio 0.5437`` (0.75x LR-ASPP), the cheap rung
(``cpu-small``, rungs off) and :data:`BUDGET` trained candidates per run, for the runs of :data:`RUNS`: PPO with
the ``reachable`` profile, random search and regularised evolution with two seeds each, and PPO with the paper's
settings with one. The controller's profile was chosen on a toy reward with seeds 1000-1002
(``results/controller_toy.json``), none of which is used here.

``run`` gives the unfinished runs turns of ``--slice`` minutes until ``--minutes`` are used (each turn resumes its
run, so a kill or the end of a session loses at most the candidate in progress); the run folders live under
``results/search_compare/`` and are committed, so a later session on another machine continues them. Never run it
beside another timing or training: the candidates per hour are part of the result.

``report`` writes ``results/search_compare.json`` and ``.png``: per run the candidates trained, candidates per hour
under the limit and where the wall time went; best and mean-of-top-5 reward against candidates (the plot); the mean
reward of the first and last 100 trained candidates (does the strategy learn?); and each strategy's top 3 over its
seeds, which ``fidelity_truth.py train --set compare`` trains with the fidelity recipe (ground truth).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, default_data, machine

FORMAT = "segfactory.bench-search-compare/2"
OUT = RESULTS / "search_compare"
RATIO = 0.5437  # 0.75 x LR-ASPP's latency, as a multiple of arch0's (results/lraspp_ratio.json)
BUDGET = 250
TOP = 5  # mean of the top TOP rewards
WINDOW = 100  # first and last WINDOW trained candidates
RUNS = (  # (name, strategy, PPO profile, seed)
    ("ppo-reachable-s0", "ppo", "reachable", 0), ("random-s0", "random", None, 0),
    ("evolution-s0", "evolution", None, 0), ("ppo-reachable-s1", "ppo", "reachable", 1),
    ("random-s1", "random", None, 1), ("evolution-s1", "evolution", None, 1), ("ppo-paper-s0", "ppo", "paper", 0),
)
TOP_PER_STRATEGY = 3


def _options(name: str, args) -> Any:
    from segfactory.search.options import SearchOptions

    _, strategy, controller, seed = next(r for r in RUNS if r[0] == name)
    return SearchOptions(out=str(OUT / name), data=args.data, target="cpu", lut=args.lut, budget=BUDGET,
                         strategy=strategy, controller=controller, preset="cpu-small", rungs="off", seed=seed,
                         device="cpu", max_latency_ratio=RATIO, max_minutes=None)


def _trials(name: str) -> list[dict[str, Any]]:
    from segfactory.search.trials import load_trials

    return sorted(load_trials(OUT / name / "trials.jsonl")[0], key=lambda t: t["index"])


def _finished(name: str) -> bool:
    from segfactory.search.trials import trained_count

    if (OUT / name / "stopped.txt").is_file():
        return True
    return (OUT / name / "trials.jsonl").is_file() and trained_count(_trials(name)) >= BUDGET


def _elapsed(name: str) -> float:
    """The run's wall time over all its slices (state.pt)."""
    from segfactory.search.state import load_state

    state = load_state(OUT / name)
    return float(state.get("elapsed_s", 0.0)) if state else 0.0


def run(args) -> None:
    from dataclasses import replace

    from segfactory.factory.errors import RunError, SegfactoryError
    from segfactory.search.loop import run_search

    deadline = time.monotonic() + 60 * args.minutes
    OUT.mkdir(parents=True, exist_ok=True)
    names = [r[0] for r in RUNS if not args.only or r[0] in args.only]
    while time.monotonic() < deadline:
        todo = [n for n in names if not _finished(n)]
        if not todo:
            print("every run has its candidates", flush=True)
            break
        name = min(todo, key=_elapsed)  # the run with the least time so far: the runs advance together
        left = (deadline - time.monotonic()) / 60
        options = _options(name, args)
        # --minutes counts a run's whole time over its slices: this slice may add at most --slice
        options = replace(options, max_minutes=_elapsed(name) / 60 + min(args.slice, left))
        t = time.monotonic()
        try:
            run_search(options, resume=(OUT / name / "run.json").is_file())
        except RunError as e:  # e.g. --max-rejections consecutive rejections: the run is over, the others go on
            (OUT / name / "stopped.txt").write_text(f"{e}\n")
            print(f"  {name} stopped: {e}", flush=True)
        except SegfactoryError as e:
            raise SystemExit(f"{name}: {e}") from None
        from segfactory.search.trials import trained_count

        print(f"  {name}: {trained_count(_trials(name))}/{BUDGET} trained ({(time.monotonic() - t) / 60:.1f} min)",
              flush=True)
    report(args)


def _curves(trained: list[dict[str, Any]]) -> tuple[list[float | None], list[float | None]]:
    """Best and mean-of-top-TOP reward after each trained candidate."""
    best, top, rewards = [], [], []
    for t in trained:
        if t.get("reward") is not None and t["status"] == "ok":
            rewards.append(t["reward"])
        ranked = sorted(rewards, reverse=True)
        best.append(ranked[0] if ranked else None)
        top.append(statistics.fmean(ranked[:TOP]) if len(ranked) >= TOP else None)
    return best, top


def analyse_run(name: str) -> dict[str, Any]:
    from segfactory.search.results import time_breakdown
    from segfactory.search.state import load_state
    from segfactory.search.trials import TRAINED

    trials = _trials(name)
    trained = [t for t in trials if t["status"] in TRAINED]
    state = load_state(OUT / name) or {}
    elapsed = float(state.get("elapsed_s", 0.0))
    best, top = _curves(trained)
    rewards = [t["reward"] if t.get("reward") is not None else 0.0 for t in trained]
    first, last = rewards[:WINDOW], rewards[-WINDOW:] if len(rewards) >= 2 * WINDOW else []
    _, strategy, controller, seed = next(r for r in RUNS if r[0] == name)
    return {
        "run": name, "strategy": strategy, "controller": controller, "seed": seed,
        "trained": len(trained), "proposals": len(trials),
        "stopped": (OUT / name / "stopped.txt").read_text().strip() if (OUT / name / "stopped.txt").is_file() else None,
        "rejected": sum(t["status"] == "rejected" for t in trials),
        "repeats": sum(t["status"] == "repeat" for t in trials),
        "failed": sum(t["status"] == "failed" for t in trials),
        "minutes": round(elapsed / 60, 1),
        "candidates_per_hour": round(3600 * len(trained) / elapsed, 1) if elapsed else None,
        "time": time_breakdown(trials, elapsed, state.get("run_s")),
        "best_reward": best[-1] if best else None, "mean_top5": top[-1] if top else None,
        "first100_mean_reward": statistics.fmean(first) if len(first) == WINDOW else None,
        "last100_mean_reward": statistics.fmean(last) if last else None,
        "feasible_share_first100": _feasible_share(trials[:WINDOW]),
        "feasible_share_last100": _feasible_share(trials[-WINDOW:]) if len(trials) >= 2 * WINDOW else None,
        "best_curve": best, "top5_curve": top,
        "top": [{k: t.get(k) for k in ("index", "key", "genotype", "reward", "score", "latency_ratio", "params")}
                for t in sorted((t for t in trained if t.get("reward") is not None and t["status"] == "ok"),
                                key=lambda t: -t["reward"])[:TOP_PER_STRATEGY]],
    }


def _feasible_share(trials: list[dict[str, Any]]) -> float | None:
    """Share of proposals that were feasible (not rejected): does the strategy learn the limit?"""
    return sum(t["status"] != "rejected" for t in trials) / len(trials) if trials else None


def top_per_strategy(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each strategy's TOP_PER_STRATEGY best over its runs (a genotype once), for ground truth."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        label = row["strategy"] + (f"-{row['controller']}" if row["controller"] else "")
        out.setdefault(label, []).extend({**t, "run": row["run"]} for t in row["top"])
    for label, items in out.items():
        seen, best = set(), []
        for t in sorted(items, key=lambda t: -t["reward"]):
            if t["key"] not in seen:
                seen.add(t["key"])
                best.append(t)
        out[label] = best[:TOP_PER_STRATEGY]
    return out


def latency_terms(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Which latency term should a search with a limit use? On each run's trained candidates (their proxy scores
    and latency ratios, recomputed rewards): how score goes with latency under the limit (Spearman), and what each
    term would pick: MnasNet's ``score x (ratio / 1)^w`` (T = arch0, the default) and TuNAS's absolute
    ``score + w x |ratio / limit - 1|`` (T = the limit), both at the default w = -0.07; for each, the score of its
    pick and that score's rank among the run's scores (1 = the best-scoring candidate)."""
    from scipy.stats import spearmanr

    forms = {"mnas": lambda t: t["score"] * t["latency_ratio"] ** -0.07,
             "absolute": lambda t: t["score"] - 0.07 * abs(t["latency_ratio"] / RATIO - 1)}
    out = {}
    for row in rows:
        trained = [t for t in _trials(row["run"]) if t["status"] == "ok" and t.get("score") is not None
                   and t.get("latency_ratio") is not None]
        if len(trained) < 10:
            continue
        scores = sorted((t["score"] for t in trained), reverse=True)
        rho = spearmanr([t["latency_ratio"] for t in trained], [t["score"] for t in trained]).statistic
        picks = {}
        for name, reward in forms.items():
            pick = max(trained, key=reward)
            picks[name] = {"index": pick["index"], "score": pick["score"], "latency_ratio": pick["latency_ratio"],
                           "score_rank": scores.index(pick["score"]) + 1}
        out[row["run"]] = {"n": len(trained), "spearman_latency_score": float(rho), "picks": picks}
    return out


def report(args) -> dict[str, Any]:
    from segfactory.factory.io import atomic_write_json

    rows = [analyse_run(r[0]) for r in RUNS if (OUT / r[0] / "trials.jsonl").is_file()]
    result = {"format": FORMAT, "machine": machine(), "data": args.data, "lut": args.lut, "ratio": RATIO,
              "budget": BUDGET, "preset": "cpu-small", "runs": rows, "top_per_strategy": top_per_strategy(rows),
              "latency_terms": latency_terms(rows)}
    atomic_write_json(RESULTS / "search_compare.json", result)
    if rows:
        plot(rows, RESULTS / "search_compare.png")
    print(f"{'run':<18} {'trained':>7} {'min':>6} {'cand/h':>7} {'best':>7} {'top5':>7} {'first100':>8} "
          f"{'last100':>8} {'feasible 1st/last':>17}")
    for r in rows:
        def f(v, spec=".4f"):
            return "-" if v is None else format(v, spec)
        print(f"{r['run']:<18} {r['trained']:>7} {r['minutes']:>6.1f} {f(r['candidates_per_hour'], '.0f'):>7} "
              f"{f(r['best_reward']):>7} {f(r['mean_top5']):>7} {f(r['first100_mean_reward']):>8} "
              f"{f(r['last100_mean_reward']):>8} {f(r['feasible_share_first100'], '.2f'):>8}/"
              f"{f(r['feasible_share_last100'], '.2f')}")
    for run_name, lt in result["latency_terms"].items():
        print(f"{run_name}: score against latency under the limit, Spearman {lt['spearman_latency_score']:+.2f} "
              f"({lt['n']}); picks: " + ", ".join(f"{k} rank {v['score_rank']} at {v['latency_ratio']:.3f}"
                                                  for k, v in lt["picks"].items()))
    print(f"wrote {RESULTS / 'search_compare.json'}")
    return result


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"ppo": "tab:red", "random": "tab:blue", "evolution": "tab:green"}
    paper = "tab:purple"  # PPO with the paper's settings: its own colour, not a second seed's dashes
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120, sharey=True)
    for ax, key, title in ((axes[0], "best_curve", "best reward"), (axes[1], "top5_curve", "mean of the top 5")):
        for r in rows:
            xs = [i + 1 for i, v in enumerate(r[key]) if v is not None]
            ax.step(xs, [v for v in r[key] if v is not None], where="post",
                    color=paper if r["controller"] == "paper" else colors.get(r["strategy"]),
                    linestyle="--" if r["seed"] else "-", label=r["run"])
        ax.set_xlabel("trained candidates")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("reward (cpu-small proxy)")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"strategies under latency <= {RATIO} x arch0, full CamVid ({machine()['cpu']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("run", "report"):
        p = sub.add_parser(name)
        p.add_argument("--data", default=default_data())
        p.add_argument("--lut", default=str(RESULTS / "latency_predictor" / "lut_360x480_t1_amd.json"),
                       help="The lookup table every run takes its latency from (profiled on this host).")
        if name == "run":
            p.add_argument("--minutes", type=float, required=True, help="Wall-clock bound of this invocation.")
            p.add_argument("--slice", type=float, default=15.0, help="Minutes a run gets per turn.")
            p.add_argument("--only", nargs="+", default=None, choices=[r[0] for r in RUNS])
    args = parser.parse_args(argv)
    run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    main()
