"""The latency screen's decisions (search.screen): the multiply-add line, the table's band, and the calibration of
the table against the candidates timed so far."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from segfactory.search.screen import TABLE_BAND, LatencyScreen


def screen(table_says: float | None, limit: float = 0.5, line: float | None = None) -> LatencyScreen:
    ctx = SimpleNamespace(options=SimpleNamespace(max_latency_ratio=limit, latency_screen=line),
                          target=SimpleNamespace(), reference={"latency_ms": 100.0, "macs": 1_000_000})
    s = LatencyScreen(ctx)
    s.predicted_ratio = lambda genotype: table_says
    return s


@pytest.mark.parametrize("said, verdict", [(0.5 * TABLE_BAND * 1.01, "reject"), (0.5 / TABLE_BAND * 0.99, "accept"),
                                           (0.5, "time")])
def test_the_tables_band(said, verdict):
    got, detail = screen(said).judge(None, macs=400_000)
    assert got == verdict
    if verdict == "accept":
        assert detail == {"latency_ms": pytest.approx(100 * said), "latency_source": "lut",
                          "latency_ratio": pytest.approx(said), "latency_calibration": 1.0}
    if verdict == "time":
        assert detail == said  # recorded beside the measurement


def test_the_table_is_calibrated_by_the_candidates_timed():
    s = screen(0.46)  # under 0.5 / 1.05 = 0.476: accepted as the table says it
    assert s.judge(None, macs=1)[0] == "accept"
    for predicted in (0.50, 0.51, 0.52):  # each measured 10% above the table
        s.observe({"latency_predicted_ratio": predicted, "latency_ratio": 1.1 * predicted,
                   "latency_source": "measured", "macs": 1})
    assert s.calibration() == pytest.approx(1.1)
    assert s.judge(None, macs=1)[0] == "time"  # 0.46 x 1.1 = 0.506: near the limit now
    s.observe({"latency_ratio": 0.3, "latency_source": "lut", "macs": 1})  # accepted untimed: no pair
    assert len(s.pairs) == 3 and len(s.points) == 4


def test_the_line_rejects_only_clear_cases_before_the_table():
    s = screen(None, line=1.3)
    assert s.judge(None, macs=1_000_000)[0] == "reject"  # as many MACs as arch0: 1.0 x arch0 > 0.5 x 1.3
    assert s.judge(None, macs=600_000) == ("time", None)  # 0.6 < 0.65: timed (no table)
