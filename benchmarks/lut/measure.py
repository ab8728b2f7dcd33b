"""Measuring lookup-table units: many units per ONNX "bag", one ONNX Runtime session, per-node profiling.

Exporting and loading one tiny model per unit would take most of the time, so units are packed into bags:
one ONNX model whose graph holds many independent units (each with its own inputs and outputs). ONNX
Runtime's profiler times every node of every run; the nodes of a unit are found as the connected component
of its inputs in the optimized graph (names cannot be trusted: the NCHWc transformer renames nodes). The
ReorderInput/ReorderOutput nodes that convert a unit's graph inputs and outputs to and from the blocked
layout exist only because the unit stands alone, so they are recorded apart and left out of the unit's time.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError, RunError

WARMUP_RUNS = 3


def _parse_size(text: str) -> tuple[int, int]:
    h, w = text.split("x")
    return int(h), int(w)


def build_unit(sig: str, config: ModelConfig):
    """(module, input shapes) of the unit with signature ``sig`` (see lut_units) under ``config``."""
    from segfactory.factory.decoder import Head
    from segfactory.factory.encoder import Encoder
    from segfactory.factory.ops import ConcatReduce, ParametricSum, conv_bn, get_op, resize
    from torch import nn

    class Resize(nn.Module):
        def __init__(self, size):
            super().__init__()
            self.size = size

        def forward(self, x):
            return resize(x, self.size)

    class Concat(nn.Module):
        def forward(self, a, b):
            import torch

            return torch.cat([a, b], dim=1)

    parts = sig.split("|")
    kind = parts[0]
    try:
        if kind == "encoder":
            h, w = _parse_size(parts[2])
            return Encoder(parts[1]), [(1, 3, h, w)]
        if kind == "op":
            c_in, c_out = (int(c) for c in parts[2].split(">"))
            stride = int(parts[3][1:])
            return get_op(parts[1])(c_in, c_out, stride, config.sep_repeats), [(1, c_in, *_parse_size(parts[4]))]
        if kind == "adapt":
            c_in, c_out = (int(c) for c in parts[1].split(">"))
            return conv_bn(c_in, c_out, relu=True), [(1, c_in, *_parse_size(parts[2]))]
        if kind in ("resize", "upsample"):
            src, dst = (_parse_size(s) for s in parts[2].split(">"))
            return Resize(dst), [(1, int(parts[1]), *src)]
        if kind in ("psum", "cat"):
            c = int(parts[1])
            module = (ParametricSum if kind == "psum" else ConcatReduce)(c, c, False)
            shape = (1, c, *_parse_size(parts[2]))
            return module, [shape, shape]
        if kind == "concat":
            c1, c2 = (int(c) for c in parts[1].split(","))
            h, w = _parse_size(parts[2])
            return Concat(), [(1, c1, h, w), (1, c2, h, w)]
        if kind == "head":
            return Head(int(parts[1]), config.agg_size, config.num_classes), [(1, int(parts[1]),
                                                                               *_parse_size(parts[2]))]
    except (ValueError, IndexError, KeyError):
        pass
    raise InputError(f"lookup-table unit signature {sig!r} is malformed")


def estimate_us(sig: str, config: ModelConfig) -> float:
    """A rough cost guess (µs at ~10 GFLOP/s and ~5 GB/s) used only to pack bags of similar run time."""
    parts = sig.split("|")
    kind = parts[0]
    size = parts[-1].split(">")[-1]
    h, w = _parse_size(size) if "x" in size else (1, 1)
    if kind == "encoder":
        return 0.4e6 * h * w / (360 * 480) * 10 + 100
    c = max(int(x) for x in parts[2 if kind == "op" else 1].replace(">", ",").split(","))
    src = parts[-1].split(">")[0]
    hs, ws = _parse_size(src)
    elems = c * max(h * w, hs * ws)
    macs = {"op": elems * (c + 25) * config.sep_repeats, "adapt": elems * c, "cat": elems * 2 * c,
            "head": elems * (config.agg_size + 9 * config.num_classes)}.get(kind, 0)
    return 5.0 + macs / 1e4 + elems * 8 / 5e3


def pack_bags(sigs: Sequence[str], config: ModelConfig, max_us: float = 40_000, max_units: int = 120
              ) -> list[list[str]]:
    """Group signatures into bags of at most ``max_units`` units and about ``max_us`` estimated run time."""
    bags: list[list[str]] = []
    current: list[str] = []
    total = 0.0
    for sig in sorted(sigs, key=lambda s: estimate_us(s, config)):
        est = estimate_us(sig, config)
        if current and (total + est > max_us or len(current) >= max_units):
            bags.append(current)
            current, total = [], 0.0
        current.append(sig)
        total += est
    if current:
        bags.append(current)
    return bags


def export_bag(sigs: Sequence[str], config: ModelConfig, path: Path) -> list[list[str]]:
    """Export the units of ``sigs`` as one ONNX model; returns each unit's graph input names."""
    import torch
    from torch import nn

    units, shapes = [], []
    for sig in sigs:
        module, ins = build_unit(sig, config)
        units.append(module.eval())
        shapes.append(ins)

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.units = nn.ModuleList(units)

        def forward(self, *xs):
            outs, k = [], 0
            for unit, ins in zip(self.units, shapes):
                y = unit(*xs[k:k + len(ins)])
                outs.extend(y if isinstance(y, tuple) else (y,))
                k += len(ins)
            return tuple(outs)

    names = [[f"u{i}_in{j}" for j in range(len(ins))] for i, ins in enumerate(shapes)]
    dummies = tuple(torch.randn(*s) for ins in shapes for s in ins)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Bag().eval(), dummies, str(path), input_names=[n for ns in names for n in ns],
                          opset_version=17, do_constant_folding=True, dynamo=False)
    return names


