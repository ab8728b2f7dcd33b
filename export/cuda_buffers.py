"""CUDA device memory, one stream and a pair of timing events, for :class:`~segfactory.export.tensorrt.EngineSession`.

Two interchangeable implementations of the same small interface (``alloc``, ``address``, ``upload``,
``download``, ``synchronize``, ``record_start``/``elapsed_since_start``, ``device_name``, ``close``):

- :class:`TorchCuda`: torch CUDA tensors, a ``torch.cuda.Stream`` and ``torch.cuda.Event``\\ s;
- :class:`CudaRuntime`: cuda-python's runtime bindings (``cuda.bindings.runtime``; ``cuda.cudart`` before
  cuda-python 12.8), for a Jetson without torch. Every call's error code is checked; a failure is a one-line
  :class:`RunError` naming the call and the CUDA error.

Neither has been run against a GPU in this repository (none where it was written); the CUDA-runtime path's
error handling is tested on a host without a GPU, where its first call fails cleanly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from segfactory.factory.errors import InputError, RunError

BUFFERS = ("auto", "torch", "cuda-python")


def cuda_buffers(kind: str = "auto") -> TorchCuda | CudaRuntime:
    """Buffers of ``kind`` (one of :data:`BUFFERS`); ``auto``: torch when it is importable, else cuda-python."""
    if kind not in BUFFERS:
        raise InputError(f"CUDA buffers {kind!r} are not one of {', '.join(BUFFERS)}")
    if kind == "auto":
        try:
            import torch  # noqa: F401
        except ImportError:
            return CudaRuntime()
        return TorchCuda()
    return TorchCuda() if kind == "torch" else CudaRuntime()


class TorchCuda:
    """Device tensors, a stream and two timing events through ``torch.cuda``."""

    name = "torch"

    def __init__(self) -> None:
        import torch

        if not torch.cuda.is_available():
            raise RunError("no CUDA device is available to torch")
        self.torch = torch
        self.stream = torch.cuda.Stream()
        self.stream_handle = int(self.stream.cuda_stream)
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)
        self._tensors: list[Any] = []

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        tdtype = self.torch.from_numpy(np.empty(0, dtype)).dtype
        tensor = self.torch.empty(shape, dtype=tdtype, device="cuda")
        self._tensors.append(tensor)  # kept alive for as long as TensorRT holds its address
        return tensor

    def address(self, buf: Any) -> int:
        return int(buf.data_ptr())

    def upload(self, buf: Any, host: np.ndarray) -> None:
        with self.torch.cuda.stream(self.stream):  # ordered with the inference on the same stream
            buf.copy_(self.torch.from_numpy(np.ascontiguousarray(host)))

    def download(self, buf: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        self.stream.synchronize()
        return buf.cpu().numpy().reshape(shape)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def record_start(self) -> None:
        self._start.record(self.stream)

    def elapsed_since_start(self) -> float:
        self._end.record(self.stream)
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end))

    def device_name(self) -> str:
        return str(self.torch.cuda.get_device_name())

    def close(self) -> None:
        self._tensors.clear()


def _runtime():
    try:
        from cuda.bindings import runtime  # cuda-python 12.8+
    except ImportError:
        try:
            from cuda import cudart as runtime  # older cuda-python
        except ImportError:
            raise RunError("running a TensorRT engine without torch needs cuda-python "
                           "(pip install cuda-python)") from None
    return runtime


class CudaRuntime:
    """Device memory, a stream and two timing events through cuda-python's runtime API (no torch)."""

    name = "cuda-python"

    def __init__(self) -> None:
        self.rt = _runtime()
        self._allocations: list[int] = []
        self._events: list[Any] = []
        self._host: list[np.ndarray] = []  # sources of copies in flight, kept alive until a synchronize
        self.stream = None
        try:
            self.stream = self._call("cudaStreamCreate")
            self.stream_handle = int(self.stream)
            self._start = self._event()
            self._end = self._event()
        except BaseException:
            self.close()
            raise

    def _call(self, fn: str, *args: Any) -> Any:
        """``rt.fn(*args)``: cuda-python returns ``(error, *results)``; raise on an error, return the results."""
        err, *results = getattr(self.rt, fn)(*args)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RunError(f"CUDA {fn} failed: {getattr(err, 'name', err)}")
        return results[0] if len(results) == 1 else tuple(results) or None

    def _event(self) -> Any:
        event = self._call("cudaEventCreate")
        self._events.append(event)
        return event

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, int]:
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        ptr = int(self._call("cudaMalloc", max(nbytes, 1)))
        self._allocations.append(ptr)
        return ptr, nbytes

    def address(self, buf: tuple[int, int]) -> int:
        return buf[0]

    def upload(self, buf: tuple[int, int], host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        if host.nbytes != buf[1]:
            raise InputError(f"{host.nbytes} bytes given for a device buffer of {buf[1]}")
        self._host.append(host)
        self._call("cudaMemcpyAsync", buf[0], host.ctypes.data, host.nbytes,
                   self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream)

    def download(self, buf: tuple[int, int], shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        out = np.empty(shape, dtype)
        self._call("cudaMemcpyAsync", out.ctypes.data, buf[0], out.nbytes,
                   self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream)
        self.synchronize()
        return out

    def synchronize(self) -> None:
        self._call("cudaStreamSynchronize", self.stream)
        self._host.clear()

    def record_start(self) -> None:
        self._call("cudaEventRecord", self._start, self.stream)

    def elapsed_since_start(self) -> float:
        self._call("cudaEventRecord", self._end, self.stream)
        self._call("cudaEventSynchronize", self._end)
        return float(self._call("cudaEventElapsedTime", self._start, self._end))

    def device_name(self) -> str:
        props = self._call("cudaGetDeviceProperties", self._call("cudaGetDevice"))
        name = props.name
        return (bytes(name).split(b"\0")[0].decode() if not isinstance(name, str) else name) or "CUDA device"

    def close(self) -> None:
        # best effort: a failed free while tearing down must not hide the error that led here
        for ptr in self._allocations:
            self.rt.cudaFree(ptr)
        for event in self._events:
            self.rt.cudaEventDestroy(event)
        if self.stream is not None:
            self.rt.cudaStreamDestroy(self.stream)
        self._allocations, self._events, self._host, self.stream = [], [], [], None
