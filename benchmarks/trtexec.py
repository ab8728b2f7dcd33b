"""``trtexec`` as a subprocess: the command line, and a parser of its performance summary.

trtexec prints, at the end of a run (TensorRT 8.x-10.x)::

    [I] Throughput: 24.4584 qps
    [I] Latency: min = 39.43 ms, max = 48.81 ms, mean = 42.68 ms, median = 42.45 ms, percentile(90%) = ...
    [I] GPU Compute Time: min = ..., percentile(99%) = 46.75 ms

"Latency" is host latency (H2D + GPU compute + D2H); "GPU Compute Time" excludes the copies. Older
versions print only percentile(99%).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError, RunError

_METRICS = {
    "Latency": "latency",
    "GPU Compute Time": "gpu_compute",
    "Enqueue Time": "enqueue",
    "H2D Latency": "h2d",
    "D2H Latency": "d2h",
}
_LINE = re.compile(r"\[I\]\s+(Latency|GPU Compute Time|Enqueue Time|H2D Latency|D2H Latency):\s*(.*)$")
_FIELD = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*([-+0-9.eE]+)\s*ms")
_THROUGHPUT = re.compile(r"\[I\]\s+Throughput:\s*([-+0-9.eE]+)\s*qps")
_COV = re.compile(r"coefficient of variance\s*=\s*([-+0-9.eE]+)%")
_TOTAL_GPU = re.compile(r"\[I\]\s+Total GPU Compute Time:\s*([-+0-9.eE]+)\s*s")
_VERSION = re.compile(r"TensorRT\.trtexec \[TensorRT v(\d+)\]|TensorRT version:\s*([0-9.]+)")


def parse_trtexec_output(text: str) -> dict[str, Any]:
    """The performance summary of a trtexec log as numbers in ms.

    Returns ``{"gpu_compute": {"min_ms", "max_ms", "mean_ms", "median_ms", "p90_ms", ...}, "latency": {...},
    "enqueue", "h2d", "d2h" (those present), "throughput_qps", "cov" (GPU compute CoV, fraction, if
    warned), "tensorrt_version", "passed"}``. Raises :class:`RunError` when no "GPU Compute Time" line is
    there (trtexec failed, or the text is not a trtexec log).
    """
    out: dict[str, Any] = {}
    for line in text.splitlines():
        m = _LINE.search(line)
        if m:
            stats: dict[str, float] = {}
            for f in _FIELD.finditer(m.group(2)):
                key = f"p{_pct(f.group(2))}_ms" if f.group(2) else f"{f.group(1)}_ms"
                stats[key] = float(f.group(3))
            out[_METRICS[m.group(1)]] = stats
            continue
        if (m := _THROUGHPUT.search(line)):
            out["throughput_qps"] = float(m.group(1))
        elif (m := _TOTAL_GPU.search(line)):
            out["total_gpu_compute_s"] = float(m.group(1))
        elif (m := _COV.search(line)):
            out["cov"] = float(m.group(1)) / 100.0
        elif (m := _VERSION.search(line)):
            out["tensorrt_version"] = _version(m.group(1)) if m.group(1) else m.group(2)
    if "gpu_compute" not in out:
        last = next((l for l in reversed(text.strip().splitlines()) if l.strip()), "(no output)")
        raise RunError(f"trtexec printed no 'GPU Compute Time' summary; last line: {last.strip()[:200]}")
    out["passed"] = "&&&& PASSED" in text or "&&&& FAILED" not in text
    return out


def _pct(p: str) -> str:
    value = float(p)
    return str(int(value)) if value.is_integer() else str(value).replace(".", "_")


def _version(code: str) -> str:
    """trtexec's ``v8401`` -> ``8.4.1``, ``v100300`` -> ``10.3.0``."""
    n = int(code)
    if n >= 100000:  # TensorRT 10+: MMmmpp
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"


