"""What the device agent adds to a measurement: request overhead on loopback (ONNX Runtime backend).

    python benchmarks/agent_overhead.py [--models 20] [--size-kb 0] [--out agent_overhead.json]

Sends distinct one-conv models with a minimal timing loop (no warm-up, 1 iteration, 0 s), so that the round
trip minus the agent's own build-and-measure time is the overhead: HTTP, upload, ONNX validation, queueing,
the worker hand-off, the device description and the cache write. Then repeats them (cache hits) and asks
/v1/health. Prints a table and writes JSON with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _model(seed: int, pad_kb: int) -> bytes:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W")]
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])]
    if pad_kb:  # an unused initializer makes the upload that large
        inits.append(numpy_helper.from_array(np.zeros(pad_kb * 256, np.float32), "pad"))
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32, 32])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--size-kb", type=int, default=0, help="pad each model to about this size")
    parser.add_argument("--out", default="agent_overhead.json")
    args = parser.parse_args()

    from segfactory.benchmarks.agent.backends import describe_device
    from segfactory.benchmarks.agent.client import health, measure_remote
    from segfactory.benchmarks.agent.config import AgentConfig
    from segfactory.benchmarks.agent.server import BackgroundAgent

    settings = {"warmup_ms": 0, "iterations": 1, "duration_s": 0}
    models = [_model(1000 + i, args.size_kb) for i in range(args.models)]
    with tempfile.TemporaryDirectory() as tmp:
        token = Path(tmp) / "token"
        token.write_text("overhead-token-0123456789")
        config = AgentConfig(port=0, token=token.read_text(), backend="ort", cache_dir=Path(tmp) / "cache")
        with BackgroundAgent(config) as agent:
            miss, inner, hit, hl = [], [], [], []
            for m in models:
                t0 = time.perf_counter()
                r = measure_remote(agent.url, token, m, settings, retries=0)
                miss.append((time.perf_counter() - t0) * 1e3)
                inner.append(r["agent"]["measure_s"] * 1e3)
            for m in models:
                t0 = time.perf_counter()
                r = measure_remote(agent.url, token, m, settings, retries=0)
                hit.append((time.perf_counter() - t0) * 1e3)
                assert r["agent"]["cache"] == "hit"
            for _ in range(args.models):
                t0 = time.perf_counter()
                health(agent.url, token)
                hl.append((time.perf_counter() - t0) * 1e3)
    overhead = [a - b for a, b in zip(miss, inner)]
    rows = {"round trip, new model (ms)": miss, "  of which worker build+measure (ms)": inner,
            "  overhead (ms)": overhead, "round trip, cache hit (ms)": hit, "GET /v1/health (ms)": hl}
    print(f"{'':38s} {'median':>8s} {'p90':>8s} {'max':>8s}   ({args.models} models, {len(models[0])} bytes each)")
    summary = {}
    for name, xs in rows.items():
        xs_sorted = sorted(xs)
        p90 = xs_sorted[min(len(xs) - 1, int(0.9 * len(xs)))]
        summary[name.strip()] = {"median": statistics.median(xs), "p90": p90, "max": max(xs)}
        print(f"{name:38s} {statistics.median(xs):8.1f} {p90:8.1f} {max(xs):8.1f}")
    out = {"format": "segfactory.agent-overhead/1", "models": args.models, "model_bytes": len(models[0]),
           "machine": describe_device("ort"), "summary": summary}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
