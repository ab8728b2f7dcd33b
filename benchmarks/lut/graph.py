"""Features of a whole model's graph as the runtime runs it: kernels per class after ONNX Runtime's fusions.

The sum of independently timed units misses what the runtime does across units: a ReLU that opens a
unit fuses into the convolution that closed the one before, a layout change (ONNX Runtime's NCHWc blocked
format on CPU) is paid only where a unit that cannot run blocked meets one that can. So the model is
exported whole (TorchScript exporter, no simplification: about a second at 360x480, most of it tracing the
forward pass), ONNX Runtime optimises it (``SessionOptions.optimized_model_filepath`` keeps what it will
run) and the optimised nodes are counted per kernel class. ``level`` "all" is what ONNX Runtime CPU runs (layout transforms included); "extended" stops
before the CPU-only layout transforms, for tables measured on another runtime (a Jetson's TensorRT fuses
convolutions with their activations too, but has no NCHWc reorders).

Results are cached by (genotype key, config key, input size, level): a search asks once per candidate.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import RunError
from segfactory.factory.genotype import Genotype

KERNEL_CLASSES = ("conv", "dwconv", "pool", "resize", "concat", "reorder", "bn", "elementwise", "other")
LEVELS = ("all", "extended")
_CLASS_OF = {
    "Gemm": "conv", "MatMul": "conv",
    "MaxPool": "pool", "AveragePool": "pool", "GlobalAveragePool": "pool", "GlobalMaxPool": "pool",
    "Resize": "resize", "Upsample": "resize", "Concat": "concat",
    "ReorderInput": "reorder", "ReorderOutput": "reorder", "BatchNormalization": "bn",
    **{op: "elementwise" for op in ("Relu", "Add", "Mul", "Sum", "Sub", "Div", "Sigmoid", "Clip", "HardSigmoid",
                                    "LeakyRelu", "Tanh")},
}
_CACHE: dict[tuple, dict[str, float]] = {}
_CACHE_MAX = 4096


def kernel_class(node: Any) -> str:
    """The class of one node of an optimised graph (convolutions split into dense and depthwise)."""
    op = node.op_type
    if op in ("Conv", "FusedConv", "NhwcConv", "NhwcFusedConv"):
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        return "dwconv" if group > 1 else "conv"
    return _CLASS_OF.get(op, "other")


def count_kernels(nodes: Iterable[Any]) -> dict[str, int]:
    counts = {c: 0 for c in KERNEL_CLASSES}
    for node in nodes:
        counts[kernel_class(node)] += 1
    return counts


def _export(genotype: Genotype, config: ModelConfig, input_size: tuple[int, int]) -> tuple[bytes, float]:
    """The model as ONNX bytes, as fast as the TorchScript exporter goes, and its activation MB (float32
    outputs of every leaf module, counted by hooks while the exporter traces the forward pass). One torch
    thread: a second one only competes with whatever else the host runs (2-5 s instead of 1-2 s a genotype
    on a busy 2-core host)."""
    import torch
    from segfactory.factory.model import build_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    elements = [0]
    done = [False]

    def count(module, args, out) -> None:
        if not done[0]:
            elements[0] += sum(int(t.numel()) for t in (out if isinstance(out, tuple) else (out,))
                               if isinstance(t, torch.Tensor))

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # weights do not change the graph; seeded anyway, so the bytes repeat
            model = build_model(genotype, config, load_weights=False).eval()
        for m in model.modules():
            if not any(True for _ in m.children()):
                m.register_forward_hook(count)
        model.register_forward_hook(lambda *_: done.__setitem__(0, True))  # count the first pass only
        buf = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, 3, *input_size),), buf, input_names=["image"],
                              opset_version=17, do_constant_folding=True, dynamo=False)
        return buf.getvalue(), elements[0] * 4 / 1e6
    finally:
        torch.set_num_threads(threads)


def _optimised_nodes(data: bytes, level: str) -> list[Any]:
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if level == "all"
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="segfactory-graph-") as tmp:
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        try:
            ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own kinds
            raise RunError(f"onnxruntime could not optimise the model graph: {str(e).splitlines()[0]}") from None
        return list(onnx.load(so.optimized_model_filepath).graph.node)


def graph_features(genotype: Genotype, config: ModelConfig, input_size: tuple[int, int], level: str = "all"
                   ) -> dict[str, float]:
    """``k_<class>`` kernel counts after fusion, ``nodes`` (all of them), ``act_mb`` and ``pixels`` (H*W/1e6)."""
    if level not in LEVELS:
        raise ValueError(f"graph level {level!r} is not one of {LEVELS}")
    key = (genotype.key(), config.key(), tuple(input_size), level)
    hit = _CACHE.get(key)
    if hit is not None:
        return dict(hit)
    data, act_mb = _export(genotype, config, tuple(input_size))
    nodes = _optimised_nodes(data, level)
    feats: dict[str, float] = {f"k_{c}": float(n) for c, n in count_kernels(nodes).items()}
    feats.update(nodes=float(len(nodes)), act_mb=act_mb,
                 pixels=input_size[0] * input_size[1] / 1e6)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = feats
    return dict(feats)


def clear_cache() -> None:
    _CACHE.clear()
