"""TensorRT through its Python API (TensorRT 10/11): an engine from ONNX or a file, timed with CUDA events.

Buffers are torch CUDA tensors (their ``data_ptr()`` is bound with ``set_tensor_address``), the engine runs
with ``execute_async_v3`` on a torch CUDA stream, and each inference is bracketed by CUDA events, i.e. it is
GPU compute time like trtexec's. ``tensorrt`` and ``torch.cuda`` are imported only when a runner is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError, RunError


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise RunError("backend trt: the tensorrt Python package is not installed (JetPack, or pip install "
                       "tensorrt on a CUDA host)") from None
    import torch

    if not torch.cuda.is_available():
        raise RunError("backend trt: no CUDA device is available")
    return trt, torch


def build_serialized_engine(onnx_path: str | Path, *, precision: str = "fp16", workspace_mb: int = 1024,
                            input_shape: tuple[int, ...] | None = None) -> bytes:
    """Parse ONNX and build a serialized engine (explicit batch; an optimisation profile for dynamic inputs)."""
    trt, _ = _import_trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RunError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: the graph carries Q/DQ nodes
    elif precision not in ("fp16", "fp32"):
        raise InputError(f"precision {precision!r} is not one of fp32, fp16, int8")
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if any(d < 0 for d in tensor.shape):
            if input_shape is None:
                raise InputError(f"{onnx_path}: input {tensor.name} is dynamic; give --input-size")
            profile = builder.create_optimization_profile()
            profile.set_shape(tensor.name, input_shape, input_shape, input_shape)
            config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RunError(f"TensorRT failed to build an engine from {onnx_path}")
    return bytes(serialized)


class TensorRTRunner:
    """A TensorRT engine with torch CUDA buffers; ``run_once`` is GPU time between two CUDA events."""

    def __init__(self, model: str | Path, *, input_shape: tuple[int, ...] | None = None, precision: str = "fp16",
                 name: str = "model") -> None:
        trt, torch = _import_trt()
        model = Path(model)
        if not model.is_file():
            raise InputError(f"model {model} does not exist")
        data = (build_serialized_engine(model, precision=precision, input_shape=input_shape)
                if model.suffix.lower() == ".onnx" else model.read_bytes())
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise RunError(f"TensorRT could not deserialize {model} (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.buffers: dict[str, Any] = {}
        self.input_shape: tuple[int, ...] = ()
        for i in range(self.engine.num_io_tensors):
            tname = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
            shape = tuple(self.engine.get_tensor_shape(tname))
            if is_input and any(d < 0 for d in shape):
                if input_shape is None:
                    raise InputError(f"{model}: input {tname} is dynamic; give --input-size")
                self.context.set_input_shape(tname, tuple(input_shape))
                shape = tuple(input_shape)
            if not is_input:
                shape = tuple(self.context.get_tensor_shape(tname))
            dtype = _torch_dtype(torch, self.engine.get_tensor_dtype(tname), trt)
            buf = (torch.randn(shape, device="cuda").to(dtype) if dtype.is_floating_point
                   else torch.zeros(shape, device="cuda", dtype=dtype))
            self.buffers[tname] = buf
            self.context.set_tensor_address(tname, buf.data_ptr())
            if is_input and not self.input_shape:
                self.input_shape = shape
        self.name = name
        self.precision = precision
        self._torch = torch
        self._trt = trt
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def run_once(self) -> float:
        self._start.record(self.stream)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RunError(f"TensorRT execution of {self.name} failed")
        self._end.record(self.stream)
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end))

    def describe(self) -> dict[str, Any]:
        return {"backend": "trt", "backend_version": self._trt.__version__,
                "device": self._torch.cuda.get_device_name(), "threads": None, "precision": self.precision,
                "batch": self.input_shape[0] if self.input_shape else 1, "input_shape": list(self.input_shape),
                "timing": "cuda events around execute_async_v3 (GPU compute)"}

    def close(self) -> None:
        self.context = None
        self.engine = None
        self.buffers.clear()


def _torch_dtype(torch: Any, dt: Any, trt: Any) -> Any:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
             trt.int8: torch.int8, trt.bool: torch.bool, trt.uint8: torch.uint8, trt.int64: torch.int64}
    if dt not in table:
        raise RunError(f"TensorRT tensor type {dt} has no torch equivalent here")
    return table[dt]
