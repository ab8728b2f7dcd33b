"""What every measuring script shares: the default data location and the machine description."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "results"  # what the scripts publish: outside every package


def shared_dir() -> Path:
    """``../shared`` beside the checkout (or ``$SEGFACTORY_SHARED``)."""
    return Path(os.environ.get("SEGFACTORY_SHARED", Path(__file__).resolve().parents[3] / "shared"))


def default_data() -> str:
    return f"camvid:{shared_dir() / 'data' / 'camvid'}"


def machine() -> dict[str, Any]:
    """CPU, cores, OS, Python, torch and ONNX Runtime versions, torch's thread count and the load average now,
    for every result JSON."""
    import onnxruntime
    import torch
    from segfactory.benchmarks.runners import cpu_description

    return {"cpu": cpu_description(), "cores": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "onnxruntime": onnxruntime.__version__, "loadavg": list(os.getloadavg())}
