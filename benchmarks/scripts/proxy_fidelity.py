"""Proxy fidelity: does the search's proxy score rank architectures as a longer training does? (issues 11, 20)

    python benchmarks/scripts/fidelity_truth.py train --set fresh --minutes 120 --publish   # ground truth (resumable)
    python benchmarks/scripts/proxy_fidelity.py score --preset cpu-full --minutes 60 [--set eval|tune|fresh]
    python benchmarks/scripts/proxy_fidelity.py latency                        # the 14 beside arch0 (quiet host)
    python benchmarks/scripts/proxy_fidelity.py report [--set eval|tune|fresh] [--publish]

``score`` proxy-trains every genotype of a set (``fidelity_truth.py``'s sets: ``eval`` the 14 of issue 11, now
history; ``tune`` seeds 100-111; ``fresh`` the 16 never used to decide anything; each with arch0 and arch1) with the
preset's schedule exactly as a search does (``segfactory.search.proxy.train_candidate``, early stopping off), with
two candidate seeds each on ONE prepared ProxyData (the same held-out frames and stage-1 cache), and appends one
line per (genotype, seed) to OUT/scores-LABEL.jsonl (resumable: done pairs are skipped; ``--minutes`` bounds this
invocation). A genotype the preset refuses (over its multiply-add limit) is recorded with its status, and the report
lists it as missing. The same script runs against an older checkout of the package (PYTHONPATH) to score its proxy
("before the fixes"), since it only uses ProxyData.prepare and train_candidate.

``latency`` measures the eval set's 14 deployed models (agg 64, sep 2, 360x480, ONNX Runtime, 1 thread) interleaved
with arch0, for its "faster than arch0" subset (the fresh set's light 8 were measured when they were chosen).
``report`` computes, per label, Kendall's tau (with a bootstrap 90% interval over genotypes) and Spearman's rho
between the mean proxy score and the set's published val mIoU, the same per seed, tau between the two seeds, and
tau among the set's light genotypes; prints a table and writes OUT/proxy_fidelity[_SET].json and .png
(``--publish``: also results/, with the fresh and tune sets' per-candidate rows under
results/proxy_fidelity_SET_scores/).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, default_data, machine
from fidelity_truth import genotypes, light, published_path, truth

FORMAT = "segfactory.bench-proxy-fidelity/3"
SETS = ("eval", "tune", "fresh")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]


def score(args) -> None:
    import torch
    from segfactory.factory.config import ModelConfig
    from segfactory.factory.datasets import open_dataset
    from segfactory.search.presets import PRESETS
    from segfactory.search.proxy import ProxyData, train_candidate

    if args.threads:
        torch.set_num_threads(args.threads)
    deadline = time.monotonic() + 60 * args.minutes
    settings = PRESETS[args.preset]
    if args.set_:
        settings = settings.with_(**json.loads(args.set_))
    dataset = open_dataset(args.data, "train")
    config = ModelConfig.create(dataset.num_classes, 48, 1, "bundled", tuple(dataset.class_names))
    todo = genotypes(args.which)
    if args.only:  # a subset first (the fresh set's light 8 while the rest's ground truth is under way)
        only = set(args.only.split(","))
        todo = [(name, g) for name, g in todo if name in only]
    label = args.label or f"{args.preset}-{args.which}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"scores-{label}.jsonl"
    done = {(r["name"], r["seed"]) for r in _read_jsonl(path)}
    seeds = [int(s) for s in args.seeds.split(",")]
    pending = [(name, g, s) for name, g in todo for s in seeds if (name, s) not in done]
    if not pending:
        print(f"{label}: all {len(todo) * len(seeds)} scores are done")
        return
    t0 = time.monotonic()
    data = ProxyData.prepare(dataset, config, settings, seed=0)  # one held-out set and cache for every candidate
    print(f"{label}: prepared in {time.monotonic() - t0:.0f} s; {len(pending)} candidates to score", flush=True)
    for name, g, s in pending:
        if time.monotonic() > deadline:
            print(f"out of time; rerun to continue ({len(pending)} left at most)")
            return
        t, c = time.monotonic(), time.process_time()
        r = train_candidate(g, data, seed=1000 + s)
        row = {"label": label, "set": args.which, "preset": args.preset, "name": name, "key": g.key(), "seed": s, "status": r.status,
               "reason": r.reason, "score": r.score, "miou": r.miou, "steps": r.steps,
               "wall_s": time.monotonic() - t, "cpu_s": time.process_time() - c, "settings": settings.to_dict()}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(f"  {name:8s} seed {s}: {r.status} score {r.score if r.score is None else round(r.score, 4)} "
              f"({row['wall_s']:.0f} s wall, {row['cpu_s']:.0f} CPU-s)", flush=True)


def latency(args) -> None:
    import tempfile
    from contextlib import ExitStack

    from segfactory.benchmarks.harness import measure_interleaved
    from segfactory.benchmarks.models import ModelSpec, make_runner
    from segfactory.factory.config import ModelConfig

    config = ModelConfig.create(11, 64, 2, "bundled")
    todo = genotypes("eval")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        runners = [stack.enter_context(make_runner(ModelSpec(name, genotype=g, config=config), "ort",
                                                   input_size=(360, 480), threads=1, workdir=Path(tmp)))
                   for name, g in todo]  # arch0 first: ratios are to it
        res = measure_interleaved(runners, rounds=args.rounds, min_seconds=args.seconds)
    rows = [{"name": name, "key": g.key(), "median_ms": r["median_ms"], "ratio_to_arch0": r["ratio_to_first"],
             "round_median_min_ms": r["round_median_min_ms"], "round_median_max_ms": r["round_median_max_ms"]}
            for (name, g), r in zip(todo, res)]
    from segfactory.factory.io import atomic_write_json

    atomic_write_json(Path(args.out) / "latency.json", {"machine": machine(), "threads": 1, "input_size": [360, 480],
                                                        "rows": rows})
    for row in rows:
        print(f"{row['name']:8s} {row['median_ms']:7.1f} ms  x{row['ratio_to_arch0']:.2f} arch0")


def _tau_ci(x: list[float], y: list[float], seed: int = 0, n: int = 2000) -> tuple[float, float, float]:
    """Kendall's tau-b and a bootstrap 90% interval (genotypes resampled with replacement)."""
    import numpy as np
    from scipy.stats import kendalltau

    tau = float(kendalltau(x, y).statistic)
    rng = np.random.default_rng(seed)
    xs, ys, taus = np.asarray(x), np.asarray(y), []
    for _ in range(n):
        idx = rng.integers(0, len(xs), len(xs))
        if len(set(idx)) > 2:
            t = kendalltau(xs[idx], ys[idx]).statistic
            if not np.isnan(t):
                taus.append(t)
    return tau, float(np.percentile(taus, 5)), float(np.percentile(taus, 95))


