"""Fit the roofline's efficiency factors and fixed costs to jetson-latency.md's tier-A rows; judge them out of sample.

    python benchmarks/scripts/fit_roofline.py                  # grid search, prints the best Params and the table
    python benchmarks/scripts/fit_roofline.py --out-of-sample  # + leave-one-model-out / leave-one-device-out,
                                                               #   JSON in results/roofline_oos.json

The fitted values are copied into ``segfactory.benchmarks.roofline.Params`` (the defaults there); the test
suite checks every row stays within 1.5x of the published figure. Those ratios are in-sample: the five factors
were chosen on the same 22 rows. Out of sample, each model (device) is left out in turn, the grid fit is
redone on the other rows, and the left-out rows are scored. Where the rows left in cannot identify a factor
the left-out rows need (MobileNetV2 is the only model with depthwise convolutions, so ``eff_dw`` is fitted
on it alone), the left-out rows are "not computable": every grid value of that factor fits the rest equally,
and the report gives the range of ratios those values give instead of one figure.
It takes about a minute (the grid is 3,000 points, evaluated with numpy).
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from segfactory.benchmarks.roofline import BYTES, FITTED, SPECS, TIER_A, Params, estimate_ms, tier_a_kernels

GRID = (
    [0.2, 0.3, 0.4, 0.55, 0.7],  # eff_dense
    [0.1, 0.15, 0.25, 0.4, 0.6],  # eff_dw
    [0.4, 0.5, 0.6, 0.75],  # eff_mem
    [2.0, 4.0, 6.0, 9.0, 12.0, 16.0],  # t_kernel_us
    [0.0, 20.0, 40.0, 80.0, 150.0],  # t_fixed_us
)


def grid_params() -> np.ndarray:
    return np.array(list(itertools.product(*GRID)), dtype=float)  # (P, 5)


def row_estimates(kernels, spec, precision: str, P: np.ndarray) -> np.ndarray:
    """Estimated ms of one row for every parameter vector of ``P`` (roofline.kernel_time_s, vectorised)."""
    kinds = np.array([k.kind for k in kernels.kernels])
    flops = np.array([k.flops for k in kernels.kernels])
    elems = np.array([k.elems for k in kernels.kernels])
    ed, edw, em, tk, tf = (P[:, i:i + 1] for i in range(5))
    mem = elems * BYTES[precision] / (spec.bandwidth_gbs * 1e9 * em)
    compute = np.where(kinds == "conv", flops / (spec.tensor_peak(precision) * ed),
                       np.where(kinds == "dwconv", flops / (spec.cuda_core_peak * 2 * edw), 0.0))
    per_kernel = np.maximum(compute, mem) + tk * 1e-6
    return 1000.0 * (tf[:, 0] * 1e-6 + per_kernel.sum(axis=1))


def log_errors(rows, P) -> np.ndarray:
    """|log(estimate / published)| of each row (columns) for every parameter vector (rows)."""
    kernels = tier_a_kernels()
    return np.column_stack([np.abs(np.log(row_estimates(kernels[(m, b)], SPECS[t], prec, P) / ms))
                            for _, t, m, b, prec, ms in rows])


def best_index(errors: np.ndarray) -> np.ndarray:
    """Indices of the grid points with the best (worst error, sum of squares), ties all kept."""
    worst = errors.max(axis=1).round(12)
    sq = (errors ** 2).sum(axis=1).round(12)
    best = min(zip(worst, sq))
    return np.flatnonzero((worst == best[0]) & (sq == best[1]))


def _ratios(rows, P_rows: np.ndarray) -> list[list[float]]:
    kernels = tier_a_kernels()
    return [[float(r) for r in row_estimates(kernels[(m, b)], SPECS[t], prec, P_rows) / ms]
            for _, t, m, b, prec, ms in rows]


def fit(rows, P) -> dict[str, Any]:
    errors = log_errors(rows, P)
    idx = best_index(errors)
    p = P[idx[0]]
    return {"params": dict(zip(Params.__dataclass_fields__, map(float, p))), "tied": len(idx),
            "worst_ratio": float(math.exp(errors[idx[0]].max())),
            "rms_log": float(math.sqrt((errors[idx[0]] ** 2).mean())), "idx": idx}


def leave_out(rows, P, field: int) -> list[dict[str, Any]]:
    """Leave each value of TIER_A column ``field`` (2: model, 1: device) out in turn; score it on the fit of the rest."""
    out = []
    for held in sorted({r[field] for r in rows}):
        train = [r for r in rows if r[field] != held]
        test = [r for r in rows if r[field] == held]
        f = fit(train, P)
        tied = P[f["idx"]]
        ratios = _ratios(test, tied)  # per test row: the ratio under every tied grid point
        identified = all(max(rs) / min(rs) < 1.0 + 1e-9 for rs in ratios)
        entry: dict[str, Any] = {"held_out": held, "train_rows": len(train), "params": f["params"],
                                 "tied_grid_points": f["tied"], "computable": identified, "rows": []}
        for r, rs in zip(test, ratios):
            entry["rows"].append({"row": r[0], "target": r[1], "model": r[2], "batch": r[3], "precision": r[4],
                                  "published_ms": r[5], "ratio": rs[0] if identified else None,
                                  "ratio_range": [min(rs), max(rs)]})
        if identified:
            logs = [abs(math.log(x["ratio"])) for x in entry["rows"]]
            entry["worst_ratio"] = math.exp(max(logs))
        else:
            entry["why_not"] = ("the rows left in do not identify every factor these rows need (e.g. eff_dw: "
                                "MobileNetV2 is the only depthwise model); ratio_range spans the tied fits")
        out.append(entry)
    return out


def summary(entries: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = [x["ratio"] for e in entries if e["computable"] for x in e["rows"]]
    if not ratios:
        return {"computable_rows": 0}
    logs = [abs(math.log(r)) for r in ratios]
    return {"computable_rows": len(ratios), "worst_ratio": math.exp(max(logs)),
            "rms_log": math.sqrt(sum(x * x for x in logs) / len(logs)),
            "min_ratio": min(ratios), "max_ratio": max(ratios),
            "not_computable": [e["held_out"] for e in entries if not e["computable"]],
            # over the tied fits: the range the left-out rows fall in whatever value the unidentified factor takes
            "not_computable_ranges": {e["held_out"]: [min(x["ratio_range"][0] for x in e["rows"]),
                                                      max(x["ratio_range"][1] for x in e["rows"])]
                                      for e in entries if not e["computable"]}}


def print_in_sample(rows, P) -> None:
    f = fit(rows, P)
    p = Params(*f["params"].values())
    print(f"best {p}  worst ratio x{f['worst_ratio']:.2f}  rms log {f['rms_log']:.3f}  ({f['tied']} tied)")
    kernels = tier_a_kernels()
    for row, t, m, b, prec, ms in rows:
        for label, q in (("fitted", p), ("in use", FITTED)):
            est = estimate_ms(kernels[(m, b)], SPECS[t], prec, q)
            print(f"row {row:>3} {t:17} {m:13} bs{b} {prec:5} published {ms:7.3f} ms  {label} {est:7.3f} ms"
                  f"  x{est / ms:.2f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-of-sample", action="store_true", help="also leave one model / device out in turn")
    ap.add_argument("--out", type=Path, default=Path("results/roofline_oos.json"))
    args = ap.parse_args(argv)
    rows, P = list(TIER_A), grid_params()
    print_in_sample(rows, P)
    if not args.out_of_sample:
        return
    t0 = time.monotonic()
    in_sample = fit(rows, P)
    in_sample.pop("idx")
    lomo, lodo = leave_out(rows, P, 2), leave_out(rows, P, 1)
    report = {"format": "segfactory.roofline-oos/1", "rows": len(rows), "grid_points": len(P),
              "in_sample": in_sample, "in_use": dict(zip(Params.__dataclass_fields__, FITTED.__dict__.values())),
              "leave_one_model_out": {"summary": summary(lomo), "folds": lomo},
              "leave_one_device_out": {"summary": summary(lodo), "folds": lodo},
              "seconds": round(time.monotonic() - t0, 1)}
    from segfactory.factory.io import atomic_write_json

    atomic_write_json(args.out, report)
    for label, entries in (("leave one model out", lomo), ("leave one device out", lodo)):
        for e in entries:
            shown = (f"worst x{e['worst_ratio']:.2f}" if e["computable"] else
                     "not computable: ratios " + ", ".join(f"{x['ratio_range'][0]:.2f}-{x['ratio_range'][1]:.2f}"
                                                           for x in e["rows"][:3]) + " ...")
            print(f"{label}: {e['held_out']:17} ({len(e['rows'])} rows) {shown}")
        s = summary(entries)
        if s["computable_rows"]:
            ranges = ", ".join(f"{k} {a:.2f}-{b:.2f} over the tied fits" for k, (a, b) in
                               s["not_computable_ranges"].items())
            print(f"{label}: {s['computable_rows']} computable rows, ratios {s['min_ratio']:.2f}-{s['max_ratio']:.2f},"
                  f" worst x{s['worst_ratio']:.2f}; not computable: {ranges or 'none'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
