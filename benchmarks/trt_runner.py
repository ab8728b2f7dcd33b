"""The TensorRT benchmark runner: a thin :class:`Runner` over export's :class:`EngineSession`.

The engine comes from a file or is built from ONNX by export's strongly typed builder
(``segfactory.export.tensorrt.engine_from_onnx``). Each ``run_once`` is the GPU time of one ``execute_async_v3``
between two CUDA events on the session's stream, inputs already on the device: GPU compute time, like
trtexec's. Device buffers come from torch or, without torch (a Jetson agent), from cuda-python; see
:class:`~segfactory.export.tensorrt.EngineSession`. ``tensorrt`` is imported only when a runner is made.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from segfactory.benchmarks.runners import RunnerBase
from segfactory.factory.errors import InputError


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


class TensorRTRunner(RunnerBase):
    """A TensorRT engine (a file, or built from an ``.onnx``); ``run_once`` is GPU time between two CUDA events."""

    def __init__(self, model: str | Path, *, input_shape: tuple[int, ...] | None = None, precision: str = "fp16",
                 name: str = "model", buffers: str = "auto") -> None:
        from segfactory.export.tensorrt import EngineSession, require_tensorrt

        self._trt = require_tensorrt()  # before any export or build: say what is missing first
        model = Path(model)
        if not model.is_file():
            raise InputError(f"model {model} does not exist")
        if model.suffix.lower() == ".onnx":
            with tempfile.TemporaryDirectory(prefix="segfactory-trt-") as tmp:
                batch = input_shape[0] if input_shape else 1
                data = engine_for(model, Path(tmp), precision=precision, batch=batch).read_bytes()
        else:
            data = model.read_bytes()
        self.session = EngineSession(data, input_shape=input_shape, buffers=buffers, name=str(model))
        self.name = name
        self.precision = precision
        first = self.session.inputs[0] if self.session.inputs else None
        self.input_shape: tuple[int, ...] = self.session.shapes[first] if first else ()

    def run_once(self) -> float:
        return self.session.time_once()

    def describe(self) -> dict[str, Any]:
        return {"backend": "trt", "backend_version": self._trt.__version__, "device": self.session.device_name(),
                "threads": None, "precision": self.precision,
                "batch": self.input_shape[0] if self.input_shape else 1, "input_shape": list(self.input_shape),
                "timing": "cuda events around execute_async_v3 (GPU compute)", "buffers": self.session.cuda.name}

    def close(self) -> None:
        self.session.close()
