"""The memory a run will need, estimated from its sizes before anything large is allocated.

A bad option must never take the machine down (``train --crop 4000x4000 --batch-size 8`` once grew to 22 GB on a
24 GB host and was killed by the kernel without a word). So every command that allocates per-pixel buffers first
estimates their size from the model and the sizes it was given, and refuses with a one-line :class:`InputError`
naming the estimate and the limit when it exceeds :data:`LIMIT_FRACTION` of the device's memory (the host's RAM,
or the GPU's on CUDA).

The activation part comes from the model itself: it is built without initialising its weights, run once at a
small reference size with a hook summing every leaf module's output bytes, and scaled by the pixel count (an
overestimate for global-pool branches, which stay 1x1). Measured on this project's host (arch0 and arch1, Adam
step, 240x320 and 480x640 crops): peak RSS grew 1.10-1.19x that sum times the batch; :data:`TRAIN_FACTOR` keeps a
margin above it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from segfactory.factory.errors import InputError

LIMIT_FRACTION = 0.85  # of the device's total memory; the rest is the OS, the loader, torch itself
TRAIN_FACTOR = 1.5  # autograd keeps ~1.1-1.2x the leaf outputs alive until backward (measured), plus slack
INFER_FACTOR = 1.0  # without autograd tensors are freed as they go: the sum is an upper bound
REFERENCE_SIZE = (64, 64)
FLOAT_BYTES = 4


def footprint(build: Callable[[], object]) -> tuple[float, int]:
    """(bytes of every leaf module's output per input pixel at batch 1, bytes of the parameters), float32."""
    import torch

    with torch.device("meta"):
        model = build()
    model = model.to_empty(device="cpu").eval()  # no weight initialisation: only shapes matter here
    total = [0]

    def hook(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * FLOAT_BYTES

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *REFERENCE_SIZE))
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in model.parameters()) * FLOAT_BYTES
    return total[0] / (REFERENCE_SIZE[0] * REFERENCE_SIZE[1]), params


def training_bytes(build: Callable[[], object], crop: tuple[int, int], batch: int, workers: int = 0) -> int:
    """Estimated peak bytes of training ``build()`` on ``batch`` crops of ``crop`` (H, W) with Adam."""
    per_pixel, params = footprint(build)
    return training_bytes_from(per_pixel * crop[0] * crop[1], params, crop, batch, workers)


def training_bytes_from(activation_bytes: float, param_bytes: int, crop: tuple[int, int], batch: int,
                        workers: int = 0) -> int:
    """The training estimate from one image's leaf-output bytes at ``crop`` (e.g. ``factory.cost``'s)."""
    batch_bytes = batch * crop[0] * crop[1] * (3 * FLOAT_BYTES + 8)  # images float32 + masks int64
    # weights, gradients and Adam's two moments; 2 batches prefetched per loader worker
    return int(activation_bytes * batch * TRAIN_FACTOR + 4 * param_bytes + batch_bytes * (2 + 2 * workers))


def inference_bytes(build: Callable[[], object], input_size: tuple[int, int], batch: int = 1) -> int:
    """Estimated peak bytes of running (or exporting) ``build()`` on ``batch`` images of ``input_size``."""
    per_pixel, params = footprint(build)
    pixels = input_size[0] * input_size[1]
    return int(per_pixel * pixels * batch * INFER_FACTOR + params + batch * pixels * 3 * FLOAT_BYTES)


def device_memory_bytes(device: str = "cpu") -> int:
    """Total memory of ``device``: the GPU's on CUDA, else the host's RAM (or its cgroup limit, if lower)."""
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        return int(torch.cuda.get_device_properties(index).total_memory)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return int(total)


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_fits(need: int, device: str, what: str, hint: str) -> None:
    """Raise :class:`InputError` when ``need`` bytes exceed :data:`LIMIT_FRACTION` of ``device``'s memory."""
    total = device_memory_bytes(device)
    limit = int(total * LIMIT_FRACTION)
    if need > limit:
        where = "this GPU" if device.startswith("cuda") else "this host"
        raise InputError(f"{what} needs an estimated {gib(need)} of memory, more than the limit of {gib(limit)} "
                         f"({LIMIT_FRACTION:.0%} of the {gib(total)} {where} has); {hint}")


BOUNDS_HELP = (f"The memory a run needs is estimated from the model and these sizes before anything is "
               f"allocated, and must stay under {LIMIT_FRACTION:.0%} of the host's (on CUDA the GPU's) memory.")
