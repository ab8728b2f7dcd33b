"""``segfactory bench --device-url``: export each model here (where torch is), measure it on the device agent.

The agent measures one model at a time with its own backend, so models are measured one after another, not
interleaved; every result is the agent's benchmark JSON (``latency_source`` "measured", ``device_info``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from segfactory.benchmarks.agent.client import measure_remote
from segfactory.benchmarks.harness import MIN_ITERATIONS


def bench_remote(specs: Sequence[Any], *, device_url: str, token_file: str | Path | None,
                 input_size: tuple[int, int], batch: int = 1, precision: str = "fp16", warmup_ms: float = 200.0,
                 min_seconds: float = 3.0, min_iterations: int = MIN_ITERATIONS,
                 on_model: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Benchmark JSON per :class:`~segfactory.benchmarks.models.ModelSpec`, measured on the agent at ``device_url``."""
    from segfactory.benchmarks.models import export_to

    settings = {"input_size": input_size, "batch": batch, "precision": precision, "warmup_ms": warmup_ms,
                "duration_s": min_seconds, "iterations": min_iterations}
    results = []
    with tempfile.TemporaryDirectory(prefix="segfactory-remote-bench-") as tmp:
        for spec in specs:
            if on_model:
                on_model(spec.name)
            data = export_to(spec, Path(tmp), input_size, batch).read_bytes()
            res = measure_remote(device_url, token_file, data, settings)
            res["model"] = spec.name
            results.append(res)
    return results
