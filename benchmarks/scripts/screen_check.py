"""Were the candidates a search accepted untimed really under its latency limit? Time them now, beside arch0.

    python benchmarks/scripts/screen_check.py RUN_DIR [--top 10]

A search with this host's lookup table accepts a candidate predicted clearly under ``--max-latency-ratio`` without
timing it (``search/screen.py``). This measures the best ``--top`` of those (by reward, highest rung first, each
genotype once) interleaved with arch0 as the search's own measurements are, and writes RUN_DIR/screen_check.json:
per candidate the recorded (predicted) ratio, the measured one and whether it is within the limit. Timing: run it
on a quiet host.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import machine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)

    from segfactory.benchmarks.targets import get_target
    from segfactory.factory.config import ModelConfig
    from segfactory.factory.genotype import Genotype
    from segfactory.factory.io import atomic_write_json
    from segfactory.factory.zoo import ZOO
    from segfactory.search.trials import load_trials

    run = json.loads((args.run_dir / "run.json").read_text())
    limit = run["options"]["max_latency_ratio"]
    trials, _ = load_trials(args.run_dir / "trials.jsonl")
    untimed = sorted((t for t in trials if t.get("latency_source") == "lut" and t.get("status") == "ok"),
                     key=lambda t: (-int(t.get("rung") or 0), -t["reward"]))
    chosen, seen = [], set()
    for t in untimed:
        if t["key"] not in seen:
            seen.add(t["key"])
            chosen.append(t)
    chosen = chosen[:args.top]
    deploy, size = ModelConfig.from_dict(run["deploy_config"]), tuple(run["input_size"])
    reference = run["reference"]
    target = get_target("cpu", threads=run["target"].get("threads"))
    target.set_reference(ZOO["arch0"], ModelConfig.from_dict(reference["model_config"]), size,
                         reference["latency_ms"])
    rows = []
    for t in chosen:
        lat = target.latency(Genotype.from_dict(t["genotype"]), deploy, size)
        measured = float(lat.detail["ratio"])
        rows.append({"index": t["index"], "key": t["key"], "rung": t.get("rung", 0), "reward": t["reward"],
                     "recorded_ratio": t["latency_ratio"], "calibration": t.get("latency_calibration"),
                     "measured_ratio": measured, "within_limit": measured <= limit})
        print(f"#{t['index']:<4} {t['key']} recorded {t['latency_ratio']:.3f} measured {measured:.3f} "
              f"{'ok' if measured <= limit else 'OVER'} the limit {limit:g}", flush=True)
    within = sum(r["within_limit"] for r in rows)
    result = {"format": "segfactory.bench-screen-check/1", "machine": machine(), "run": str(args.run_dir),
              "limit": limit, "rows": rows, "within_limit": within, "checked": len(rows)}
    atomic_write_json(args.run_dir / "screen_check.json", result)
    print(f"{within}/{len(rows)} within the limit; wrote {args.run_dir / 'screen_check.json'}")


if __name__ == "__main__":
    main()
