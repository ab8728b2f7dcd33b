"""TensorRT through its Python API (TensorRT 10/11): an engine from ONNX or a file, timed with CUDA events.

Engines are built by export's strongly typed builder (``segfactory.export.tensorrt.engine_from_onnx``).

Buffers are torch CUDA tensors (their ``data_ptr()`` is bound with ``set_tensor_address``), the engine runs
with ``execute_async_v3`` on a torch CUDA stream, and each inference is bracketed by CUDA events, i.e. it is
GPU compute time like trtexec's. ``tensorrt`` and ``torch.cuda`` are imported only when a runner is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError, RunError


def _import_trt():
    """(tensorrt, torch), or :class:`RunError` saying what is missing (export's check: TensorRT 10.3+ and CUDA)."""
    from segfactory.export.tensorrt import require_tensorrt

    trt = require_tensorrt()
    import torch

    return trt, torch


def engine_for(onnx_path: Path, workdir: Path, *, precision: str, batch: int) -> Path:
    """A serialized engine of ``onnx_path``: strongly typed, so precision comes from the graph (TensorRT 10/11).

    ``fp16`` converts the graph to FP16 first (export.precision); ``int8`` expects a Q/DQ graph as it is.
    """
    from segfactory.export.tensorrt import EngineConfig, engine_from_onnx

    if precision not in ("fp32", "fp16", "int8"):
        raise InputError(f"precision {precision!r} is not one of fp32, fp16, int8")
    source = onnx_path
    if precision == "fp16":
        from segfactory.export.precision import convert_fp16

        source = convert_fp16(onnx_path, workdir / f"{onnx_path.stem}.fp16.onnx")
    return engine_from_onnx(source, workdir / f"{onnx_path.stem}.{precision}.engine",
                            EngineConfig(batch=(batch, batch, batch)))


class TensorRTRunner:
    """A TensorRT engine with torch CUDA buffers; ``run_once`` is GPU time between two CUDA events."""

    def __init__(self, model: str | Path, *, input_shape: tuple[int, ...] | None = None, precision: str = "fp16",
                 name: str = "model") -> None:
        trt, torch = _import_trt()
        model = Path(model)
        if not model.is_file():
            raise InputError(f"model {model} does not exist")
        if model.suffix.lower() == ".onnx":
            import tempfile

            with tempfile.TemporaryDirectory(prefix="segfactory-trt-") as tmp:
                batch = input_shape[0] if input_shape else 1
                data = engine_for(model, Path(tmp), precision=precision, batch=batch).read_bytes()
        else:
            data = model.read_bytes()
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
    pairs = (("float32", torch.float32), ("float16", torch.float16), ("int32", torch.int32), ("int8", torch.int8),
             ("bool", torch.bool), ("uint8", torch.uint8), ("int64", torch.int64), ("bfloat16", torch.bfloat16))
    table = {getattr(trt, n): t for n, t in pairs if hasattr(trt, n)}  # int64/bf16 are TensorRT 9+
    if dt not in table:
        raise RunError(f"TensorRT tensor type {dt} has no torch equivalent here")
    return table[dt]
