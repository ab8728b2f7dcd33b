"""``export_onnx``: a SegModel -> one self-contained, checker-clean, simplified ONNX file.

The graph's input is ``image`` (N, 3, H, W): float (already normalised, as the model is fed in training) or
uint8 RGB (the normalisation of ``model.config`` then lives in the graph). Its output is ``logits``
(N, K, H, W) float or ``labels`` (N, H, W) uint8 (the argmax in the graph).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segfactory.factory.errors import InputError, RunError
from segfactory.factory.io import atomic_write_bytes

if TYPE_CHECKING:
    import onnx
    from torch import nn

INPUT_NAME = "image"
OUTPUTS = ("logits", "labels")
INPUT_DTYPES = ("float", "uint8")
EXPORTERS = ("torchscript", "dynamo")
MIN_OPSET = 17
MAX_OPSET_TORCHSCRIPT = 20  # the TorchScript-based exporter's newest opset in torch 2.x


def _wrap(model: nn.Module, output: str, input_dtype: str) -> nn.Module:
    """The model plus the deployment options: normalisation in front, argmax behind."""
    import torch
    from torch import nn

    config = getattr(model, "config", None)

    class Deployed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            if input_dtype == "uint8":
                if config is None:
                    raise InputError("--input uint8 needs a model with a config holding mean and std")
                mean = torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1)
                std = torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1)
                # (x / 255 - mean) / std == x * scale + shift, one Mul and one Add in the graph
                self.register_buffer("scale", 1.0 / (255.0 * std))
                self.register_buffer("shift", -mean / std)

        def forward(self, x):
            if input_dtype == "uint8":
                x = x.to(torch.float32) * self.scale + self.shift
            logits = self.model(x)  # (N, K, H, W)
            if output == "labels":
                return torch.argmax(logits, dim=1).to(torch.uint8)  # (N, H, W)
            return logits

    return Deployed().eval()


def check_options(input_size: tuple[int, int], opset: int, output: str, input_dtype: str, exporter: str) -> None:
    """Raise :class:`InputError` for an option no export can honour."""
    if output not in OUTPUTS:
        raise InputError(f"output {output!r} is not one of {', '.join(OUTPUTS)}")
    if input_dtype not in INPUT_DTYPES:
        raise InputError(f"input dtype {input_dtype!r} is not one of {', '.join(INPUT_DTYPES)}")
    if exporter not in EXPORTERS:
        raise InputError(f"exporter {exporter!r} is not one of {', '.join(EXPORTERS)}")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise InputError(f"opset {opset!r} is too old: {MIN_OPSET} or newer is needed")
    if exporter == "torchscript" and opset > MAX_OPSET_TORCHSCRIPT:
        raise InputError(f"opset {opset} is newer than the TorchScript exporter's {MAX_OPSET_TORCHSCRIPT}; "
                         "use the dynamo exporter")
    h, w = input_size
    if h < 8 or w < 8 or h > 8192 or w > 8192:
        raise InputError(f"input size {h}x{w} is impossible: height and width must be 8..8192 (stride-8 encoder)")


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    input_size: tuple[int, int],
    opset: int = 17,
    dynamic_batch: bool = False,
    output: str = "logits",
    input_dtype: str = "float",
    simplify: bool = True,
    exporter: str = "torchscript",
) -> Path:
    """Export ``model`` (a SegModel in eval mode is assumed; it is put there) to ``path``, atomically.

    ``input_size`` is (H, W). Returns ``path``. A failed export leaves an existing ``path`` untouched.
    """
    model_proto = export_onnx_proto(
        model, input_size=input_size, opset=opset, dynamic_batch=dynamic_batch, output=output,
        input_dtype=input_dtype, simplify=simplify, exporter=exporter,
    )
    return save_onnx(model_proto, path)


def export_onnx_proto(
    model: nn.Module,
    *,
    input_size: tuple[int, int],
    opset: int = 17,
    dynamic_batch: bool = False,
    output: str = "logits",
    input_dtype: str = "float",
    simplify: bool = True,
    exporter: str = "torchscript",
) -> onnx.ModelProto:
    """As :func:`export_onnx`, returning the checked ModelProto instead of writing it."""
    import onnx
    import torch

    check_options(input_size, opset, output, input_dtype, exporter)
    was_training = model.training
    model.eval()
    try:
        wrapped = _wrap(model, output, input_dtype)
        h, w = input_size
        batch = 2 if dynamic_batch else 1  # a batch of 2 keeps the dynamo exporter from specialising to 1
        if input_dtype == "uint8":
            dummy = torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8)
        else:
            dummy = torch.randn(batch, 3, h, w)
        with tempfile.TemporaryDirectory(prefix="segfactory-export-") as tmp:
            raw = Path(tmp) / "raw.onnx"
            try:
                with torch.no_grad():
                    out_shape = list(wrapped(dummy).shape)  # (N, K, H, W) or (N, H, W)
                _torch_export(wrapped, dummy, raw, opset, dynamic_batch, output, exporter)
                proto = onnx.load(str(raw), load_external_data=True)
            except (InputError, RunError):
                raise
            except Exception as e:  # noqa: BLE001 - the exporters raise many kinds
                raise RunError(f"ONNX export ({exporter}) failed: {_first_line(e)}") from None
    finally:
        model.train(was_training)
    proto = _finish(proto, output, out_shape[1:], simplify)
    set_metadata(proto, model_metadata(model, output, input_dtype))
    return proto


def _torch_export(wrapped, dummy, path: Path, opset: int, dynamic_batch: bool, output: str, exporter: str) -> None:
    import warnings

    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic: the size is fixed on purpose
        if exporter == "torchscript":
            dynamic_axes = None
            if dynamic_batch:
                dynamic_axes = {INPUT_NAME: {0: "batch"}, output: {0: "batch"}}
            torch.onnx.export(
                wrapped, (dummy,), str(path), input_names=[INPUT_NAME], output_names=[output],
                opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False,
            )
        else:
            dynamic_shapes = None
            if dynamic_batch:
                dynamic_shapes = {"x": {0: torch.export.Dim("batch", min=1, max=1024)}}
            program = torch.onnx.export(
                wrapped, (dummy,), None, input_names=[INPUT_NAME], output_names=[output],
                opset_version=opset, dynamo=True, dynamic_shapes=dynamic_shapes, optimize=True,
                verbose=False,
            )
            program.save(str(path), external_data=False)


def _finish(proto: onnx.ModelProto, output: str, out_dims: list[int], simplify: bool) -> onnx.ModelProto:
    """Simplify, name things as promised, state the output's static dims, and run the checker."""
    import onnx

    if simplify:
        proto = simplify_onnx(proto)
    graph = proto.graph
    if [i.name for i in graph.input] != [INPUT_NAME] or [o.name for o in graph.output] != [output]:
        raise RunError(
            f"exported graph has inputs {[i.name for i in graph.input]} and outputs "
            f"{[o.name for o in graph.output]}, expected [{INPUT_NAME!r}] and [{output!r}]"
        )
    for value in (graph.input[0], graph.output[0]):
        dim0 = value.type.tensor_type.shape.dim[0]
        if not dim0.HasField("dim_value"):
            dim0.dim_param = "batch"
    # The TorchScript exporter leaves the Resize output's dims symbolic; they are fixed by the input size, and
    # the batch is the input's (a number, or the symbol "batch").
    dims = graph.output[0].type.tensor_type.shape.dim
    if len(dims) != 1 + len(out_dims):
        raise RunError(f"exported output {output!r} has rank {len(dims)}, expected {1 + len(out_dims)}")
    dims[0].CopyFrom(graph.input[0].type.tensor_type.shape.dim[0])
    for d, n in zip(list(dims)[1:], out_dims):
        d.Clear()
        d.dim_value = n
    proto.producer_name = "segfactory"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # noqa: BLE001 - checker and shape-inference errors
        raise RunError(f"exported ONNX graph fails onnx.checker: {_first_line(e)}") from None
    return proto


