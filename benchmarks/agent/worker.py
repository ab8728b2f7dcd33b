"""The agent's measuring process: one job at a time, JSON lines in on stdin, JSON lines out.

The agent starts it as ``python -m segfactory.benchmarks.agent.worker BACKEND`` in its own session, so that a
build or a measurement past its time limit is ended by killing the whole process group (trtexec included),
and the next job gets a fresh worker. Jobs name a file the agent itself wrote; results carry the
measurement's start and end on the system-wide monotonic clock, which the agent reports.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO


def _handle(backend: str, job: dict[str, Any]) -> dict[str, Any]:
    from segfactory.benchmarks.agent.backends import measure_file
    from segfactory.benchmarks.agent.settings import MeasureSettings
    from segfactory.factory.errors import InputError, SegfactoryError

    start = time.monotonic()
    try:
        settings = MeasureSettings.coerce(job["settings"])
        result = measure_file(backend, Path(job["path"]), input_name=job["input_name"],
                              input_shape=tuple(job["input_shape"]), dynamic=bool(job["dynamic"]),
                              settings=settings, timeout_s=float(job["timeout_s"]))
        return {"ok": True, "result": result, "start": start, "end": time.monotonic()}
    except SegfactoryError as e:
        kind = "input" if isinstance(e, InputError) else "run"
        return {"ok": False, "kind": kind, "message": str(e), "start": start, "end": time.monotonic()}
    except Exception as e:  # noqa: BLE001 - a backend's own error becomes a one-line failed run
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return {"ok": False, "kind": "run", "message": f"{type(e).__name__}: {first}",
                "start": start, "end": time.monotonic()}


def serve(backend: str, protocol: TextIO) -> None:
    """Answer each job line read from stdin with one result line on ``protocol``."""
    # warm the imports the first job needs, so its timing window holds only its own work
    from segfactory.benchmarks import harness  # noqa: F401
    from segfactory.benchmarks.agent import backends  # noqa: F401

    if backend == "ort":
        import onnxruntime  # noqa: F401
    protocol.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    protocol.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = _handle(backend, json.loads(line))
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()


def main() -> None:
    backend = sys.argv[1]
    # The protocol owns the original stdout; backends (TensorRT's logger, trtexec) print to stderr instead.
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(backend, protocol)


if __name__ == "__main__":
    main()