def _label_stats(rows: list[dict[str, Any]], val: dict[str, float], light: set[str]) -> dict[str, Any]:
    from scipy.stats import kendalltau, spearmanr

    by_name: dict[str, dict[int, float | None]] = {}
    for r in rows:
        by_name.setdefault(r["name"], {})[r["seed"]] = r["score"]
    seeds = sorted({r["seed"] for r in rows})
    names = [n for n in val if n in by_name and all(by_name[n].get(s) is not None for s in seeds)]
    mean = [sum(by_name[n][s] for s in seeds) / len(seeds) for n in names]
    miou = [val[n] for n in names]
    out: dict[str, Any] = {"genotypes": len(names), "missing_or_failed": sorted(set(val) - set(names)),
                           "seeds": seeds, "scores": {n: [by_name[n][s] for s in seeds] for n in names},
                           # what scoring cost: every scored row, whatever the machine it ran on
                           "wall_minutes": round(sum(r.get("wall_s", 0.0) for r in rows) / 60, 1),
                           "cpu_minutes": round(sum(r.get("cpu_s", 0.0) for r in rows) / 60, 1),
                           "candidates": len(rows)}
    if len(names) >= 3:
        out["tau"], out["tau_lo90"], out["tau_hi90"] = _tau_ci(mean, miou)
        out["rho"] = float(spearmanr(mean, miou).statistic)
        out["tau_per_seed"] = {s: float(kendalltau([by_name[n][s] for n in names], miou).statistic) for s in seeds}
        if len(seeds) >= 2:
            a, b = [by_name[n][seeds[0]] for n in names], [by_name[n][seeds[1]] for n in names]
            out["tau_seed_to_seed"], out["tau_seed_lo90"], out["tau_seed_hi90"] = _tau_ci(a, b)
        fast = [i for i, n in enumerate(names) if n in light]
        if len(fast) >= 3:
            out["tau_light"] = float(kendalltau([mean[i] for i in fast], [miou[i] for i in fast]).statistic)
            out["light"] = len(fast)
    return out


