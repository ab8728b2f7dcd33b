"""TensorRT engines from ONNX files, with the TensorRT 10.3+/11 Python API; ``tensorrt`` is imported lazily.

Building: the network is strongly typed, so its precision comes from the graph: the FP16 ONNX for FP16, the
Q/DQ ONNX for INT8 (no precision builder flags, no implicit-quantisation calibrators: TensorRT 11 removed both).
The builder gets a workspace limit through the memory-pool API, a timing cache, and an optimisation profile when
the batch dimension is dynamic. Parser errors are all reported at once.

Running: :class:`EngineSession` (deserialise, bind device buffers, run or time), used by the parity check here
and by the benchmark runner (``segfactory.benchmarks.trt_runner``); its CUDA memory comes from
:mod:`segfactory.export.cuda_buffers` (torch or cuda-python).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from segfactory.export.cuda_buffers import cuda_buffers
from segfactory.factory.errors import InputError, RunError

MIN_VERSION = (10, 3)
HOW_TO_PROCEED = ("install the trt extra on the target (pip install 'segfactory[trt]', TensorRT 10.3+ with CUDA), "
                  "or build the engine on the device with the agent (segfactory agent serve)")


@dataclass(frozen=True)
class EngineConfig:
    """How to build an engine. ``batch`` is (min, opt, max) for a dynamic batch dimension."""

    workspace_mib: int = 1024
    timing_cache: str | None = None  # a file: read if present, written back after the build
    batch: tuple[int, int, int] = (1, 1, 8)
    optimization_level: int | None = None  # builder optimisation level 0..5 (TensorRT default 3)
    verbose: bool = False

    def __post_init__(self) -> None:
        lo, opt, hi = self.batch
        if not 1 <= lo <= opt <= hi:
            raise InputError(f"engine batch profile {self.batch} must satisfy 1 <= min <= opt <= max")
        if self.workspace_mib < 1:
            raise InputError(f"engine workspace {self.workspace_mib} MiB must be positive")
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise InputError(f"builder optimisation level {self.optimization_level} is not 0..5")


def tensorrt_available() -> str | None:
    """Why TensorRT cannot be used here (one line), or None when it can."""
    try:
        import tensorrt as trt
    except ImportError:
        return "TensorRT is not installed here"
    version = tuple(int(p) for p in trt.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_VERSION:
        return f"TensorRT {trt.__version__} is older than the supported {MIN_VERSION[0]}.{MIN_VERSION[1]}"
    try:
        import torch

        if not torch.cuda.is_available():
            return "TensorRT is installed but no CUDA device is available"
    except ImportError:
        pass
    return None


def require_tensorrt():
    """The ``tensorrt`` module, or :class:`RunError` saying how to proceed."""
    why = tensorrt_available()
    if why:
        raise RunError(f"{why}: {HOW_TO_PROCEED}")
    import tensorrt as trt

    return trt


def _input_shapes(onnx_path: Path) -> list[tuple[str, list[int | str]]]:
    from segfactory.export.onnx import graph_io

    return [(i["name"], i["shape"]) for i in graph_io(onnx_path)["inputs"]]


def trtexec_command(onnx_path: str | Path, engine_path: str | Path, config: EngineConfig = EngineConfig()) -> str:
    """The ``trtexec`` command line that builds the same engine as :func:`engine_from_onnx`."""
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}", "--stronglyTyped",
            f"--memPoolSize=workspace:{config.workspace_mib}M", "--skipInference"]
    if config.timing_cache:
        args.append(f"--timingCacheFile={config.timing_cache}")
    if config.optimization_level is not None:
        args.append(f"--builderOptimizationLevel={config.optimization_level}")
    shapes: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
    for name, shape in _input_shapes(Path(onnx_path)):
        if any(not isinstance(d, int) for d in shape):
            for kind, batch in zip(("min", "opt", "max"), config.batch):
                dims = [str(batch) if not isinstance(d, int) else str(d) for d in shape]
                shapes[kind].append(f"{name}:{'x'.join(dims)}")
    for kind in ("min", "opt", "max"):
        if shapes[kind]:
            args.append(f"--{kind}Shapes={','.join(shapes[kind])}")
    return shlex.join(args)


def _parser_errors(parser) -> str:
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        try:
            where = err.node_name() or f"node {err.node()}"
            errors.append(f"{where} ({err.node_operator()}): {err.desc()}")
        except AttributeError:
            errors.append(str(err))
    return "; ".join(errors) or "no error detail"


def engine_from_onnx(onnx_path: str | Path, engine_path: str | Path, config: EngineConfig = EngineConfig()) -> Path:
    """Build a serialised TensorRT engine from ``onnx_path`` and write it to ``engine_path`` (atomically)."""
    from segfactory.factory.io import atomic_write_bytes

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise InputError(f"ONNX model {onnx_path} does not exist")
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.VERBOSE if config.verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Strongly typed: precision comes from the graph (required on 11.x, where the flag is accepted and ignored).
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise RunError(f"TensorRT cannot parse {onnx_path}: {_parser_errors(parser)}")

    build = builder.create_builder_config()
    build.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    if config.optimization_level is not None:
        build.builder_optimization_level = config.optimization_level
    cache_path = Path(config.timing_cache) if config.timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = build.create_timing_cache(cache_bytes)
    build.set_timing_cache(cache, ignore_mismatch=True)  # a cache from another device/version is ignored

    dynamic = False
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise InputError(f"{onnx_path} input {tensor.name!r} has dynamic dims {shape} beyond the batch")
        if shape[0] < 0:
            dynamic = True
            lo, opt, hi = ([b] + shape[1:] for b in config.batch)
            profile.set_shape(tensor.name, lo, opt, hi)
    if dynamic:
        build.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, build)
    if serialized is None:
        raise RunError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(build.get_timing_cache().serialize()))
    return atomic_write_bytes(engine_path, bytes(serialized))


def tensorrt_version() -> str | None:
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return str(trt.__version__)


class EngineSession:
    """One deserialised engine, an execution context and device buffers for all its I/O tensors.

    The one place segfactory runs a TensorRT engine: :func:`run_engine` and :func:`check_engine_parity` use
    :meth:`run` (host arrays in, host arrays out), the benchmark runner uses :meth:`time_once` (GPU time of one
    ``execute_async_v3`` between two CUDA events, inputs left on the device, like trtexec's GPU compute time).
    Shapes are fixed when the session is made: a dynamic input takes ``input_shape``; outputs are allocated at
    the shapes TensorRT infers from the inputs. Inputs start as seeded random data (what a benchmark times).

    Device memory, the stream and the events come from torch when it is importable (``buffers="torch"``), else
    from cuda-python (``buffers="cuda-python"``: ``cuda.bindings.runtime``, or ``cuda.cudart`` before
    cuda-python 12.8), so a torch-free Jetson can run engines too; ``"auto"`` picks in that order. Written
    against the TensorRT 10/11 named-tensor API; NEITHER buffer path has been run on a GPU in this repository
    yet (no GPU where it was written): only the bookkeeping is tested, against a stand-in engine.
    """

    def __init__(self, engine: bytes | str | Path, *, input_shape: tuple[int, ...] | None = None,
                 buffers: str | Any = "auto", name: str | None = None) -> None:
        trt = require_tensorrt()
        if isinstance(engine, bytes):
            data, self.name = engine, name or "engine"
        else:
            path = Path(engine)
            if not path.is_file():
                raise InputError(f"engine {path} does not exist")
            data, self.name = path.read_bytes(), name or str(path)
        self.context = self.engine = self.runtime = None
        self.cuda = cuda_buffers(buffers) if isinstance(buffers, str) else buffers
        try:
            self._load(trt, data, input_shape)
        except BaseException:
            self.close()
            raise

    def _load(self, trt: Any, data: bytes, input_shape: tuple[int, ...] | None) -> None:
        self.logger = trt.Logger(trt.Logger.WARNING)  # must outlive the runtime
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise RunError(f"TensorRT cannot deserialise {self.name} (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        for i, tname in enumerate(self.inputs):
            shape = tuple(self.engine.get_tensor_shape(tname))
            if any(d < 0 for d in shape):
                if input_shape is None:
                    raise InputError(f"{self.name}: input {tname} has the dynamic shape {shape}; give --input-size")
                if len(input_shape) != len(shape) or any(0 <= d != s for d, s in zip(shape, input_shape)):
                    raise InputError(f"{self.name}: input {tname} has the shape {shape}, which "
                                     f"{tuple(input_shape)} does not fit")
                self.context.set_input_shape(tname, tuple(input_shape))
            elif i == 0 and input_shape is not None and tuple(input_shape) != shape:
                raise InputError(f"{self.name}: input {tname} has the fixed shape {shape}, not "
                                 f"{tuple(input_shape)}; build the engine at that size (or with a dynamic batch)")
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self._device: dict[str, Any] = {}
        rng = np.random.default_rng(0)
        for tname in self.inputs + self.outputs:  # outputs after inputs: their shapes follow the input shapes
            self.shapes[tname] = shape = tuple(int(d) for d in self.context.get_tensor_shape(tname))
            self.dtypes[tname] = dtype = _numpy_dtype(trt, self.engine.get_tensor_dtype(tname), tname)
            self._device[tname] = self.cuda.alloc(shape, dtype)
            self.context.set_tensor_address(tname, self.cuda.address(self._device[tname]))
            if tname in self.inputs:
                host = rng.standard_normal(shape) if dtype.kind == "f" else np.zeros(shape)
                self.cuda.upload(self._device[tname], host.astype(dtype))
        self.cuda.synchronize()

    def execute(self) -> None:
        """Enqueue one inference on the session's stream (no copies, no synchronisation)."""
        if not self.context.execute_async_v3(self.cuda.stream_handle):
            raise RunError(f"TensorRT execution of {self.name} failed")

    def run(self, feeds: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy ``feeds`` (one array: the only input) to the device, run, and return every output on the host."""
        if not isinstance(feeds, dict):
            if len(self.inputs) != 1:
                raise InputError(f"{self.name} has {len(self.inputs)} inputs: pass a dict of arrays by name")
            feeds = {self.inputs[0]: feeds}
        for tname, x in feeds.items():
            if tname not in self.shapes or tname in self.outputs:
                raise InputError(f"{self.name} has no input {tname!r} (inputs: {', '.join(self.inputs)})")
            if tuple(x.shape) != self.shapes[tname]:
                raise InputError(f"{self.name}: input {tname} of shape {tuple(x.shape)} given to a session made for "
                                 f"{self.shapes[tname]}")
            self.cuda.upload(self._device[tname], np.ascontiguousarray(x, dtype=self.dtypes[tname]))
        self.execute()
        return {t: self.cuda.download(self._device[t], self.shapes[t], self.dtypes[t]) for t in self.outputs}

    def time_once(self) -> float:
        """GPU time (ms) of one inference: CUDA events recorded on the stream around ``execute_async_v3``."""
        self.cuda.record_start()
        self.execute()
        return self.cuda.elapsed_since_start()

    def device_name(self) -> str:
        return self.cuda.device_name()

    def close(self) -> None:
        # context before engine before runtime: TensorRT objects must go in the reverse order of their making
        self.context = None
        self.engine = None
        self.runtime = None
        if getattr(self, "cuda", None) is not None:
            self.cuda.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _numpy_dtype(trt: Any, dt: Any, tname: str) -> np.dtype:
    try:
        return np.dtype(trt.nptype(dt))
    except (TypeError, KeyError):  # bf16, fp8, int4 have no NumPy type
        raise RunError(f"engine tensor {tname} has the TensorRT type {dt}, which has no NumPy equivalent") from None


def run_engine(engine_path: str | Path, x: np.ndarray) -> np.ndarray:
    """Run a single-input, single-output engine on the host array ``x``; returns the output on the host."""
    with EngineSession(engine_path, input_shape=tuple(x.shape)) as session:
        if len(session.inputs) != 1 or len(session.outputs) != 1:
            raise RunError(f"engine {engine_path} has {len(session.inputs)} inputs and {len(session.outputs)} "
                           "outputs, not one each")
        return session.run(x)[session.outputs[0]]


def check_engine_parity(onnx_path: str | Path, engine_path: str | Path, images: np.ndarray,
                        rtol: float = 1e-2, atol: float = 1e-2) -> dict[str, Any]:
    """Compare the engine with ONNX Runtime on the ONNX file it was built from, on uint8 (N, H, W, 3) images."""
    from segfactory.export.predictor import OnnxPredictor
    from segfactory.factory.transforms import resize_image

    ort = OnnxPredictor(onnx_path)
    if ort.input_size and images.shape[1:3] != tuple(ort.input_size):
        images = np.stack([resize_image(im, ort.input_size) for im in images])
    agree = total = close = n_logits = 0
    max_abs = 0.0
    xs = [ort.prepare(image[None]) for image in images]
    with EngineSession(engine_path, input_shape=tuple(xs[0].shape)) as session:
        outs = [session.run(x)[session.outputs[0]] for x in xs]  # one engine load for every image
    for x, out in zip(xs, outs):
        ref = ort.run(x)
        if ort.output_kind == "logits":
            diff = np.abs(out.astype(np.float32) - ref.astype(np.float32))
            max_abs = max(max_abs, float(diff.max()))
            close += int((diff <= atol + rtol * np.abs(ref.astype(np.float32))).sum())
            n_logits += diff.size
            ref, out = ref.argmax(1), out.argmax(1)
        agree += int((ref == out).sum())
        total += ref.size
    logits = ort.output_kind == "logits"
    return {"max_abs_diff": max_abs if logits else None, "within_tolerance": close / n_logits if logits else None,
            "agreement_all": agree / total,
            "images": len(images), "rtol": rtol, "atol": atol}
