"""Proxy fidelity: does the search's proxy score rank architectures as a longer training does?

    python benchmarks/proxy_fidelity.py --minutes 120 [--data camvid:PATH] [--count 10] [--out runs/proxy_fidelity]

For ``--count`` genotypes (arch0, arch1 and seeded random ones), it takes
1. the proxy score: ``segfactory search --strategy list`` with the ``--preset`` (default cpu-small), i.e. exactly
   the score a search computes, on the held-out frames of the train split, early stopping off;
2. the val mIoU after a longer training: ``segfactory train`` (released configuration, ``--epochs``), then
   ``segfactory eval --split val --json``;
and reports Kendall's tau between them (the proxy is only as good as this figure), plus Spearman's rho.
Everything goes through the command line (benchmarks may not import the search package). Resumable: finished
trainings are skipped, an interrupted one continues with ``--resume``; ``--minutes`` bounds this invocation.
Writes OUT/proxy_fidelity.json with the machine description and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from segfactory.benchmarks.stats import kendall_tau

FORMAT = "segfactory.bench-proxy-fidelity/1"


def default_data() -> str:
    shared = Path(os.environ.get("SEGFACTORY_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    return f"camvid:{shared / 'data' / 'camvid'}"


def cli(*args: str, capture: bool = True) -> str:
    r = subprocess.run([sys.executable, "-m", "segfactory.factory.cli", *args], text=True, capture_output=capture, check=False)
    if r.returncode != 0:
        raise SystemExit(f"segfactory {' '.join(args[:2])} failed: {(r.stderr or '').strip()[-600:]}")
    return r.stdout


def spearman(x: list[float], y: list[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for k, i in enumerate(order):
            r[i] = float(k)
        return r

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / var if var else float("nan")


def machine() -> dict[str, Any]:
    import torch
    from segfactory.benchmarks.runners import cpu_description

    return {"cpu": cpu_description(), "cores": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "torch": torch.__version__}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, required=True, help="Wall-clock bound of this invocation.")
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--out", default="runs/proxy_fidelity")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--epochs", type=int, default=8, help="Epochs of the longer training.")
    parser.add_argument("--crop", default="256x256")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    from segfactory.factory.genotype import Genotype
    from segfactory.factory.io import atomic_write_json
    from segfactory.factory.zoo import ZOO

    deadline = time.monotonic() + 60 * args.minutes
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    glist = out / "genotypes.txt"
    if not glist.is_file():
        sampled = cli("arch", "sample", "--seed", str(args.seed), "--count", str(max(0, args.count - 2)))
        lines = [ZOO["arch0"].to_json(), ZOO["arch1"].to_json(), *sampled.strip().splitlines()]
        glist.write_text("\n".join(lines[: args.count]) + "\n")
    genotypes = [json.loads(line) for line in glist.read_text().splitlines() if line.strip()]
    env_threads = ["--threads", str(args.threads)] if args.threads else []

    # 1. proxy scores, exactly as a search computes them
    search_dir = out / "proxy"
    search_args = ["search", "--out", str(search_dir), "--data", args.data, "--strategy", "list", "--genotypes",
                   str(glist), "--budget", str(len(genotypes)), "--preset", args.preset, "--device", "cpu",
                   "--no-early-stopping", "--latency-weight", "0", "--seed", str(args.seed), "-q", *env_threads]
    if (search_dir / "run.json").is_file():
        search_args.append("--resume")
    print(f"proxy scores of {len(genotypes)} genotypes ({args.preset})", flush=True)
    cli(*search_args)
    proxy = {}
    for line in (search_dir / "trials.jsonl").read_text().splitlines():
        t = json.loads(line)
        proxy[t["key"]] = t

    # 2. longer trainings
    rows = []
    for i, g in enumerate(genotypes):
        key = Genotype.from_dict(g).key()
        d = out / f"train-{i:02d}"
        gfile = out / f"genotype-{i:02d}.json"
        gfile.write_text(json.dumps(g) + "\n")
        metrics_file = d / "eval.json"
        if not metrics_file.is_file():
            if time.monotonic() > deadline:
                print(f"  out of time before genotype {i}; rerun to continue", flush=True)
                break
            print(f"  training genotype {i} for {args.epochs} epochs", flush=True)
            train = ["train", "--arch", str(gfile), "--data", args.data, "--epochs", str(args.epochs), "--out", str(d),
                     "--crop", args.crop, "--device", "cpu", "--seed", str(args.seed), "-q"]
            if (d / "last.pt").is_file():
                train.append("--resume")
            cli(*train)
            metrics_file.write_text(cli("eval", "--checkpoint", str(d / "model.pt"), "--data", args.data,
                                        "--split", "val", "--json"))
        ev = json.loads(metrics_file.read_text())
        t = proxy.get(key)
        rows.append({"index": i, "key": key, "proxy_score": t.get("score") if t else None,
                     "proxy_status": t.get("status") if t else None, "val_miou": ev["miou"], "val_score": ev["score"]})
    pairs = [(r["proxy_score"], r["val_miou"]) for r in rows if r["proxy_score"] is not None]
    tau = kendall_tau(*map(list, zip(*pairs))) if len(pairs) >= 3 else None
    rho = spearman(*map(list, zip(*pairs))) if len(pairs) >= 3 else None
    result = {"format": FORMAT, "machine": machine(), "data": args.data, "preset": args.preset,
              "epochs": args.epochs, "rows": rows, "kendall_tau": tau, "spearman_rho": rho,
              "complete": len(rows) == len(genotypes)}
    atomic_write_json(out / "proxy_fidelity.json", result)
    print(f"\n{'#':>2} {'key':<13} {'proxy score':>11} {'val mIoU':>9}")
    for r in rows:
        ps = f"{r['proxy_score']:.4f}" if r["proxy_score"] is not None else "-"
        print(f"{r['index']:>2} {r['key']:<13} {ps:>11} {r['val_miou']:>9.4f}")
    print(f"\nKendall tau {tau if tau is None else round(tau, 3)}, Spearman rho "
          f"{rho if rho is None else round(rho, 3)} over {len(pairs)} genotypes"
          + ("" if result["complete"] else " (incomplete: rerun to continue)"))


if __name__ == "__main__":
    main()
