"""Validation of an uploaded ONNX model before anything builds it: parse, reject external data, run the checker.

The checker runs with ``full_check`` (strict shape inference, as ``segfactory export`` checks its own files), so
a model whose nodes contradict each other is refused here as bad input (400) rather than failing later inside
the backend (500). The sizes of the input and outputs feed the agent's memory bound (limits.py).

The agent never uses a path from the client; an ONNX file can name external-data files (``location`` fields),
so a model that has any is refused. Imports ``onnx`` lazily (the device side has onnx, not torch).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from segfactory.benchmarks.agent.settings import MeasureSettings
from segfactory.factory.errors import InputError

INPUT_TYPES = {1: "float", 10: "float16", 2: "uint8"}  # onnx.TensorProto element types the runners feed


@dataclass(frozen=True)
class OnnxInfo:
    sha256: str
    size_bytes: int
    input_name: str
    input_type: str
    input_shape: tuple[int, ...]  # resolved: static dims of the graph, the rest from the settings
    dynamic: bool  # the graph's input has a dynamic dimension (trtexec then needs --shapes)
    opset: int | None
    input_bytes: int = 0  # of the resolved input tensor
    output_bytes: int = 0  # of the outputs, dynamic dimensions resolved as described in _output_bytes


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inspect_onnx(data: bytes, settings: MeasureSettings) -> OnnxInfo:
    """Parse and check ``data``; resolve the input shape against ``settings``. Raises one-line InputErrors."""
    import onnx

    if not data:
        raise InputError("the request body is empty; send the ONNX file as the body")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise InputError(f"the body is not an ONNX model: {_one_line(e)}") from None
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise InputError(f"tensor {tensor.name!r} uses external data; send a self-contained ONNX file")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # noqa: BLE001 - onnx.checker.ValidationError and C++ errors
        raise InputError(f"ONNX checker: {_one_line(e)}") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise InputError(f"the model has {len(inputs)} inputs; the agent measures models with one image input")
    inp = inputs[0]
    tensor_type = inp.type.tensor_type
    if tensor_type.elem_type not in INPUT_TYPES:
        raise InputError(f"input {inp.name!r} has element type {tensor_type.elem_type}, not float, float16 or uint8")
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim]
    shape = _resolve(inp.name, dims, settings)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    symbols = {d.dim_param: shape[axis] for axis, d in enumerate(tensor_type.shape.dim) if d.dim_param}
    return OnnxInfo(sha256=sha256_hex(data), size_bytes=len(data), input_name=inp.name,
                    input_type=INPUT_TYPES[tensor_type.elem_type], input_shape=shape,
                    dynamic=any(d is None for d in dims), opset=opset,
                    input_bytes=math.prod(shape) * _itemsize(tensor_type.elem_type),
                    output_bytes=_output_bytes(model.graph.output, symbols, shape))


def _itemsize(elem_type: int) -> int:
    import onnx

    try:
        return int(onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize)
    except Exception:  # noqa: BLE001 - strings and types numpy lacks: count them as float
        return 4


def _output_bytes(outputs: Any, symbols: dict[str, int], input_shape: tuple[int, ...]) -> int:
    """Bytes of the graph's outputs: static dims as declared, a dim named like one of the input's as resolved
    there, any other dynamic dim as the input's dim on the same axis (N, H, W of a segmentation output)."""
    total = 0
    for out in outputs:
        tensor_type = out.type.tensor_type
        n = 1
        for axis, d in enumerate(tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                n *= d.dim_value
            elif d.dim_param in symbols:
                n *= symbols[d.dim_param]
            else:
                n *= input_shape[axis] if axis < len(input_shape) else 1
        total += n * _itemsize(tensor_type.elem_type)
    return total


def _resolve(name: str, dims: list[int | None], settings: MeasureSettings) -> tuple[int, ...]:
    wanted = settings.input_shape
    if len(dims) != 4:
        raise InputError(f"input {name!r} has rank {len(dims)}, not 4 (N, 3, H, W)")
    if wanted is None:
        if any(d is None for d in dims):
            raise InputError(f"input {name!r} has dynamic dimensions {dims}; give input_size=HxW")
        return tuple(int(d) for d in dims)  # type: ignore[arg-type]
    for axis, (have, want) in enumerate(zip(dims, wanted)):
        if have is not None and have != want:
            raise InputError(f"input {name!r} has the fixed shape {dims}, which does not match batch={settings.batch} "
                             f"input_size={wanted[2]}x{wanted[3]} (axis {axis}: {have} != {want})")
    return tuple(wanted)


def _all_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of the model: initializers, constants and attributes, inside subgraphs and functions."""
    def graph_tensors(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            yield from node_tensors(node)

    def node_tensors(node: Any) -> Iterator[Any]:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from graph_tensors(attr.g)
            for g in attr.graphs:
                yield from graph_tensors(g)

    yield from graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from node_tensors(node)


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(e).__name__)
