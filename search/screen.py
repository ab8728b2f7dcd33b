"""Under ``--max-latency-ratio``, time only the candidates whose feasibility is in doubt.

A measured target (the cpu target without ``--lut``) times a candidate beside arch0 for several seconds; most
proposals under a tight limit are clearly over it, and many feasible ones clearly under. Before timing, the
cheapest sufficient prediction of the candidate's latency ratio decides, in turn:

- **a line** from multiply-adds to the ratio, fitted to the candidates whose ratio is known so far (arch0 at 1.0
  among them; before three are known, the ratio of multiply-adds to arch0's, which underestimates light decoders,
  so it rejects only clear cases): over ``limit x --latency-screen`` (1.3 by default) is rejected untimed;
- **this host's lookup table** (``segfactory profile --target cpu``, found by :mod:`segfactory.benchmarks.lut.cache`
  for the search's configuration), when there is one: the ratio of the candidate's predicted latency to arch0's,
  both from the table (about a second). Over ``limit x`` :data:`TABLE_BAND`: rejected untimed; under
  ``limit /`` :data:`TABLE_BAND`: accepted with that ratio (latency source ``lut``, in ms the ratio times arch0's
  latency measured at the start); between: timed. The table's ratio is first multiplied by the median error of
  the candidates timed so far (:meth:`LatencyScreen.calibration`). The tables profiled on this project's hosts predict unseen
  genotypes with a mean absolute error of 3.7-4.9% (``results/latency_predictor.json``,
  ``results/latency_predictor/evaluation_amd.json``): within about one such error of the limit a prediction cannot
  tell the side, hence the band;
- everything else is timed beside arch0.

A timed candidate records the table's prediction too (``latency_predicted_ratio``), so each search shows how good
the screen was.
"""

from __future__ import annotations

from typing import Any

TABLE_BAND = 1.05  # with this host's table: measured only within limit / 1.05 .. limit x 1.05


class LatencyScreen:
    """The screen of one search (see the module docstring); ``points``: (MACs, ratio) of the candidates measured
    or accepted from the table."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.points: list[tuple[int, float]] = []
        self.pairs: list[tuple[float, float]] = []  # (table's ratio, measured ratio) of the candidates timed
        self.table, self.why_not = None, "the target's latency is not measured here"
        self._arch0_ms: float | None = None
        o = ctx.options
        if o.max_latency_ratio is not None and getattr(ctx.target, "profiled_here", False) \
                and getattr(ctx.target, "lut", None) is None:
            from segfactory.benchmarks.lut.cache import find_host_table

            self.table, self.why_not = find_host_table(ctx.deploy_config, ctx.input_size, ctx.target.threads)

    def describe(self) -> str:
        o = self.ctx.options
        if o.max_latency_ratio is None:
            return "every candidate within the cost limits is timed"
        line = ("" if o.latency_screen is None else
                f"candidates over x{o.latency_screen:g} the limit on a multiply-add line are rejected untimed; ")
        if self.table is not None:
            return line + (f"this host's lookup table {self.table.path} judges the rest; only those within "
                           f"x{TABLE_BAND:g} of the limit are timed")
        return line + f"the rest are timed ({self.why_not})"

    def observe(self, trial: dict[str, Any]) -> None:
        """Learn from a recorded rung-0 trial: its ratio for the line, and the table's error if it was timed."""
        if trial.get("latency_ratio") is not None and trial.get("macs"):
            self.points.append((trial["macs"], trial["latency_ratio"]))
        if trial.get("latency_predicted_ratio") and trial.get("latency_source") == "measured":
            self.pairs.append((trial["latency_predicted_ratio"], trial["latency_ratio"]))

    def calibration(self) -> float:
        """The median of measured over predicted ratio of the candidates timed so far (1 before three are).

        Near the limit the table under-predicted light decoders: on the AMD host, 12 candidates timed in the first
        20-minute search measured 1.5-8% above the table (its fitting genotypes are mostly heavier ones, and those
        predicted just under the limit are selected among many predicted over it), so accepting on the raw
        prediction would let some over the limit through."""
        if len(self.pairs) < 3:
            return 1.0
        import statistics

        return statistics.median(m / p for p, m in self.pairs)

    def predicted_ratio(self, genotype: Any) -> float | None:
        """The table's latency ratio to arch0 for ``genotype``; None without a table."""
        if self.table is None:
            return None
        from segfactory.benchmarks.lut.table import predict_latency
        from segfactory.factory.zoo import ZOO
        from segfactory.search.context import reference_config

        if self._arch0_ms is None:
            self._arch0_ms = predict_latency(ZOO["arch0"], reference_config(self.ctx.deploy_config), self.table)
        return predict_latency(genotype, self.ctx.deploy_config, self.table) / self._arch0_ms

    def judge(self, genotype: Any, macs: int) -> tuple[str, Any]:
        """("reject", reason), ("accept", the trial's latency fields) or ("time", the table's ratio or None)."""
        o = self.ctx.options
        limit = o.max_latency_ratio
        if limit is None:
            return "time", None
        if o.latency_screen is not None:
            predicted, how = self._line(macs)
            if predicted > limit * o.latency_screen:
                return "reject", (f"latency predicted at {predicted:.2f} x arch0 from {how}, over "
                                  f"--max-latency-ratio {limit:g} x --latency-screen {o.latency_screen:g}: not timed")
        table = self.predicted_ratio(genotype)
        if table is None:
            return "time", None
        factor = self.calibration()
        ratio = table * factor
        said = f"{ratio:.3f} x arch0 by this host's lookup table" + (f" (x{factor:.3f}, calibrated)" if factor != 1 else "")
        if ratio > limit * TABLE_BAND:
            return "reject", f"latency predicted at {said}, over --max-latency-ratio {limit:g} x {TABLE_BAND:g}: not timed"
        if ratio < limit / TABLE_BAND:  # (its trial adds the point to the line)
            return "accept", {"latency_ms": ratio * self.ctx.reference["latency_ms"], "latency_source": "lut",
                              "latency_ratio": ratio, "latency_calibration": factor}
        return "time", table

    def _line(self, macs: int) -> tuple[float, str]:
        points = [(self.ctx.reference["macs"], 1.0), *self.points]
        if len(points) >= 3:
            import numpy as np

            x, y = np.array(points, dtype=float).T
            slope, intercept = np.polyfit(x, y, 1)
            return float(intercept + slope * macs), f"a line fitted to {len(points)} timed models"
        return macs / self.ctx.reference["macs"], "its multiply-adds over arch0's"


def latency_fields(lat: Any, reference_ms: float | None) -> dict[str, Any]:
    """What a trial records of a latency: ms and source, the ratio to arch0 (``reference_ms``) and, when measured
    beside arch0, the candidate's raw median and arch0's median in the same rounds."""
    d = lat.detail
    fields: dict[str, Any] = {"latency_ms": lat.ms, "latency_source": lat.source}
    if d.get("ratio") is not None:  # interleaved with arch0 (cpu target)
        fields.update(latency_ratio=d["ratio"], latency_raw_ms=d["raw_median_ms"],
                      latency_reference_ms=d["reference_median_ms"])
    elif reference_ms:
        fields["latency_ratio"] = lat.ms / reference_ms
    if d.get("device_info"):
        fields["latency_device"] = d["device_info"]  # the device agent's description
    return fields
