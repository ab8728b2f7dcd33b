"""The agent's measuring backends (trtexec, the TensorRT Python API, ONNX Runtime) and the device description.

``select_backend("auto")`` takes trtexec where present (JetPack ships it in /usr/src/tensorrt/bin), else the
TensorRT Python API, else ONNX Runtime. Availability is checked without importing the backend, and nothing
here imports torch: :func:`measure_file` runs inside the agent's worker process.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from segfactory.benchmarks.agent.settings import MeasureSettings
from segfactory.factory.errors import InputError, RunError

AUTO = "auto"  # not a backend: select_backend takes the first of MEASURING_BACKENDS that runs here
# name -> what it is, in auto's order of preference
MEASURING_BACKENDS = {"trtexec": "the trtexec binary", "trt": "the TensorRT Python API", "ort": "ONNX Runtime"}
AGENT_BACKENDS = (AUTO, *MEASURING_BACKENDS)  # what `agent serve --backend` takes


def _has_trtexec() -> bool:
    from segfactory.benchmarks.trtexec import find_trtexec

    try:
        find_trtexec()
    except RunError:
        return False
    return True


def backend_available(name: str) -> str | None:
    """None when ``name`` can run here, else the reason it cannot."""
    if name == "trtexec":
        return None if _has_trtexec() else "no trtexec on PATH or in /usr/src/tensorrt/bin"
    if name == "trt":
        if importlib.util.find_spec("tensorrt") is None:
            return "the tensorrt Python package is not installed"
        if importlib.util.find_spec("torch") is None:
            return "the trt backend binds its buffers as torch CUDA tensors and torch is not installed (use trtexec)"
        return None
    if name == "ort":
        return None if importlib.util.find_spec("onnxruntime") is not None else "onnxruntime is not installed"
    raise InputError(f"backend {name!r} is not one of {', '.join(AGENT_BACKENDS)}")


def select_backend(name: str = AUTO) -> str:
    """The concrete backend for ``name`` (auto: trtexec, else trt, else ort); RunError when it cannot run here."""
    if name == AUTO:
        for candidate in MEASURING_BACKENDS:
            if backend_available(candidate) is None:
                return candidate
        raise RunError("no measuring backend here: install TensorRT (trtexec) or onnxruntime")
    reason = backend_available(name)
    if reason is not None:
        raise RunError(f"backend {name}: {reason}")
    return name


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00 \n")
    except OSError:
        return None


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    exe = shutil.which(cmd[0])
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _gpu_name() -> str | None:
    model = _read("/proc/device-tree/model")  # a Jetson: "NVIDIA Jetson Orin Nano Developer Kit"
    if model and "jetson" in model.lower():
        return model
    names = _run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    return names.splitlines()[0].strip() if names else None


def _power_mode() -> dict[str, Any] | None:
    """nvpmodel's current mode on a Jetson (``nvpmodel -q`` prints "NV Power Mode: 15W" and the mode id)."""
    text = _run(["nvpmodel", "-q"])
    if not text:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    out: dict[str, Any] = {"raw": " | ".join(lines)}
    for line in lines:
        if line.startswith("NV Power Mode:"):
            out["name"] = line.split(":", 1)[1].strip()
        elif line.isdigit():
            out["id"] = int(line)
    return out


def _clocks() -> dict[str, Any]:
    """Current/min/max clocks in MHz where sysfs lets an unprivileged user read them."""
    clocks: dict[str, Any] = {}
    cpu = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    if cpu and cpu.isdigit():
        clocks["cpu0_mhz"] = int(cpu) / 1000.0
    cpu_max = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq")
    if cpu_max and cpu_max.isdigit():
        clocks["cpu0_max_mhz"] = int(cpu_max) / 1000.0
    devfreq = Path("/sys/class/devfreq")
    if devfreq.is_dir():
        for dev in sorted(devfreq.iterdir()):
            # Orin's GPU is 17000000.ga10b (older Jetsons: 17000000.gv11b / 57000000.gpu)
            name = _read(str(dev / "device" / "of_node" / "name")) or dev.name
            if "gpu" not in name.lower() and not dev.name.endswith(("ga10b", "gv11b", "gp10b")):
                continue
            for field in ("cur_freq", "min_freq", "max_freq"):
                value = _read(str(dev / field))
                if value and value.isdigit():
                    clocks[f"gpu_{field.replace('_freq', '')}_mhz"] = int(value) / 1e6
            break
    emc = _read("/sys/kernel/debug/bpmp/debug/clk/emc/rate")  # root only
    if emc and emc.isdigit():
        clocks["emc_mhz"] = int(emc) / 1e6
    return clocks


