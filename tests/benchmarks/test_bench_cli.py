"""``segfactory bench`` / ``profile`` from the command line: JSON fields, side-by-side runs, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run(args, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "segfactory.factory.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    return proc.returncode, proc.stdout, proc.stderr


FAST = ["--input-size", "64x64", "--min-seconds", "0.1", "--rounds", "2", "--warmup-ms", "10", "--json"]


def test_bench_arch_json_fields():
    code, out, err = run(["bench", "--arch", "arch1", "--backend", "ort", *FAST])
    assert code == 0, err
    res = json.loads(out)
    for key in ("median_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "min_ms", "std_ms", "iterations",
                "throughput", "backend", "threads", "precision", "batch", "input_shape", "device",
                "latency_source"):
        assert key in res, key
    assert res["backend"] == "ort" and res["threads"] == 1 and res["input_shape"] == [1, 3, 64, 64]
    assert res["latency_source"] == "measured" and res["iterations"] >= 10


def test_bench_several_models_interleaved(tmp_path):
    genotype = tmp_path / "g.json"
    code, out, err = run(["arch", "sample", "--seed", "4"])
    assert code == 0, err
    genotype.write_text(out)
    code, out, err = run(["bench", str(genotype), "--arch", "arch0", "--backend", "torch", "--sep-repeats", "1",
                          *FAST])
    assert code == 0, err
    res = json.loads(out)
    assert res["format"] == "segfactory.bench/1" and [r["model"] for r in res["results"]] == ["g", "arch0"]
    assert res["results"][0]["ratio_to_first"] == pytest.approx(1.0)
    assert all(r["backend"] == "torch" and r["rounds"] == 2 for r in res["results"])


@pytest.mark.parametrize("args, message", [
    (["bench", "missing.onnx"], "does not exist"),
    (["bench", "--arch", "arch0", "--backend", "trt", "--input-size", "64x64"], "TensorRT"),
    (["bench", "--arch", "arch0", "--backend", "trtexec", "--input-size", "64x64"], "trtexec"),
    (["bench"], "nothing to benchmark"),
    (["profile", "--target", "jetson-tx2", "--out", "x.json"], "'jetson-tx2' is not one of 'cpu', 'cuda'"),
    (["bench", "--arch", "arch0", "--backend", "onnx"], "'onnx' is not one of 'ort', 'ort-cuda'"),
])
def test_one_line_errors(args, message, tmp_path):
    code, out, err = run(args)
    assert code in (1, 2) and out == ""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_profile_refuses_a_corrupt_table(tmp_path):
    bad = tmp_path / "lut.json"
    bad.write_text("[1, 2")
    code, out, err = run(["profile", "--target", "cpu", "--input-size", "64x64", "--out", str(bad)])
    assert code == 2 and out == "" and "not valid JSON" in err and err.count("\n") == 1
