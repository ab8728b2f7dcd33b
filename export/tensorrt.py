"""TensorRT engines from ONNX files, with the TensorRT 10.3+/11 Python API; ``tensorrt`` is imported lazily.

The network is strongly typed, so its precision comes from the graph: the FP16 ONNX for FP16, the Q/DQ ONNX
for INT8 (no precision builder flags, no implicit-quantisation calibrators: TensorRT 11 removed both). The
builder gets a workspace limit through the memory-pool API, a timing cache, and an optimisation profile when
the batch dimension is dynamic. Parser errors are all reported at once.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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


def run_engine(engine_path: str | Path, x: np.ndarray) -> np.ndarray:
    """Run a single-input, single-output engine on the host array ``x`` (CUDA buffers through torch)."""
    import torch

    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise RunError(f"TensorRT cannot deserialise engine {engine_path}")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if len(inputs) != 1 or len(outputs) != 1:
        raise RunError(f"engine {engine_path} has {len(inputs)} inputs and {len(outputs)} outputs, not one each")
    context = engine.create_execution_context()
    context.set_input_shape(inputs[0], tuple(x.shape))
    device_in = torch.from_numpy(np.ascontiguousarray(x)).cuda()
    out_shape = tuple(context.get_tensor_shape(outputs[0]))
    out_dtype = torch.from_numpy(np.zeros(0, dtype=trt.nptype(engine.get_tensor_dtype(outputs[0])))).dtype
    device_out = torch.empty(out_shape, dtype=out_dtype, device="cuda")
    context.set_tensor_address(inputs[0], device_in.data_ptr())
    context.set_tensor_address(outputs[0], device_out.data_ptr())
    stream = torch.cuda.Stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise RunError(f"TensorRT failed to run engine {engine_path}")
    stream.synchronize()
    return device_out.cpu().numpy()


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
    for image in images:
        x = ort.prepare(image[None])
        ref, out = ort.run(x), run_engine(engine_path, x)
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
