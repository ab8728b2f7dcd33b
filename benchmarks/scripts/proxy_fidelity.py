"""Proxy fidelity: does the search's proxy score rank architectures as a longer training does? (issue 11)

    python benchmarks/scripts/fidelity_truth.py --minutes 300                  # ground truth, once (resumable)
    python benchmarks/scripts/proxy_fidelity.py score --preset cpu-full --minutes 60 [--set eval|tune]
    python benchmarks/scripts/proxy_fidelity.py latency                        # the 14 beside arch0 (quiet host)
    python benchmarks/scripts/proxy_fidelity.py report [--publish]

``score`` proxy-trains every genotype of a set with the preset's schedule exactly as a search does
(``segfactory.search.proxy.train_candidate``, early stopping off), with two candidate seeds each on ONE prepared
ProxyData (the same held-out frames and stage-1 cache), and appends one line per (genotype, seed) to
OUT/scores-LABEL.jsonl (resumable: done pairs are skipped; ``--minutes`` bounds this invocation). The ``eval`` set
is the ground truth's 14 genotypes (arch0, arch1, ``arch sample`` seeds 200-211); the ``tune`` set is seeds 100-111
(a genotype over the preset's multiply-add limit is replaced by the next seed's), for tuning a preset without
looking at the 14. The same script runs against an older checkout of the package (PYTHONPATH) to score its proxy
("before the fixes"), since it only uses ProxyData.prepare and train_candidate.

``latency`` measures the 14 deployed models (agg 64, sep 2, 360x480, ONNX Runtime, 1 thread) interleaved with
arch0, for the "genotypes faster than arch0" subset. ``report`` computes, per label, Kendall's tau (with a
bootstrap 90% interval over genotypes) and Spearman's rho between the mean proxy score and val mIoU, the same per
seed, tau between the two seeds, and tau among the genotypes faster than arch0; prints a table and writes
OUT/proxy_fidelity.json and OUT/proxy_fidelity.png (``--publish``: also results/).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, default_data, machine

FORMAT = "segfactory.bench-proxy-fidelity/2"
TUNE_SEEDS = range(100, 112)


def eval_set() -> list[tuple[str, Any]]:
    from fidelity_truth import genotypes

    return genotypes()


def tune_set(settings, config) -> list[tuple[str, Any]]:
    from segfactory.factory.cost import model_cost
    from segfactory.factory.genotype import sample_genotype

    out, seed = [], TUNE_SEEDS.start
    while len(out) < len(TUNE_SEEDS):
        g = sample_genotype(random.Random(seed))
        limit = getattr(settings, "max_proxy_macs", None)
        if limit is None or model_cost(g, config, settings.crop).macs <= limit:
            out.append((f"seed{seed}", g))
        seed += 1
    return out


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
    todo = eval_set() if args.which == "eval" else tune_set(settings, config)
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
        row = {"label": label, "preset": args.preset, "name": name, "key": g.key(), "seed": s, "status": r.status,
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
    genotypes = eval_set()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        runners = [stack.enter_context(make_runner(ModelSpec(name, genotype=g, config=config), "ort",
                                                   input_size=(360, 480), threads=1, workdir=Path(tmp)))
                   for name, g in genotypes]  # arch0 first: ratios are to it
        res = measure_interleaved(runners, rounds=args.rounds, min_seconds=args.seconds)
    rows = [{"name": name, "key": g.key(), "median_ms": r["median_ms"], "ratio_to_arch0": r["ratio_to_first"],
             "round_median_min_ms": r["round_median_min_ms"], "round_median_max_ms": r["round_median_max_ms"]}
            for (name, g), r in zip(genotypes, res)]
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


def _label_stats(rows: list[dict[str, Any]], truth: dict[str, float], faster: set[str]) -> dict[str, Any]:
    from scipy.stats import kendalltau, spearmanr

    by_name: dict[str, dict[int, float | None]] = {}
    for r in rows:
        by_name.setdefault(r["name"], {})[r["seed"]] = r["score"]
    seeds = sorted({r["seed"] for r in rows})
    names = [n for n in truth if n in by_name and all(by_name[n].get(s) is not None for s in seeds)]
    mean = [sum(by_name[n][s] for s in seeds) / len(seeds) for n in names]
    miou = [truth[n] for n in names]
    out: dict[str, Any] = {"genotypes": len(names), "missing_or_failed": sorted(set(truth) - set(names)),
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
        fast = [i for i, n in enumerate(names) if n in faster]
        if len(fast) >= 3:
            out["tau_faster_than_arch0"] = float(kendalltau([mean[i] for i in fast], [miou[i] for i in fast]).statistic)
            out["faster_than_arch0"] = len(fast)
    return out


def report(args) -> None:
    from segfactory.factory.io import atomic_write_json

    out = Path(args.out)
    truth_doc = json.loads((out / "truth.json").read_text())
    truth = {r["name"]: r["val_miou"] for r in truth_doc["rows"]}
    lat_path = out / "latency.json"
    faster = set()
    if lat_path.is_file():
        faster = {r["name"] for r in json.loads(lat_path.read_text())["rows"] if r["ratio_to_arch0"] < 1.0}
    labels = {}
    for path in sorted(out.glob("scores-*.jsonl")):
        rows = [r for r in _read_jsonl(path) if r["name"] in truth]
        if rows:
            labels[path.stem[len("scores-"):]] = _label_stats(rows, truth, faster)
    doc = {"format": FORMAT, "machine": machine(), "truth": {"recipe": truth_doc["recipe"], "complete":
           truth_doc["complete"], "val_miou": truth}, "faster_than_arch0": sorted(faster), "labels": labels}
    atomic_write_json(out / "proxy_fidelity.json", doc)
    _plot(labels, truth, out / "proxy_fidelity.png")
    print(f"{'label':<28} {'n':>3} {'tau (90% CI)':>22} {'rho':>6} {'seed-seed tau':>14} {'tau fast':>9} "
          f"{'wall min':>9}")
    for label, st in labels.items():
        if "tau" not in st:
            continue
        fast = st.get("tau_faster_than_arch0")
        print(f"{label:<28} {st['genotypes']:>3} {st['tau']:>6.3f} ({st['tau_lo90']:+.2f}..{st['tau_hi90']:+.2f})"
              f" {st['rho']:>6.3f} {st.get('tau_seed_to_seed', float('nan')):>14.3f}"
              f" {fast if fast is None else round(fast, 3)!s:>9} {st['wall_minutes']:>9}")
    if args.publish:
        atomic_write_json(RESULTS / "proxy_fidelity.json", doc)
        import shutil

        shutil.copyfile(out / "proxy_fidelity.png", RESULTS / "proxy_fidelity.png")


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
    p.add_argument("--set", dest="which", choices=["eval", "tune"], default="eval")
    p.add_argument("--proxy-set", dest="set_", default=None, help="JSON object of proxy settings to override.")
    p.add_argument("--label", default=None, help="Name of this variant [PRESET-SET].")
    p.add_argument("--seeds", default="0,1")
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
    args = parser.parse_args(argv)
    {"score": score, "latency": latency, "report": report}[args.command](args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