def report(args) -> None:
    from segfactory.factory.io import atomic_write_json

    out, which = Path(args.out), args.which
    val = truth(which)
    if not val:
        raise SystemExit(f"no ground truth for the {which} set yet: fidelity_truth.py train --set {which} --publish")
    truth_doc = json.loads(published_path(which).read_text())
    lat_path = out / "latency.json"  # the eval set's light genotypes, measured again (proxy_fidelity.py latency)
    faster = light(which)
    if which == "eval" and lat_path.is_file():
        faster = {r["name"] for r in json.loads(lat_path.read_text())["rows"] if r["ratio_to_arch0"] < 1.0}
    labels, sources = {}, {}
    for path in sorted(out.glob("scores-*.jsonl")):
        # rows before the set was recorded are the eval set's (the only one scored then)
        rows = [r for r in _read_jsonl(path) if r.get("set", "eval") == which and r["name"] in val]
        if rows:
            label = path.stem[len("scores-"):]
            labels[label], sources[label] = _label_stats(rows, val, faster), path
    doc = {"format": FORMAT, "set": which, "machine": machine(), "truth": {"recipe": truth_doc["recipe"],
           "complete": truth_doc["complete"], "val_miou": val}, "faster_than_arch0" if which == "eval" else "light":
           sorted(faster), "labels": labels}
    stem = "proxy_fidelity" if which == "eval" else f"proxy_fidelity_{which}"  # eval: the history's old name
    atomic_write_json(out / f"{stem}.json", doc)
    _plot(labels, val, out / f"{stem}.png")
    print(f"{'label':<28} {'n':>3} {'tau (90% CI)':>22} {'rho':>6} {'seed-seed tau':>14} {'tau light':>9} "
          f"{'wall min':>9}")
    for label, st in labels.items():
        if "tau" not in st:
            continue
        fast = st.get("tau_light")
        print(f"{label:<28} {st['genotypes']:>3} {st['tau']:>6.3f} ({st['tau_lo90']:+.2f}..{st['tau_hi90']:+.2f})"
              f" {st['rho']:>6.3f} {st.get('tau_seed_to_seed', float('nan')):>14.3f}"
              f" {fast if fast is None else round(fast, 3)!s:>9} {st['wall_minutes']:>9}")
    if args.publish:
        import shutil

        atomic_write_json(RESULTS / f"{stem}.json", doc)
        shutil.copyfile(out / f"{stem}.png", RESULTS / f"{stem}.png")
        if which != "eval":  # the per-candidate rows behind the table (the history's were not kept)
            scores = RESULTS / f"{stem}_scores"
            scores.mkdir(exist_ok=True)
            for label, path in sources.items():
                rows = [r for r in _read_jsonl(path) if r.get("set", "eval") == which]
                atomic_write_json(scores / f"{label}.json", {"label": label, "set": which, "rows": rows})


def _plot(labels: dict[str, Any], truth: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(labels)), figsize=(4.2 * max(1, len(labels)), 4), squeeze=False)
    for ax, (label, st) in zip(axes[0], labels.items()):
        for name, scores in st["scores"].items():
            for s in scores:
                ax.scatter(s, truth[name], s=12, color="tab:blue", alpha=0.6)
            ax.annotate(name.replace("seed", "s"), (sum(scores) / len(scores), truth[name]), fontsize=6)
        tau = st.get("tau")
        ax.set_title(f"{label}\ntau {tau:.2f}" if tau is not None else label, fontsize=9)
        ax.set_xlabel("proxy score (each seed)")
        ax.set_ylabel("val mIoU after 8 epochs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("score")
    p.add_argument("--preset", default="cpu-full")
    p.add_argument("--proxy-set", dest="set_", default=None, help="JSON object of proxy settings to override.")
    p.add_argument("--label", default=None, help="Name of this variant [PRESET-SET].")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--only", default=None, help="Score only these names (comma-separated).")
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data", default=default_data())
    p = sub.add_parser("latency")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seconds", type=float, default=3.0, help="Timed seconds per model over all rounds.")
    p = sub.add_parser("report")
    p.add_argument("--publish", action="store_true")
    for p in sub.choices.values():
        p.add_argument("--out", default="runs/fidelity")
    for p in (sub.choices["score"], sub.choices["report"]):
        p.add_argument("--set", dest="which", choices=SETS, default="eval")
    args = parser.parse_args(argv)
    {"score": score, "latency": latency, "report": report}[args.command](args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