def trtexec_command(model: str | Path, *, input_name: str | None = None, input_shape: tuple[int, ...] | None = None,
                    precision: str = "fp16", warmup_ms: float = 200, min_iterations: int = 10,
                    min_seconds: float = 3.0, cuda_graph: bool = True, exe: str = "trtexec") -> list[str]:
    """The argv of a trtexec run following TensorRT's benchmarking advice (anchors.md §3.4).

    An ``.onnx`` model is built (``--onnx``), anything else is loaded as an engine (``--loadEngine``).
    """
    model = Path(model)
    cmd = [exe]
    if model.suffix.lower() == ".onnx":
        cmd.append(f"--onnx={model}")
        if precision == "fp16":
            cmd.append("--fp16")
        elif precision == "int8":
            cmd += ["--int8", "--fp16"]
        elif precision != "fp32":
            raise InputError(f"precision {precision!r} is not one of fp32, fp16, int8")
        if input_name and input_shape:
            cmd.append(f"--shapes={input_name}:{'x'.join(str(d) for d in input_shape)}")
    else:
        cmd.append(f"--loadEngine={model}")
    cmd += [f"--warmUp={int(warmup_ms)}", f"--iterations={int(min_iterations)}",
            f"--duration={max(0, round(min_seconds))}", "--noDataTransfers", "--useSpinWait"]
    if cuda_graph:
        cmd.append("--useCudaGraph")
    return cmd


def find_trtexec() -> str:
    """Path of the trtexec binary (PATH, then JetPack's /usr/src/tensorrt/bin)."""
    exe = shutil.which("trtexec") or next(
        (str(p) for p in (Path("/usr/src/tensorrt/bin/trtexec"),) if p.is_file()), None)
    if exe is None:
        raise RunError("backend trtexec: no trtexec on PATH or in /usr/src/tensorrt/bin (install TensorRT)")
    return exe


def run_trtexec(model: str | Path, *, timeout_s: float = 1800, **options: Any) -> dict[str, Any]:
    """Run trtexec on ``model`` and return benchmark JSON fields from its GPU Compute Time summary."""
    model = Path(model)
    if not model.is_file():
        raise InputError(f"model {model} does not exist")
    cmd = trtexec_command(model, exe=find_trtexec(), **options)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise RunError(f"trtexec on {model} took longer than {timeout_s:.0f} s") from None
    parsed = parse_trtexec_output(proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0:
        raise RunError(f"trtexec on {model} exited with code {proc.returncode}")
    return summary_fields(parsed, options.get("precision", "fp16"), options.get("input_shape"))


def summary_fields(parsed: dict[str, Any], precision: str, input_shape: tuple[int, ...] | None) -> dict[str, Any]:
    """Map a parsed trtexec summary onto the benchmark JSON of design.md (GPU compute time is primary)."""
    gpu = parsed["gpu_compute"]
    out: dict[str, Any] = {k: gpu[k] for k in ("min_ms", "max_ms", "mean_ms", "median_ms") if k in gpu}
    for p in ("p90_ms", "p95_ms", "p99_ms"):
        if p in gpu:
            out[p] = gpu[p]
    if "cov" in parsed and "mean_ms" in gpu:
        out["std_ms"] = parsed["cov"] * gpu["mean_ms"]
    batch = input_shape[0] if input_shape else 1
    if "total_gpu_compute_s" in parsed and gpu.get("mean_ms"):
        # trtexec prints no count; total / mean recovers it (exact up to the printed digits)
        out["iterations"] = round(parsed["total_gpu_compute_s"] * 1000.0 / gpu["mean_ms"])
    out.update({
        "throughput": parsed.get("throughput_qps", 1000.0 * batch / gpu["mean_ms"] if gpu.get("mean_ms") else 0.0),
        "backend": "trtexec", "backend_version": parsed.get("tensorrt_version"), "precision": precision,
        "batch": batch, "input_shape": list(input_shape) if input_shape else None,
        "timing": "trtexec GPU Compute Time (--noDataTransfers --useSpinWait)",
        "host_latency": parsed.get("latency"), "threads": None,
    })
    return out
