"""Zero-cost scores against the ground truth: does a score at initialisation rank decoders? (issue 20.3)

    python benchmarks/scripts/zero_cost.py [--sets eval,tune,fresh] [--publish]

Computes every score of ``segfactory.search.zero_cost.SCORES`` for the genotypes of each fidelity set
(``fidelity_truth.py``), in the search's proxy configuration (agg 48, sep 1, bundled encoder) at the cpu-small
crop (128x160), two seeds each (synflow depends on the decoder's initialisation), and where a set's ground truth
is published, Kendall's tau (bootstrap 90% interval) and Spearman's rho of the mean score against val mIoU, and
tau among the set's light genotypes (the fresh set's seeds from 600 on; the eval set's 8 faster than arch0).
Seconds per genotype are recorded. Writes runs/zero_cost.json (``--publish``: results/zero_cost.json).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine
from fidelity_truth import genotypes, light, truth
from proxy_fidelity import _tau_ci

SIZE, SEEDS = (128, 160), (0, 1)


def _stats(scores: dict[str, float], truth: dict[str, float], light: set[str]) -> dict:
    from scipy.stats import kendalltau, spearmanr

    names = [n for n in scores if n in truth]
    if len(names) < 4:
        return {"genotypes": len(names)}
    x, y = [scores[n] for n in names], [truth[n] for n in names]
    tau, lo, hi = _tau_ci(x, y)
    out = {"genotypes": len(names), "tau": tau, "tau_lo90": lo, "tau_hi90": hi,
           "rho": float(spearmanr(x, y).statistic)}
    fast = [n for n in names if n in light]
    if len(fast) >= 3:
        out["tau_light"] = float(kendalltau([scores[n] for n in fast], [truth[n] for n in fast]).statistic)
        out["light"] = len(fast)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="eval,tune,fresh")
    parser.add_argument("--publish", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from segfactory.factory.config import ModelConfig
    from segfactory.factory.io import atomic_write_json
    from segfactory.search.zero_cost import SCORES

    torch.set_num_threads(1)
    config = ModelConfig.create(11, 48, 1, "bundled")
    doc = {"format": "segfactory.bench-zero-cost/1", "machine": machine(), "size": list(SIZE), "seeds": list(SEEDS),
           "config": config.to_dict(), "sets": {}}
    for which in args.sets.split(","):
        truth_of, light_of, rows = truth(which), light(which), []
        for name, g in genotypes(which):
            row = {"name": name, "key": g.key(), "val_miou": truth_of.get(name)}
            for score in SCORES:
                t = time.perf_counter()
                row[score] = sum(SCORES.get(score)(g, config, SIZE, seed=s) for s in SEEDS) / len(SEEDS)
                row[f"{score}_s"] = (time.perf_counter() - t) / len(SEEDS)
            rows.append(row)
        stats = {score: _stats({r["name"]: r[score] for r in rows}, truth_of, light_of) for score in SCORES}
        doc["sets"][which] = {"rows": rows, "stats": stats, "truth_rows": len(truth_of)}
        for score, st in stats.items():
            if "tau" in st:
                print(f"{which:5s} {score:15s} n={st['genotypes']:2d} tau {st['tau']:+.2f} "
                      f"({st['tau_lo90']:+.2f}..{st['tau_hi90']:+.2f}) rho {st['rho']:+.2f} "
                      f"light tau {st.get('tau_light', float('nan')):+.2f}", flush=True)
            else:
                print(f"{which:5s} {score:15s} ground truth for {st['genotypes']} genotypes: no tau yet", flush=True)
    atomic_write_json(Path("runs") / "zero_cost.json", doc)
    if args.publish:
        atomic_write_json(RESULTS / "zero_cost.json", doc)


if __name__ == "__main__":
    main()
