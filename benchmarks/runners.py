"""Runners: one protocol, several backends. A runner runs one inference and says how long it took.

The timing loop lives in :mod:`segfactory.benchmarks.harness`; a runner only owns its backend's session,
its input buffers and the clock appropriate to it (``perf_counter`` on a CPU, CUDA events on a GPU).
Every runner is a context manager (``with OrtRunner(...) as r:``) that closes itself on the way out.
The TensorRT runner lives in :mod:`segfactory.benchmarks.trt_runner` (over export's ``EngineSession``); trtexec
times whole runs in a subprocess (:mod:`segfactory.benchmarks.trtexec`). Backends are looked up by name in
:data:`segfactory.benchmarks.models.RUNNERS`. Heavy imports (torch, onnxruntime) happen inside the constructors.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from segfactory.factory.errors import InputError, RunError


@runtime_checkable
class Runner(Protocol):
    """What the harness needs from a backend."""

    name: str

    def run_once(self) -> float:
        """Run one inference on the prepared input; return its latency in ms (device work finished)."""

    def describe(self) -> dict[str, Any]:
        """backend, version, device, threads, precision, batch, input_shape."""

    def close(self) -> None:
        """Release sessions and buffers."""


class RunnerBase:
    """What every runner shares: ``with runner:`` closes it, whatever happens inside."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cpu_description() -> str:
    """The host CPU's model name and logical core count, e.g. ``AMD EPYC 9R14 (2 logical cores)``."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical cores)"


def _set_torch_threads(threads: int | None) -> int:
    import torch

    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads {threads} must be at least 1")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


class TorchRunner(RunnerBase):
    """PyTorch eager (``model.eval()``, ``no_grad``) on CPU or CUDA; CUDA timing with events + synchronize."""

    def __init__(self, model: Any, input_shape: tuple[int, ...], *, device: str = "cpu",
                 threads: int | None = None, name: str = "model", half: bool = False) -> None:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise RunError("backend torch on cuda: no CUDA device is available")
        self.name = name
        self.device = device
        self.threads = _set_torch_threads(threads)
        self.model = model.eval().to(device)
        self.precision = "fp16" if half else "fp32"
        if half:
            self.model = self.model.half()
        self.x = torch.randn(*input_shape, device=device, dtype=torch.float16 if half else torch.float32)
        self.input_shape = tuple(input_shape)
        if device == "cuda":
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
        self._torch = torch

    def run_once(self) -> float:
        torch = self._torch
        with torch.inference_mode():
            if self.device == "cuda":
                self._start.record()
                self.model(self.x)
                self._end.record()
                self._end.synchronize()
                return float(self._start.elapsed_time(self._end))
            t0 = time.perf_counter_ns()
            self.model(self.x)
            return (time.perf_counter_ns() - t0) / 1e6

    def describe(self) -> dict[str, Any]:
        torch = self._torch
        device = torch.cuda.get_device_name() if self.device == "cuda" else cpu_description()
        return {"backend": "torch", "backend_version": torch.__version__, "device": device,
                "threads": self.threads, "precision": self.precision, "batch": self.input_shape[0],
                "input_shape": list(self.input_shape),
                "timing": "cuda events, synchronized" if self.device == "cuda" else "host wall clock"}

    def close(self) -> None:
        self.model = None


ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}


# onnxruntime's exception type names for a model file that is not a valid ONNX graph
BAD_MODEL_ERRORS = ("InvalidProtobuf", "InvalidGraph", "InvalidArgument", "NoSuchFile", "NotImplemented")


class OrtRunner(RunnerBase):
    """ONNX Runtime: CPU (threads fixed: intra-op = ``threads``, inter-op 1, sequential) or the CUDA/TensorRT EPs.

    ``model`` is a path or the serialized bytes of an ONNX model. Dynamic dimensions of the input take
    ``input_shape``; inputs are random of the graph's element type (float or uint8).
    """

    def __init__(self, model: str | Path | bytes, *, input_shape: tuple[int, ...] | None = None,
                 threads: int | None = 1, provider: str = "cpu", name: str = "model",
                 fp16: bool = False, profile_prefix: str | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunError("backend ort: onnxruntime is not installed (pip install onnxruntime)") from None

        if provider not in ORT_PROVIDERS:
            raise InputError(f"onnxruntime provider {provider!r} is not one of {', '.join(ORT_PROVIDERS)}")
        ep = ORT_PROVIDERS[provider]
        if ep not in ort.get_available_providers():
            raise RunError(f"onnxruntime has no {ep} here (available: {', '.join(ort.get_available_providers())})")
        if threads is not None and threads < 1:
            raise InputError(f"--threads {threads} must be at least 1")
        providers: list[Any] = [ep]
        if provider == "tensorrt":
            providers = [(ep, {"trt_fp16_enable": fp16}), "CUDAExecutionProvider", "CPUExecutionProvider"]
        elif provider == "cuda":
            providers = [ep, "CPUExecutionProvider"]
        source = model if isinstance(model, bytes) else str(model)
        if not isinstance(model, bytes) and not Path(model).is_file():
            raise InputError(f"ONNX model {model} does not exist")
        try:
            self.session = ort.InferenceSession(source, sess_options=_session_options(ort, threads, profile_prefix),
                                                providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            # a file ONNX Runtime cannot parse or whose graph is invalid is bad input (exit 2), as in eval and
            # through the agent; anything else (a provider failing) is a failed run
            error = InputError if type(e).__name__ in BAD_MODEL_ERRORS else RunError
            raise error(f"onnxruntime could not load {name}: {str(e).strip().splitlines()[0]}") from None
        self.name = name
        self.provider = provider
        self.threads = threads if threads else os.cpu_count()
        self.precision = "fp16" if fp16 else _onnx_precision(self.session)
        self.feeds = _random_feeds(self.session, input_shape, name)
        self.input_shape = tuple(next(iter(self.feeds.values())).shape) if self.feeds else ()
        self._ort = ort
        self._outputs = [o.name for o in self.session.get_outputs()]

    def run_once(self) -> float:
        t0 = time.perf_counter_ns()
        self.session.run(self._outputs, self.feeds)
        return (time.perf_counter_ns() - t0) / 1e6

    def end_profiling(self) -> str:
        return self.session.end_profiling()

    def describe(self) -> dict[str, Any]:
        device = cpu_description() if self.provider == "cpu" else f"onnxruntime {ORT_PROVIDERS[self.provider]}"
        return {"backend": "ort" if self.provider == "cpu" else f"ort-{self.provider}",
                "backend_version": self._ort.__version__, "device": device, "threads": self.threads,
                "precision": self.precision, "batch": self.input_shape[0] if self.input_shape else 1,
                "input_shape": list(self.input_shape)}

    def close(self) -> None:
        self.session = None


def _session_options(ort: Any, threads: int | None, profile_prefix: str | None) -> Any:
    """Fixed threads (intra-op ``threads``, 0: ONNX Runtime's choice; inter-op 1), sequential, all optimisations."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or 0
    so.inter_op_num_threads = 1
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


def _random_feeds(session: Any, input_shape: tuple[int, ...] | None, name: str) -> dict[str, Any]:
    """Seeded random inputs of the graph's types; dynamic dimensions take ``input_shape``'s."""
    import numpy as np

    feeds = {}
    for i, inp in enumerate(session.get_inputs()):
        shape = []
        for d, dim in enumerate(inp.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif input_shape is not None and d < len(input_shape):
                shape.append(int(input_shape[d]))
            else:
                raise InputError(f"{name}: input {inp.name!r} has a dynamic dimension {d}; give --input-size")
        if i == 0 and input_shape is not None and list(input_shape) != shape:
            raise InputError(f"{name}: input {inp.name!r} has the fixed shape {inp.shape}, not "
                             f"{list(input_shape)}; export it at that size (or with a dynamic batch)")
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                 "tensor(uint8)": np.uint8}.get(inp.type)
        if dtype is None:
            raise InputError(f"{name}: input {inp.name!r} has type {inp.type}, not float/float16/uint8")
        rng = np.random.default_rng(0)
        if dtype is np.uint8:
            feeds[inp.name] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _onnx_precision(session: Any) -> str:
    """fp16 when the graph's first input is float16, else fp32 (Q/DQ graphs are labelled by the caller)."""
    inputs = session.get_inputs()
    if inputs and inputs[0].type == "tensor(float16)":
        return "fp16"
    return "fp32"