def _components(graph: Any, unit_inputs: list[list[str]]) -> tuple[dict[str, int], set[str]]:
    """Map each node name of the optimized graph to the unit it computes; plus the boundary reorder nodes."""
    owner: dict[str, int] = {}
    for u, names in enumerate(unit_inputs):
        for n in names:
            owner[n] = u
    graph_inputs = {i.name for i in graph.input}
    graph_outputs = {o.name for o in graph.output}
    node_unit: dict[str, int] = {}
    boundary: set[str] = set()
    pending = list(graph.node)
    # nodes are topologically sorted in a saved ORT model; iterate until no progress for safety
    for _ in range(3):
        rest = []
        for node in pending:
            units = {owner[t] for t in node.input if t in owner}
            if not units:
                rest.append(node)
                continue
            u = min(units)
            node_unit[node.name] = u
            for t in node.output:
                owner[t] = u
            if (node.op_type == "ReorderInput" and any(t in graph_inputs for t in node.input)) or (
                    node.op_type == "ReorderOutput" and any(t in graph_outputs for t in node.output)):
                boundary.add(node.name)
        pending = rest
        if not pending:
            break
    return node_unit, boundary


def measure_bag(sigs: Sequence[str], config: ModelConfig, *, threads: int, runs: int,
                provider: str = "cpu") -> dict[str, dict[str, Any]]:
    """Entries {sig: {"ms", "p10_ms", "p90_ms", "n", "boundary_ms", "nodes"}} for the units of one bag.

    ``nodes`` counts the unit's nodes after ONNX Runtime's fusions: each costs a dispatch that the kernel
    times do not include, which the per-model overhead accounts for.
    """
    import onnx
    import onnxruntime as ort
    from segfactory.benchmarks.runners import ORT_PROVIDERS
    from segfactory.benchmarks.stats import percentile

    with tempfile.TemporaryDirectory(prefix="segfactory-lut-") as tmp:
        tmp_path = Path(tmp)
        names = export_bag(sigs, config, tmp_path / "bag.onnx")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.optimized_model_filepath = str(tmp_path / "opt.onnx")
        so.enable_profiling = True
        so.profile_file_prefix = str(tmp_path / "prof")
        ep = ORT_PROVIDERS[provider]
        try:
            sess = ort.InferenceSession(str(tmp_path / "bag.onnx"), so, providers=[ep])
        except Exception as e:  # noqa: BLE001
            raise RunError(f"onnxruntime could not load a profiling bag: {str(e).splitlines()[0]}") from None
        import numpy as np

        rng = np.random.default_rng(0)
        feeds = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in sess.get_inputs()}
        for _ in range(WARMUP_RUNS + runs):
            sess.run(None, feeds)
        prof = Path(sess.end_profiling())
        events = json.loads(prof.read_text())
        node_unit, boundary = _components(onnx.load(str(tmp_path / "opt.onnx")).graph, names)
    # per run r, per unit u: the sum of its nodes' kernel times (µs)
    per_run: list[list[float]] = [[0.0] * len(sigs) for _ in range(runs)]
    per_run_boundary: list[list[float]] = [[0.0] * len(sigs) for _ in range(runs)]
    seen: dict[str, int] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        node = ev["name"][: -len("_kernel_time")]
        k = seen.get(node, 0)
        seen[node] = k + 1
        r = k - WARMUP_RUNS
        if r < 0 or r >= runs or node not in node_unit:
            continue
        target = per_run_boundary if node in boundary else per_run
        target[r][node_unit[node]] += float(ev["dur"])
    nodes = [0] * len(sigs)
    for node, u in node_unit.items():
        if node not in boundary:
            nodes[u] += 1
    out: dict[str, dict[str, Any]] = {}
    for u, sig in enumerate(sigs):
        xs = [per_run[r][u] / 1000.0 for r in range(runs)]
        bs = [per_run_boundary[r][u] / 1000.0 for r in range(runs)]
        out[sig] = {"ms": percentile(xs, 50), "p10_ms": percentile(xs, 10), "p90_ms": percentile(xs, 90),
                    "n": runs, "boundary_ms": percentile(bs, 50), "nodes": nodes[u]}
    return out


# Every bag also times this unit, so that bags measured while the host was faster or slower (a shared or
# state-flipping CPU, measuring-here.md) can be put on one scale: entries keep it as ``ref_ms``.
REFERENCE_UNIT = "op|sep_conv_3x3|32>32|s1|45x60"


def measure_units(sigs: Sequence[str], config: ModelConfig, *, threads: int, provider: str = "cpu",
                  runs: int = 25, on_bag: Callable[[dict[str, dict[str, Any]], int], None] | None = None,
                  max_bag_us: float = 40_000) -> dict[str, dict[str, Any]]:
    """Measure ``sigs`` bag by bag; ``on_bag(entries, n_units)`` is called after each bag (to save, to report)."""
    done: dict[str, dict[str, Any]] = {}
    for bag in pack_bags(sigs, config, max_us=max_bag_us):
        extra = [] if REFERENCE_UNIT in bag else [REFERENCE_UNIT]
        entries = measure_bag(bag + extra, config, threads=threads, runs=runs, provider=provider)
        ref = entries[REFERENCE_UNIT]["ms"]
        for sig in extra:
            entries.pop(sig)
        for e in entries.values():
            e["ref_ms"] = ref
        done.update(entries)
        if on_bag:
            on_bag(entries, len(bag))
    return done
