"""Latency drift: the same 8 genotypes' ``latency_ms`` in two searches minutes apart, before and after issue 11.

    python benchmarks/scripts/latency_drift.py run --label before --code /tmp/oldsite   # an older install
    python benchmarks/scripts/latency_drift.py run --label after
    ... wait some minutes (the host changes speed state), then the same two commands again ...
    python benchmarks/scripts/latency_drift.py report [--publish]

Each ``run`` is a real ``segfactory search`` (strategy ``list``: arch0 and 7 seeded random genotypes, the tiny
``test`` proxy, target ``cpu``, the deployed model at 360x480) of the code on PYTHONPATH ``--code`` (default: this
checkout), so its ``latency_ms`` is exactly what a search records: before issue 11, each candidate timed alone
minutes after arch0; after, timed beside arch0 in the same rounds and scaled by arch0's latency at the start.
``report`` gives, per label, the spread of each genotype's latency_ms between the label's first two runs
(|a - b| / mean: median and max over the genotypes), and writes OUT/latency_drift.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, machine

MINI = Path(__file__).resolve().parents[2] / "data" / "camvid-mini"  # as camvid:PATH, which older code reads too


def genotypes_file(out: Path) -> Path:
    from segfactory.factory.genotype import sample_genotype
    from segfactory.factory.zoo import ZOO

    path = out / "genotypes.txt"
    if not path.is_file():
        lines = ["arch0"] + [sample_genotype(random.Random(seed)).to_json() for seed in range(300, 307)]
        out.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    assert ZOO["arch0"]
    return path


def run(args) -> None:
    out = Path(args.out)
    runs = sorted(out.glob(f"{args.label}-*"))
    d = out / f"{args.label}-{len(runs) + 1}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if args.code:
        env["PYTHONPATH"] = args.code
    cmd = [sys.executable, "-m", "segfactory.factory.cli", "search", "--strategy", "list", "--genotypes",
           str(genotypes_file(out)), "--budget", "8", "--preset", "test", "--data", f"camvid:{MINI}", "--target", "cpu",
           "--input-size", "360x480", "--threads", "1", "--seed", "0", "--out", str(d), "-q"]
    t0 = time.time()
    subprocess.run(cmd, env=env, check=True)
    trials = [json.loads(line) for line in (d / "trials.jsonl").read_text().splitlines()]
    rows = [{"index": t["index"], "latency_ms": t["latency_ms"], "latency_ratio": t.get("latency_ratio"),
             "raw_ms": t.get("latency_raw_ms"), "status": t["status"]} for t in trials]
    (d / "latency.json").write_text(json.dumps({"started": t0, "rows": rows}))
    print(f"{d}: " + ", ".join(f"{r['latency_ms']:.1f}" for r in rows if r["latency_ms"]))


def report(args) -> None:
    import statistics

    from segfactory.factory.io import atomic_write_json

    out = Path(args.out)
    doc = {"machine": machine(), "labels": {}}
    for label in ("before", "after"):
        runs = sorted(out.glob(f"{label}-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))[:2]
        if len(runs) < 2:
            continue
        a, b = (json.loads((r / "latency.json").read_text()) for r in runs)
        pairs = [(x["latency_ms"], y["latency_ms"]) for x, y in zip(a["rows"], b["rows"])
                 if x["latency_ms"] and y["latency_ms"]]
        spreads = [abs(x - y) / ((x + y) / 2) for x, y in pairs]
        doc["labels"][label] = {"minutes_apart": round((b["started"] - a["started"]) / 60, 1),
                                "median_spread": statistics.median(spreads), "max_spread": max(spreads),
                                "pairs_ms": pairs}
        print(f"{label}: {len(pairs)} genotypes, runs {doc['labels'][label]['minutes_apart']} min apart: spread of "
              f"latency_ms median {100 * statistics.median(spreads):.1f}%, max {100 * max(spreads):.1f}%")
    atomic_write_json(out / "latency_drift.json", doc)
    if args.publish:
        atomic_write_json(RESULTS / "latency_drift.json", doc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--label", choices=["before", "after"], required=True)
    p.add_argument("--code", default=None, help="PYTHONPATH of the segfactory to run [this checkout].")
    p = sub.add_parser("report")
    p.add_argument("--publish", action="store_true")
    for p in sub.choices.values():
        p.add_argument("--out", default="runs/latency_drift")
    args = parser.parse_args(argv)
    {"run": run, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
