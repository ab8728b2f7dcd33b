"""Validation of an uploaded ONNX model before anything builds it: parse, reject external data, run the checker.

The agent never uses a path from the client; an ONNX file can name external-data files (``location`` fields),
so a model that has any is refused. Imports ``onnx`` lazily (the device side has onnx, not torch).
"""

from __future__ import annotations

import hashlib
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
        onnx.checker.check_model(model)
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
    return OnnxInfo(sha256=sha256_hex(data), size_bytes=len(data), input_name=inp.name,
                    input_type=INPUT_TYPES[tensor_type.elem_type], input_shape=shape,
                    dynamic=any(d is None for d in dims), opset=opset)


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