def simplify_onnx(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim (constant folding, dead-node removal, fusions), kept only if ONNX Runtime gives the same outputs.

    onnxslim's own shape inference is off: it mis-folds the shape arithmetic of TF-'SAME' padding (outputs
    off by ~0.1 at every size tried, onnxslim 0.1.98). As a guard against such bugs the simplified graph must
    reproduce the exported one on a random input, or the exported graph is kept as it is. Where onnxslim is not
    installed (a requirement, but an environment may lack it) the exported graph is kept, too.
    """
    try:
        import onnxslim
    except ImportError:
        return proto
    try:
        slim = onnxslim.slim(proto, no_shape_infer=True)
    except Exception:  # noqa: BLE001 - simplification is an optimisation: keep the exported graph
        return proto
    if slim is None:
        return proto
    # Stale intermediate shapes can mislead ONNX Runtime's buffer reuse under a dynamic batch: drop them.
    del slim.graph.value_info[:]
    return slim if _same_outputs(proto, slim) else proto


def _same_outputs(a: onnx.ModelProto, b: onnx.ModelProto, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """Whether two graphs with the same single input give the same outputs in ONNX Runtime on a random input."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    value = a.graph.input[0]
    t = value.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else 2 for d in t.shape.dim]
    rng = np.random.default_rng(0)
    if t.elem_type == onnx.TensorProto.UINT8:
        x = rng.integers(0, 256, size=shape, dtype=np.uint8)
    else:
        x = rng.standard_normal(shape).astype(np.float32)
    try:
        outs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                .run(None, {value.name: x})[0] for m in (a, b)]
    except Exception:  # noqa: BLE001 - a graph ONNX Runtime cannot run is not the same graph
        return False
    if outs[0].shape != outs[1].shape:
        return False
    if outs[0].dtype.kind in "iu":
        return bool((outs[0] == outs[1]).mean() >= 0.999)  # labels: ties may break either way
    return bool(np.allclose(outs[0], outs[1], rtol=rtol, atol=atol))


