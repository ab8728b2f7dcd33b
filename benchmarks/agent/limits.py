"""The agent's own bounds on a request, from the device it runs on: threads and memory.

:class:`~segfactory.benchmarks.agent.settings.MeasureSettings` holds the bounds both sides share; these depend
on the device, so only the agent applies them, before a request is queued (400 naming the bound):

- ``threads`` at most the device's CPU cores (``os.cpu_count()``): more only oversubscribes the cores, and
  ONNX Runtime takes minutes to start a thousand threads.
- the estimated memory of one measurement at most ``MEMORY_FRACTION`` of the host's total memory (MemTotal;
  on a Jetson the GPU shares it). The estimate is deliberately generous:
  ``input bytes x (1 + ACTIVATION_FACTOR) + output bytes + 2 x model bytes`` (the model parsed and the
  backend's copy of its weights). ONNX Runtime on a CPU grew by 17x and 43x the input's bytes on two
  segfactory exports (peak RSS, batches 8 and 64), so ``ACTIVATION_FACTOR`` 64 leaves room for TensorRT's
  build and larger decoders.

Standard library only.
"""

from __future__ import annotations

import os
from typing import Any

from segfactory.factory.errors import InputError

ACTIVATION_FACTOR = 64
MEMORY_FRACTION = 0.5  # the rest is the OS, the agent, the backend's libraries (TensorRT's alone take ~1 GiB)


def cpu_cores() -> int:
    return os.cpu_count() or 1


def total_memory_bytes() -> int | None:
    """The host's total memory (factory.memory's definition: physical pages, or the cgroup limit if lower)."""
    from segfactory.factory.memory import device_memory_bytes

    try:
        return device_memory_bytes("cpu")
    except (AttributeError, OSError, ValueError):
        return None


def memory_limit_bytes() -> int | None:
    total = total_memory_bytes()
    return None if total is None else int(total * MEMORY_FRACTION)


def memory_estimate(input_bytes: int, output_bytes: int, model_bytes: int) -> int:
    """Conservative bytes one measurement needs (see the module's docstring)."""
    return input_bytes * (1 + ACTIVATION_FACTOR) + output_bytes + 2 * model_bytes


def check_threads(threads: int | None) -> None:
    cores = cpu_cores()
    if threads is not None and threads > cores:
        raise InputError(f"threads={threads} exceeds this device's {cores} CPU cores (the bound is threads <= {cores})")


def check_memory(input_bytes: int, output_bytes: int, model_bytes: int, shape: tuple[int, ...]) -> None:
    limit = memory_limit_bytes()
    if limit is None:
        return
    need = memory_estimate(input_bytes, output_bytes, model_bytes)
    if need > limit:
        raise InputError(
            f"input shape {'x'.join(map(str, shape))} needs about {_mib(need)} MiB by the agent's estimate "
            f"(input x {1 + ACTIVATION_FACTOR} + outputs + 2 x model), over this device's limit of {_mib(limit)} MiB "
            f"({MEMORY_FRACTION:g} of its memory); use a smaller batch or input_size")


def describe() -> dict[str, Any]:
    """The bounds, for /v1/health."""
    return {"max_threads": cpu_cores(), "memory_limit_bytes": memory_limit_bytes(),
            "activation_factor": ACTIVATION_FACTOR, "memory_fraction": MEMORY_FRACTION}


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f}"
