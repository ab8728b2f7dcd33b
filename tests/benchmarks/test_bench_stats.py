"""Timing statistics, the trtexec parser on real trtexec output, and the harness loop."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segfactory.benchmarks import stats
from segfactory.benchmarks.harness import measure, measure_interleaved
from segfactory.benchmarks.trtexec import parse_trtexec_output, summary_fields, trtexec_command
from segfactory.factory.errors import InputError, RunError

DATA = Path(__file__).resolve().parents[1] / "data"


def test_summarize_hand_computed():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0, 10.0], batch=2)
    assert s["min_ms"] == 1.0 and s["max_ms"] == 10.0
    assert s["mean_ms"] == 4.0 and s["median_ms"] == 3.0
    assert s["p90_ms"] == pytest.approx(4.0 + 0.6 * 6.0)  # position 3.6 between 4 and 10
    assert s["std_ms"] == pytest.approx(math.sqrt((9 + 4 + 1 + 0 + 36) / 5))
    assert s["iterations"] == 5 and s["throughput"] == pytest.approx(500.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.01, 1e4), min_size=1, max_size=60), st.floats(0, 100))
def test_percentile_matches_numpy(xs, q):
    np = pytest.importorskip("numpy")
    assert stats.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-9, abs=1e-9)


def test_kendall_tau_and_errors():
    assert stats.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert stats.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert stats.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert stats.mape([10, 20], [11, 18]) == pytest.approx(0.1)
    assert stats.share_within([10, 20, 30], [10.5, 23, 30]) == pytest.approx(2 / 3)
    with pytest.raises(InputError):
        stats.summarize([])


def test_parse_real_trtexec_log_orin():
    parsed = parse_trtexec_output((DATA / "trtexec_orin_fp16.log").read_text())
    gpu = parsed["gpu_compute"]
    assert gpu == {"min_ms": 37.3687, "max_ms": 46.7526, "mean_ms": 40.6098, "median_ms": 40.3651,
                   "p90_ms": 43.1836, "p95_ms": 45.4991, "p99_ms": 46.7526}
    assert parsed["latency"]["median_ms"] == 42.4526 and parsed["h2d"]["mean_ms"] == 0.743482
    assert parsed["throughput_qps"] == 24.4584 and parsed["cov"] == pytest.approx(0.0558526)
    fields = summary_fields(parsed, "fp16", (1, 3, 1080, 1920))
    assert fields["median_ms"] == 40.3651 and fields["p99_ms"] == 46.7526
    assert fields["iterations"] == round(3086.34 / 40.6098) == 76
    assert fields["std_ms"] == pytest.approx(0.0558526 * 40.6098)


def test_parse_real_trtexec_log_trt8_only_p99():
    parsed = parse_trtexec_output((DATA / "trtexec_rtx3070_trt8401.log").read_text())
    assert parsed["gpu_compute"]["median_ms"] == 0.97998 and parsed["gpu_compute"]["p99_ms"] == 1.29016
    assert "p90_ms" not in parsed["gpu_compute"]
    assert parsed["tensorrt_version"] == "8.4.1" and parsed["passed"]
    assert parsed["d2h"]["max_ms"] == 0.0202637


def test_parse_failed_run_is_one_line_error():
    with pytest.raises(RunError, match="no 'GPU Compute Time'"):
        parse_trtexec_output("[E] Error[4]: network has no outputs\n&&&& FAILED TensorRT.trtexec\n")


def test_trtexec_command_follows_trt_advice(tmp_path):
    cmd = trtexec_command(tmp_path / "m.onnx", input_name="image", input_shape=(1, 3, 360, 480))
    assert "--fp16" in cmd and "--shapes=image:1x3x360x480" in cmd and "--useCudaGraph" in cmd
    assert "--noDataTransfers" in cmd and "--warmUp=200" in cmd and "--duration=3" in cmd
    assert trtexec_command(tmp_path / "m.engine")[1].startswith("--loadEngine=")


class FakeRunner:
    def __init__(self, name: str, ms: float):
        self.name, self.ms, self.calls = name, ms, 0

    def run_once(self) -> float:
        self.calls += 1
        return self.ms * (1 + 0.01 * random.random())

    def describe(self):
        return {"backend": "fake", "threads": 1, "precision": "fp32", "batch": 1, "input_shape": [1, 3, 8, 8],
                "device": "none"}

    def close(self):
        pass


def test_measure_respects_min_iterations_and_fields():
    r = FakeRunner("a", 1.0)
    res = measure(r, warmup_ms=0, min_iterations=25, min_seconds=0)
    assert res["iterations"] == 25 and r.calls == 26  # one warm-up call
    for key in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "iterations", "backend", "threads"):
        assert key in res
    assert res["latency_source"] == "measured"


def test_interleaved_ratios():
    a, b = FakeRunner("a", 1.0), FakeRunner("b", 3.0)
    res = measure_interleaved([a, b], warmup_ms=0, min_iterations=20, min_seconds=0, rounds=4)
    assert [r["model"] for r in res] == ["a", "b"]
    assert res[0]["ratio_to_first"] == pytest.approx(1.0)
    assert res[1]["ratio_to_first"] == pytest.approx(3.0, rel=0.05)
    assert res[1]["rounds"] == 4 and res[1]["iterations"] >= 20