def save_onnx(proto: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``proto`` as one file (weights inside), atomically."""
    data = proto.SerializeToString()
    if len(data) >= 2**31:
        raise RunError(f"ONNX model for {path} is {len(data)} bytes, over protobuf's 2 GiB single-file limit")
    return atomic_write_bytes(path, data)


def graph_io(path_or_proto: Any) -> dict[str, Any]:
    """Names, shapes (ints or symbolic names) and element types of the graph's inputs and outputs."""
    import onnx

    proto = path_or_proto if isinstance(path_or_proto, onnx.ModelProto) else onnx.load(str(path_or_proto),
                                                                                       load_external_data=False)

    def describe(v) -> dict[str, Any]:
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        return {"name": v.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}

    return {"inputs": [describe(v) for v in proto.graph.input], "outputs": [describe(v) for v in proto.graph.output]}


META_PREFIX = "segfactory."


def model_metadata(model: nn.Module, output: str, input_dtype: str) -> dict[str, Any]:
    """What a predictor needs to use the graph without the model card: normalisation, classes, I/O kinds."""
    meta: dict[str, Any] = {"output": output, "input": input_dtype}
    config = getattr(model, "config", None)
    if config is not None:
        meta["model_config"] = config.to_dict()
    genotype = getattr(model, "genotype", None)
    if genotype is not None:
        meta["genotype"] = genotype.to_dict()
    arch = getattr(model, "arch", None)
    if arch is not None:
        meta["arch"] = arch.to_dict()
    return meta


def set_metadata(proto: onnx.ModelProto, meta: dict[str, Any]) -> None:
    """Store ``meta`` as JSON strings in the graph's ``metadata_props`` (keys prefixed ``segfactory.``)."""
    import json

    keep = [p for p in proto.metadata_props if not p.key.startswith(META_PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, json.dumps(value)


def get_metadata(proto: onnx.ModelProto) -> dict[str, Any]:
    import json

    out = {}
    for p in proto.metadata_props:
        if p.key.startswith(META_PREFIX):
            try:
                out[p.key[len(META_PREFIX):]] = json.loads(p.value)
            except json.JSONDecodeError:
                continue
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines() or [type(e).__name__])[0][:300]
