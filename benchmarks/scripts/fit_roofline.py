"""Fit the roofline's efficiency factors and fixed costs to jetson-latency.md's tier-A rows; print every row.

    python benchmarks/fit_roofline.py            # grid search, prints the best Params and the table

The fitted values are copied into ``segfactory.benchmarks.roofline.Params`` (the defaults there); the test
suite checks every row stays within 1.5x of the published figure.
"""

from __future__ import annotations

import itertools
import math

from segfactory.benchmarks.roofline import FITTED, SPECS, TIER_A, Params, estimate_ms, tier_a_kernels


def main() -> None:
    kernels = tier_a_kernels()
    rows = [(SPECS[t], kernels[(m, b)], p, ms) for _, t, m, b, p, ms in TIER_A]
    best = None
    grid = itertools.product([0.2, 0.3, 0.4, 0.55, 0.7], [0.1, 0.15, 0.25, 0.4, 0.6], [0.4, 0.5, 0.6, 0.75],
                             [2.0, 4.0, 6.0, 9.0, 12.0, 16.0], [0.0, 20.0, 40.0, 80.0, 150.0])
    for ed, edw, em, tk, tf in grid:
        p = Params(ed, edw, em, tk, tf)
        errs = [abs(math.log(estimate_ms(k, s, prec, p) / ms)) for s, k, prec, ms in rows]
        score = (max(errs), sum(e * e for e in errs))
        if best is None or score < best[0]:
            best = (score, p)
    (worst, sq), p = best
    print(f"best {p}  worst ratio x{math.exp(worst):.2f}  rms log {math.sqrt(sq / len(rows)):.3f}")
    for (row, t, m, b, prec, ms), (s, k, _, _) in zip(TIER_A, rows):
        for label, q in (("fitted", p), ("in use", FITTED)):
            est = estimate_ms(k, s, prec, q)
            print(f"row {row:>3} {t:17} {m:13} bs{b} {prec:5} published {ms:7.3f} ms  {label} {est:7.3f} ms"
                  f"  x{est / ms:.2f}")


if __name__ == "__main__":
    main()