def describe_device(backend: str, *, dynamic: bool = True) -> dict[str, Any]:
    """What the agent measures on: host, CPU, GPU, JetPack/L4T, backend versions, power mode, clocks.

    ``dynamic=False`` leaves out the parts that change at run time (power mode, clocks).
    """
    from segfactory.benchmarks.runners import cpu_description

    gpu = _gpu_name()
    desc: dict[str, Any] = {
        "name": gpu or cpu_description(),
        "host": platform.node(),
        "cpu": cpu_description(),
        "gpu": gpu,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "l4t": _read("/etc/nv_tegra_release"),
        "backend": backend,
        "versions": {k: v for k, v in {
            "tensorrt": _version("tensorrt") or _tensorrt_deb_version(),
            "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
            "onnx": _version("onnx"), "segfactory": _version("segfactory"),
        }.items() if v},
    }
    if dynamic:
        desc.update(device_state())
    return desc


def device_state() -> dict[str, Any]:
    """The parts of the description that change at run time: nvpmodel power mode and clocks."""
    return {"power_mode": _power_mode(), "clocks": _clocks()}


def _tensorrt_deb_version() -> str | None:
    """JetPack installs TensorRT as Debian packages (libnvinfer10), without pip metadata."""
    text = _run(["dpkg-query", "-W", "-f=${Version}", "libnvinfer10"]) or _run(
        ["dpkg-query", "-W", "-f=${Version}", "libnvinfer8"])
    return text.split("-")[0] if text else None


def measure_file(backend: str, path: Path, *, input_name: str, input_shape: tuple[int, ...], dynamic: bool,
                 settings: MeasureSettings, timeout_s: float) -> dict[str, Any]:
    """Build and time the ONNX file at ``path`` (a file the agent wrote) with ``backend``; benchmark JSON."""
    from segfactory.benchmarks.harness import FORMAT, measure

    if backend == "trtexec":
        from segfactory.benchmarks.trtexec import run_trtexec

        result = run_trtexec(path, timeout_s=timeout_s, input_name=input_name if dynamic else None,
                             input_shape=input_shape if dynamic else None, precision=settings.precision,
                             warmup_ms=settings.warmup_ms, min_iterations=settings.iterations,
                             min_seconds=settings.duration_s)
        result.update({"format": FORMAT, "latency_source": "measured", "warmup_ms": settings.warmup_ms,
                       "input_shape": list(input_shape), "batch": input_shape[0]})
        result.setdefault("device", _gpu_name() or "trtexec")
        return result
    if backend == "trt":
        from segfactory.benchmarks.trt_runner import TensorRTRunner

        runner: Any = TensorRTRunner(path, input_shape=input_shape, precision=settings.precision)
    elif backend == "ort":
        from segfactory.benchmarks.runners import OrtRunner

        runner = OrtRunner(path, input_shape=input_shape, threads=settings.threads or 1)
    else:
        raise InputError(f"backend {backend!r} is not one of trtexec, trt, ort")
    try:
        result = measure(runner, warmup_ms=settings.warmup_ms, min_iterations=settings.iterations,
                         min_seconds=settings.duration_s)
    finally:
        runner.close()
    if backend == "ort" and settings.precision != result.get("precision"):
        result["requested_precision"] = settings.precision  # ONNX Runtime on a CPU runs the graph's own types
    return result


def worker_environment() -> dict[str, str]:
    """The environment of the worker process: the agent's own, with Python's output unbuffered."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env
